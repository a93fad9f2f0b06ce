"""The `bleed` scene: a white sphere between a red and a green wall on a white floor, as boxes and a ball.

Built from solids (the occluders of the interreflection's visibility test) and tessellated into a
mesh with per-vertex outward normals (box faces get their own vertices, so their corners stay sharp).
Training lights (azimuth 0..pi, y > 0) light the green wall's inner face, which bleeds green onto the
sphere and the floor; test lights (y < 0) light the red wall's inner face instead.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from relight.interreflection import Box, Solid, Sphere

WHITE = (0.85, 0.85, 0.85, 0.25, 40.0)  # albedo rgb, specular, shininess
FLOOR = (0.75, 0.75, 0.75, 0.0, 1.0)
RED = (0.85, 0.08, 0.06, 0.0, 1.0)
GREEN = (0.08, 0.75, 0.12, 0.0, 1.0)


@dataclass
class SceneMesh:
    """A triangle mesh with materials and outward normals, and the solids it tessellates (for visibility)."""
    verts: Tensor  # [V, 3]
    faces: Tensor  # [F, 3]
    mats: Tensor  # [V, 5] albedo rgb, specular, shininess
    normals: Tensor  # [V, 3] unit, outward
    solids: list[Solid]


def merge_parts(parts: list[tuple[Tensor, Tensor, Sequence[float]]],  # (verts [V, 3], faces [F, 3], material)
                ) -> tuple[Tensor, Tensor, Tensor]:  # verts [V, 3], faces [F, 3], materials [V, 5]
    """One mesh from several, each with one material (albedo rgb, specular, shininess) for all its vertices."""
    verts, faces, mats, offset = [], [], [], 0
    for v, f, m in parts:
        verts.append(v)
        faces.append(f + offset)
        mats.append(torch.tensor(m, dtype=v.dtype).expand(v.shape[0], 5))
        offset += v.shape[0]
    return torch.cat(verts), torch.cat(faces), torch.cat(mats)


def grid(origin: Tensor, u: Tensor, v: Tensor, nu: int, nv: int,  # origin, edge vectors [3]
         ) -> tuple[Tensor, Tensor]:  # verts [(nu+1)(nv+1), 3], faces [2 nu nv, 3]
    """A parallelogram origin + s u + t v, s, t in [0, 1], split into nu x nv cells of two triangles."""
    s = torch.linspace(0, 1, nu + 1)
    t = torch.linspace(0, 1, nv + 1)
    verts = origin + s[:, None, None] * u + t[None, :, None] * v
    idx = torch.arange((nu + 1) * (nv + 1)).reshape(nu + 1, nv + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    faces = torch.cat([torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([a, c, d], -1).reshape(-1, 3)])
    return verts.reshape(-1, 3), faces


def box_mesh(box: Box, cell: float) -> tuple[Tensor, Tensor, Tensor]:  # verts [V, 3], faces [F, 3], normals [V, 3]
    """The six faces of a box as grids of about `cell`-sized squares, each with its own vertices."""
    lo, hi = torch.tensor(box.lo), torch.tensor(box.hi)
    size = hi - lo
    verts, faces, normals, offset = [], [], [], 0
    for axis in range(3):
        a, b = [i for i in range(3) if i != axis]
        for side in (0, 1):
            origin = lo.clone()
            origin[axis] = (lo if side == 0 else hi)[axis]
            u, v = torch.zeros(3), torch.zeros(3)
            u[a], v[b] = size[a], size[b]
            nu, nv = max(1, round(float(size[a]) / cell)), max(1, round(float(size[b]) / cell))
            vs, fs = grid(origin, u, v, nu, nv)
            n = torch.zeros(3)
            n[axis] = 1.0 if side == 1 else -1.0
            verts.append(vs)
            faces.append(fs + offset)
            normals.append(n.expand_as(vs))
            offset += vs.shape[0]
    return torch.cat(verts), torch.cat(faces), torch.cat(normals)


def bleed_mesh(cell: float = 0.05) -> SceneMesh:
    """White sphere (radius 0.3) between a red wall (y in 0.4..0.5) and a green one (y in -0.5..-0.4), 0.6 high."""
    from pytorch3d.utils import ico_sphere
    ball = Sphere((0.0, 0.0, 0.3), 0.3)
    red = Box((-0.6, 0.4, 0.0), (0.6, 0.5, 0.6))
    green = Box((-0.6, -0.5, 0.0), (0.6, -0.4, 0.6))
    sph = ico_sphere(3)
    unit = sph.verts_packed()
    parts = [(unit * ball.radius + torch.tensor(ball.centre), sph.faces_packed(), unit, WHITE)]
    for box, mat in ((red, RED), (green, GREEN)):
        v, f, n = box_mesh(box, cell)
        parts.append((v, f, n, mat))
    n_floor = round(2.0 / cell)  # grid lines fall on the walls' edges (multiples of cell)
    fv, ff = grid(torch.tensor([-1.0, -1.0, 0.0]), torch.tensor([2.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0]),
                  n_floor, n_floor)
    parts.append((fv, ff, torch.tensor([0.0, 0.0, 1.0]).expand_as(fv), FLOOR))
    verts, faces, mats = merge_parts([(v, f, m) for v, f, _, m in parts])
    return SceneMesh(verts, faces, mats, torch.cat([n for _, _, n, _ in parts]), [ball, red, green])


def face_patches(mesh: SceneMesh) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each triangle as an emitting patch: centres [F, 3], unit normals [F, 3], areas [F], albedo [F, 3]."""
    tri = mesh.verts[mesh.faces]
    area = 0.5 * torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)
    n = mesh.normals[mesh.faces].mean(1)
    return tri.mean(1), n / n.norm(dim=-1, keepdim=True), area, mesh.mats[mesh.faces][:, :, :3].mean(1)
