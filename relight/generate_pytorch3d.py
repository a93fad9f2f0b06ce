"""Render OLAT scenes with PyTorch3D's mesh rasterizer, shaded by our Blinn-Phong with a shadow map.

Preset `p3d`: glossy sphere and matte torus, local shading only. Preset `bleed` (`scene_bleed.py`): a
white sphere between coloured walls, plus one bounce of diffuse interreflection (`interreflection.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from relight.camera import Camera
from relight.interreflection import bounce_irradiance, bounce_transfer
from relight.light import Light
from relight.pointcloud import write_points_ply
from relight.scene import save_image, write_transforms
from relight.scene_bleed import SceneMesh, bleed_mesh, face_patches, merge_parts
from relight.scene_layout import LayoutConfig, camera_poses, frame_plan
from relight.shading import blinn_phong
from relight.visibility import light_camera


@dataclass
class P3DSceneConfig:
    """`p3d`: a glossy sphere and a matte torus on a floor; `bleed`: white sphere, red and green walls, one bounce."""
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    preset: str = "p3d"
    light_power: float = 4.0
    ambient: float = 0.03
    shadow_res: int = 192
    shadow_offset: float = 0.0  # shadow-map lookups move this far along the normal (against acne on flat walls)
    n_points: int = 2500
    point_noise: float = 0.005


def build_mesh() -> tuple[Tensor, Tensor, Tensor]:  # verts [V, 3], faces [F, 3], materials [V, 5]
    """Vertices, faces and per-vertex materials (albedo rgb, specular, shininess)."""
    from pytorch3d.utils import ico_sphere, torus
    sphere = ico_sphere(3)
    sv = sphere.verts_packed() * 0.35 + torch.tensor([0.2, -0.15, 0.35])
    tor = torus(r=0.08, R=0.28, sides=12, rings=24)
    tv = tor.verts_packed() + torch.tensor([-0.35, 0.4, 0.08])
    floor_v = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    floor_f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    parts = [(sv, sphere.faces_packed(), [0.9, 0.85, 0.2, 0.8, 60.0]),
             (tv, tor.faces_packed(), [0.2, 0.6, 0.8, 0.05, 5.0]),
             (floor_v, floor_f, [0.6, 0.6, 0.6, 0.0, 1.0])]
    return merge_parts(parts)


def _p3d_camera(cam: Camera):
    from pytorch3d.utils import cameras_from_opencv_projection
    view = cam.viewmat()
    return cameras_from_opencv_projection(view[None, :3, :3], view[None, :3, 3], cam.K()[None],
                                          torch.tensor([[cam.height, cam.width]]))


def _rasterize(verts: Tensor, faces: Tensor, cam: Camera):
    from pytorch3d.renderer import MeshRasterizer, RasterizationSettings
    from pytorch3d.structures import Meshes
    settings = RasterizationSettings(image_size=(cam.height, cam.width), blur_radius=0.0, faces_per_pixel=1)
    return MeshRasterizer(cameras=_p3d_camera(cam), raster_settings=settings)(Meshes([verts], [faces]))


def scene_mesh(preset: str) -> SceneMesh:
    """The preset's mesh; `p3d` has no solids (no interreflection) and smooth PyTorch3D vertex normals."""
    if preset == "bleed":
        return bleed_mesh()
    from pytorch3d.structures import Meshes
    verts, faces, mats = build_mesh()
    return SceneMesh(verts, faces, mats, Meshes([verts], [faces]).verts_normals_packed(), [])


def shadow_map(mesh: SceneMesh, light: Light, cfg: P3DSceneConfig) -> tuple[Camera, Tensor]:  # depth [S, S]
    """The depth of the nearest surface seen from the light (a camera placed there); -1 where none."""
    lcam = light_camera(mesh.verts, light, cfg.shadow_res)
    return lcam, _rasterize(mesh.verts, mesh.faces, lcam).zbuf[0, :, :, 0]


