"""Bake the relit appearance under one light into per-Gaussian SH colours, and render any 3DGS PLY with them.

A Gaussian's radiance under a fixed light depends on the view direction only through the specular lobe and
through the normal flipping to face the viewer (a viewer on the side away from the light sees the ambient
part only: a step across the Gaussian's tangent plane). Degree-3 SH cannot hold that step, so the fit is
weighted to the Gaussian's *front* hemisphere (the side the cameras see it from, `facing`), where the radiance
is a constant plus a smooth lobe; the back hemisphere keeps a small weight so the fit stays bounded there.
Each direction also counts by the Gaussian's projected area seen from it (a flat Gaussian seen edge-on
covers few pixels).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from metatune.errors import MetatuneError
from relight.camera import Camera
from relight.gaussians import quat_to_rotmat
from relight.light import Light
from relight.model import LightParams, RelightModel
from relight.rasterize import rasterize
from relight.sh import fibonacci_sphere, num_coeffs, sh_basis, sh_colors
from relight.transfer import transfer

DIRECTIONS = 256  # view directions of the fit (Fibonacci sphere; 128 to 1000 give the same renders to 0.1 dB)
BACK_WEIGHT = 0.005  # weight of view directions behind a Gaussian's front face, relative to the front's
RIDGE = 1e-6  # Tikhonov term on the coefficients of degree >= 1 (normal matrix at unit mean weight: condition ~200)
CHUNK = 8192  # Gaussians per solve (bounds the [chunk, 16, 16] normal matrices)
DIRECTION_BLOCK = 16  # view directions whose radiance is held at once ([N, 16, 3])


class _Eyes(Camera):
    """A stand-in camera with one eye per Gaussian: `RelightModel.colors` reads only `position`."""

    def __init__(self, eyes: Tensor) -> None:  # [N, 3]
        self._eyes = eyes

    @property
    def position(self) -> Tensor:  # [N, 3]
        return self._eyes


def facing(model: RelightModel, cameras: list[Camera], max_cameras: int = 24,
           resolution: int = 64) -> Tensor:  # [N, 3] unit
    """Each Gaussian's normal turned to the side the cameras see it from (its compositing weight in their
    renders decides the vote); a Gaussian no camera sees keeps its normal."""
    g = model.gaussians
    with torch.no_grad():
        n = model.materials()["normals"]
        if not cameras:
            return n
        step = max(1, len(cameras) // max_cameras)
        vote = torch.zeros(len(model), dtype=n.dtype, device=n.device)
        for cam in cameras[::step][:max_cameras]:
            if max(cam.width, cam.height) > resolution:
                s = resolution / max(cam.width, cam.height)
                cam = cam.resized(max(1, round(cam.width * s)), max(1, round(cam.height * s)))
            seen = torch.sparse.sum(transfer(g.means, g.quats, g.scales, g.opacities, cam).weights, 0).to_dense()
            side = torch.sign(((cam.position - g.means) * n).sum(-1))
            vote += seen * side
        return torch.where((vote < 0)[:, None], -n, n)


def bake_sh(model: RelightModel, light: Light, params: LightParams, front: Tensor | None = None,  # [N, 3]
            degree: int = 3, directions: int = DIRECTIONS, back_weight: float = BACK_WEIGHT,
            chunk: int = CHUNK) -> Tensor:  # [N, (degree + 1)^2, 3]
    """SH coefficients whose viewer colour max(SH(d) + 0.5, 0) best fits (weighted least squares over
    `directions` view directions) each Gaussian's radiance under `light` seen along d = mean - eye.

    The radiance is `model.colors` itself with one eye per Gaussian at mean - d (it depends on the eye only
    through the direction); `params` are the light-dependent parameters (`LightPrior()` for a new light, as
    `relight render` uses). Vectorised over Gaussians, one radiance evaluation per direction, solves chunked.
    """
    k = num_coeffs(degree)
    if directions < 2 * k:
        raise MetatuneError(f"fitting {k} SH coefficients needs at least {2 * k} view directions, got {directions}")
    model.check_light(light)
    g = model.gaussians
    with torch.no_grad():
        means = g.means.detach()
        front = model.materials()["normals"] if front is None else front
        dirs = fibonacci_sphere(directions, means.dtype).to(means.device)  # [D, 3] camera -> Gaussian
        basis = sh_basis(dirs, degree)  # [D, K]
        rot, scales = quat_to_rotmat(g.quats.detach()), g.scales.detach()
        # rhs[n] = sum_d w_nd B_d (y_nd - 0.5), a block of directions at a time (one radiance evaluation of all
        # Gaussians per direction; the block's products as one batched matrix product)
        rhs = torch.zeros(len(model), 3, k, dtype=torch.float64, device=means.device)
        for s in range(0, directions, DIRECTION_BLOCK):
            block = dirs[s:s + DIRECTION_BLOCK]
            y = torch.stack([model.colors(_Eyes(means - d), light, params) for d in block], 1) - 0.5  # [N, B, 3]
            w = view_weights(front, rot, scales, block, back_weight)  # [N, B]
            rhs += (w[..., None] * y).double().transpose(1, 2) @ basis[s:s + DIRECTION_BLOCK].double()
        outer = (basis[:, :, None] * basis[:, None, :]).reshape(directions, k * k)  # [D, K*K]
        coeffs = torch.empty(len(model), k, 3, dtype=torch.float64, device=means.device)
        ridge = RIDGE * torch.eye(k, dtype=torch.float64, device=means.device)
        ridge[0, 0] = 0.0  # a constant stays exact
        for s in range(0, len(model), chunk):
            part = slice(s, s + chunk)
            w = view_weights(front[part], rot[part], scales[part], dirs, back_weight)  # [C, D]
            total = w.sum(-1).double()[:, None, None]
            normal = (w.double() @ outer.double()).reshape(-1, k, k) / total
            coeffs[part] = torch.linalg.solve(normal + ridge, rhs[part].transpose(1, 2) / total)
    return coeffs.to(means.dtype)


def view_weights(front: Tensor,  # [N, 3] unit
                 rot: Tensor,  # [N, 3, 3] the Gaussians' axes (columns)
                 scales: Tensor,  # [N, 3]
                 dirs: Tensor,  # [D, 3] unit, from the camera to the Gaussian
                 back_weight: float = BACK_WEIGHT) -> Tensor:  # [N, D]
    """How much each view direction counts in a Gaussian's fit: its projected area seen along d (the pixels
    that show its colour: sqrt(sum_i (d.a_i / s_i)^2) s_1 s_2 s_3, over its maximum), times `back_weight`
    behind the front face (the viewer on the far side of the front: front . d > 0)."""
    local = (rot.transpose(1, 2) @ dirs.T) / scales[:, :, None]  # [N, 3, D]: d in each Gaussian's axes / scale
    area = local.square().sum(1).sqrt() * scales.min(-1).values[:, None]  # in [s_min / s_max, 1]
    behind = (front @ dirs.T) > 0
    return torch.where(behind, back_weight * area, area)


def render_sh(means: Tensor,  # [N, 3]
              quats: Tensor,  # [N, 4] (w, x, y, z)
              scales: Tensor,  # [N, 3]
              opacities: Tensor,  # [N]
              coeffs: Tensor,  # [N, K, 3]
              camera: Camera) -> Tensor:  # [H, W, 3]
    """Render Gaussians whose colours are SH evaluated as a 3DGS viewer does, with our rasterizer."""
    img, _ = rasterize(means, quats, scales, opacities, sh_colors(coeffs, means, camera.position), camera)
    return img


def load_3dgs_ply(path: Path) -> dict[str, Tensor]:
    """The 3DGS attributes of any PLY in graphdeco's layout, activated: means [N, 3], quats [N, 4], scales
    [N, 3], opacities [N], SH coefficients [N, K, 3] (f_rest channel-major, as graphdeco's save_ply writes)."""
    from relight.ply import GEOMETRY, read_ply, sh_from_columns
    cols = read_ply(path)
    missing = [n for n in GEOMETRY if n not in cols]
    if missing:
        raise MetatuneError(f"{path}: not a 3D Gaussian splatting PLY, missing properties {missing}")

    def take(*names: str) -> Tensor:
        return torch.from_numpy(np.stack([cols[n] for n in names], 1).copy())

    out = {"means": take("x", "y", "z"), "quats": take("rot_0", "rot_1", "rot_2", "rot_3"),
           "scales": take("scale_0", "scale_1", "scale_2").exp(), "opacities": torch.sigmoid(take("opacity")[:, 0]),
           "coeffs": sh_from_columns(cols, path)}
    bad = [k for k, v in out.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise MetatuneError(f"{path}: non-finite values in {bad}")
    return out


def render_3dgs_ply(path: Path, camera: Camera) -> Tensor:  # [H, W, 3]
    """What a 3DGS viewer shows of a PLY from `camera` (SH colours at the camera, our rasterizer)."""
    g = load_3dgs_ply(path)
    return render_sh(g["means"], g["quats"], g["scales"], g["opacities"], g["coeffs"], camera)
