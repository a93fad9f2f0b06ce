"""Render OLAT scenes with PyTorch3D's mesh rasterizer, shaded by our Blinn-Phong with a shadow map."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from relight.camera import Camera
from relight.light import Light
from relight.pointcloud import write_points_ply
from relight.scene import save_image, write_transforms
from relight.scene_layout import LayoutConfig, camera_poses, frame_plan
from relight.shading import blinn_phong
from relight.visibility import light_camera


@dataclass
class P3DSceneConfig:
    """A glossy sphere and a matte torus on a floor, lit by a point light."""
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    light_power: float = 4.0
    ambient: float = 0.03
    shadow_res: int = 192
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
    verts, faces, mats, offset = [], [], [], 0
    for v, f, m in parts:
        verts.append(v)
        faces.append(f + offset)
        mats.append(torch.tensor(m).expand(v.shape[0], 5))
        offset += v.shape[0]
    return torch.cat(verts), torch.cat(faces), torch.cat(mats)


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


def render_view(verts: Tensor, faces: Tensor, mats: Tensor, cam: Camera, light: Light,
                cfg: P3DSceneConfig) -> Tensor:  # [H, W, 3]
    """One frame: mesh fragments shaded with Blinn-Phong (1/r^2), shadowed by a depth map from the light."""
    from pytorch3d.ops import interpolate_face_attributes
    from pytorch3d.structures import Meshes
    frag = _rasterize(verts, faces, cam)
    mesh = Meshes([verts], [faces])
    face_attr = lambda a: a[faces]  # noqa: E731  [F, 3, D]
    pts = interpolate_face_attributes(frag.pix_to_face, frag.bary_coords, face_attr(verts))[0, :, :, 0]
    nrm = interpolate_face_attributes(frag.pix_to_face, frag.bary_coords, face_attr(mesh.verts_normals_packed()))
    nrm = torch.nn.functional.normalize(nrm[0, :, :, 0], dim=-1)
    mat = interpolate_face_attributes(frag.pix_to_face, frag.bary_coords, face_attr(mats))[0, :, :, 0]
    hit = frag.pix_to_face[0, :, :, 0] >= 0
    p, n, m = pts[hit], nrm[hit], mat[hit]
    lcam = light_camera(verts, light, cfg.shadow_res)
    depth = _rasterize(verts, faces, lcam).zbuf[0, :, :, 0]
    view = lcam.viewmat()
    q = p @ view[:3, :3].T + view[:3, 3]
    u = (lcam.fx * q[:, 0] / q[:, 2] + lcam.cx).long().clamp(0, cfg.shadow_res - 1)
    v = (lcam.fy * q[:, 1] / q[:, 2] + lcam.cy).long().clamp(0, cfg.shadow_res - 1)
    occluder = depth[v, u]
    lit = (occluder < 0) | (q[:, 2] <= occluder + 0.02)
    albedo = m[:, :3]
    rgb = blinn_phong(p, n, cam.position, albedo, m[:, 3:4], m[:, 4:5], cfg.ambient * albedo, light,
                      torch.full((3,), cfg.light_power), lit.float())
    img = torch.zeros(cam.height, cam.width, 3)
    img[hit] = rgb
    return img.clamp(0, 1)


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
    verts, faces, mats = build_mesh()
    poses = camera_poses(lay)
    ss = 2  # supersampling
    for split in ("train", "test"):
        (out / split).mkdir(exist_ok=True)
        frames = []
        for i, (ci, light) in enumerate(tqdm(frame_plan(lay, split), desc=f"pytorch3d {split}", leave=False)):
            cam = Camera.from_fov(torch.from_numpy(poses[ci]).float(), lay.camera_angle_x, lay.resolution * ss,
                                  lay.resolution * ss)
            img = render_view(verts, faces, mats, cam, Light(light), cfg)
            img = img.reshape(lay.resolution, ss, lay.resolution, ss, 3).mean((1, 3))
            name = f"{split}/r_{i:03d}"
            save_image(out / f"{name}.png", img)
            frames.append({"file_path": f"./{name}", "transform_matrix": poses[ci].tolist(), "pl_pos": list(light)})
        write_transforms(out / f"transforms_{split}.json", lay.camera_angle_x, frames)
    write_points_ply(out / "points3d.ply", surface_points(verts, faces, cfg.n_points, cfg.point_noise, lay.seed))
    return out