def lit_by(points: Tensor,  # [P, 3]
           normals: Tensor,  # [P, 3] unit
           smap: tuple[Camera, Tensor], cfg: P3DSceneConfig) -> Tensor:  # [P] bool
    """Whether each point sees the light, by the light's shadow map (bias 0.02)."""
    lcam, depth = smap
    view = lcam.viewmat()
    q = (points + cfg.shadow_offset * normals) @ view[:3, :3].T + view[:3, 3]
    u = (lcam.fx * q[:, 0] / q[:, 2] + lcam.cx).long().clamp(0, cfg.shadow_res - 1)
    v = (lcam.fy * q[:, 1] / q[:, 2] + lcam.cy).long().clamp(0, cfg.shadow_res - 1)
    occluder = depth[v, u]
    return (occluder < 0) | (q[:, 2] <= occluder + 0.02)


def vertex_indirect(mesh: SceneMesh, transfer: Tensor,  # [V, F] from bounce_transfer (vertices <- faces)
                    light: Light, cfg: P3DSceneConfig,
                    smap: tuple[Camera, Tensor] | None = None) -> Tensor:  # [V, 3]
    """One bounce: every face re-emits its direct, shadowed diffuse radiance; the irradiance each vertex gathers."""
    centres, normals, _, albedo = face_patches(mesh)
    l, falloff, _ = light.incidence(centres)
    cos = (normals * l).sum(-1).clamp_min(0)
    lit = lit_by(centres, normals, smap or shadow_map(mesh, light, cfg), cfg)
    direct = cfg.light_power * albedo * (cos * falloff * lit)[:, None]
    return bounce_irradiance(transfer, direct)


def render_view(mesh: SceneMesh, cam: Camera, light: Light, cfg: P3DSceneConfig,
                indirect: Tensor | None = None,  # [V, 3] bounce irradiance at the vertices, or none
                smap: tuple[Camera, Tensor] | None = None,  # the light's shadow map (computed if not given)
                ) -> Tensor:  # [H, W, 3]
    """One frame: mesh fragments shaded with Blinn-Phong (1/r^2), shadowed by a depth map from the light,
    plus albedo times the interpolated bounce irradiance."""
    from pytorch3d.ops import interpolate_face_attributes
    verts, faces = mesh.verts, mesh.faces
    frag = _rasterize(verts, faces, cam)
    interp = lambda a: interpolate_face_attributes(frag.pix_to_face, frag.bary_coords, a[faces])[0, :, :, 0]  # noqa: E731
    pts = interp(verts)
    nrm = torch.nn.functional.normalize(interp(mesh.normals), dim=-1)
    mat = interp(mesh.mats)
    hit = frag.pix_to_face[0, :, :, 0] >= 0
    p, n, m = pts[hit], nrm[hit], mat[hit]
    lit = lit_by(p, n, smap or shadow_map(mesh, light, cfg), cfg)
    albedo = m[:, :3]
    rgb = blinn_phong(p, n, cam.position, albedo, m[:, 3:4], m[:, 4:5], cfg.ambient * albedo, light,
                      torch.full((3,), cfg.light_power), lit.float())
    if indirect is not None:
        rgb = rgb + albedo * interp(indirect)[hit]
    img = torch.zeros(cam.height, cam.width, 3)
    img[hit] = rgb
    return img.clamp(0, 1)


def cast_shadow(mesh: SceneMesh, cam: Camera, light: Light, cfg: P3DSceneConfig,
                smap: tuple[Camera, Tensor]) -> Tensor:  # [H, W] bool
    """Pixels whose surface faces the light but is hidden from it by the shadow map: the cast shadows."""
    from pytorch3d.ops import interpolate_face_attributes
    frag = _rasterize(mesh.verts, mesh.faces, cam)
    interp = lambda a: interpolate_face_attributes(frag.pix_to_face, frag.bary_coords, a[mesh.faces])[0, :, :, 0]  # noqa: E731
    hit = frag.pix_to_face[0, :, :, 0] >= 0
    p = interp(mesh.verts)[hit]
    n = torch.nn.functional.normalize(interp(mesh.normals), dim=-1)[hit]
    seen = torch.where((n * (cam.position - p)).sum(-1, keepdim=True) < 0, -n, n)  # as blinn_phong shades it
    facing = (seen * light.incidence(p)[0]).sum(-1) > 0
    out = torch.zeros(cam.height, cam.width, dtype=torch.bool)
    out[hit] = facing & ~lit_by(p, n, smap, cfg)
    return out


def surface_points(verts: Tensor, faces: Tensor, n: int, noise: float, seed: int) -> np.ndarray:  # [n, 3]
    """Area-weighted samples on the mesh's upward-or-outward surfaces (the floor's underside excluded)."""
    gen = torch.Generator().manual_seed(seed)
    tri = verts[faces]
    area = 0.5 * torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)
    pick = torch.multinomial(area, n, replacement=True, generator=gen)
    r1, r2 = torch.rand(n, generator=gen).sqrt(), torch.rand(n, generator=gen)
    t = tri[pick]
    pts = (1 - r1)[:, None] * t[:, 0] + (r1 * (1 - r2))[:, None] * t[:, 1] + (r1 * r2)[:, None] * t[:, 2]
    pts = pts + noise * torch.randn(n, 3, generator=gen)
    return pts.numpy().astype(np.float32)


def generate_pytorch3d_scene(out: Path, cfg: P3DSceneConfig | None = None) -> Path:
    """Write a full OLAT scene (both splits, images, points3d.ply) rendered with PyTorch3D into `out`."""
    cfg = cfg or P3DSceneConfig()
    lay = cfg.layout
    out.mkdir(parents=True, exist_ok=True)
    mesh = scene_mesh(cfg.preset)
    transfer = None
    if mesh.solids:  # one bounce: vertices gather from every face (geometry-only, built once for all lights)
        centres, normals, areas, _ = face_patches(mesh)
        transfer = bounce_transfer(mesh.verts, mesh.normals, centres, normals, areas, mesh.solids)
    poses = camera_poses(lay)
    ss = 2  # supersampling
    per_light: dict[tuple, tuple] = {}  # light -> (shadow map, bounce irradiance or None), shared by its views
    for split in ("train", "test"):
        (out / split).mkdir(exist_ok=True)
        frames = []
        for i, (ci, light) in enumerate(tqdm(frame_plan(lay, split), desc=f"pytorch3d {split}", leave=False)):
            cam = Camera.from_fov(torch.from_numpy(poses[ci]).float(), lay.camera_angle_x, lay.resolution * ss,
                                  lay.resolution * ss)
            if light not in per_light:
                smap = shadow_map(mesh, Light(light), cfg)
                bounce = vertex_indirect(mesh, transfer, Light(light), cfg, smap) if transfer is not None else None
                per_light[light] = (smap, bounce)
            smap, bounce = per_light[light]
            img = render_view(mesh, cam, Light(light), cfg, bounce, smap)
            img = img.reshape(lay.resolution, ss, lay.resolution, ss, 3).mean((1, 3))
            shadow = cast_shadow(mesh, cam, Light(light), cfg, smap).float()
            shadow = (shadow.reshape(lay.resolution, ss, lay.resolution, ss).mean((1, 3)) > 0.5).float()
            name = f"{split}/r_{i:03d}"
            save_image(out / f"{name}.png", img)
            save_image(out / f"{name}_shadow.png", shadow[..., None].repeat(1, 1, 3))
            frames.append({"file_path": f"./{name}", "transform_matrix": poses[ci].tolist(), "pl_pos": list(light),
                           "shadow_mask": f"./{name}_shadow"})
        write_transforms(out / f"transforms_{split}.json", lay.camera_angle_x, frames)
    if cfg.n_points > 0:  # 0: no point cloud (a capture without a reconstruction)
        write_points_ply(out / "points3d.ply", surface_points(mesh.verts, mesh.faces, cfg.n_points, cfg.point_noise, lay.seed))
    return out
