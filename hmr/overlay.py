"""Draw fitted meshes over the image with PyTorch3D (OpenCV camera at the origin)."""
from __future__ import annotations

import cv2
import numpy as np
import torch
from pytorch3d.renderer import (
    MeshRasterizer,
    MeshRenderer,
    PointLights,
    RasterizationSettings,
    SoftPhongShader,
    TexturesVertex,
)
from pytorch3d.structures import Meshes
from pytorch3d.utils import cameras_from_opencv_projection
from torch import Tensor

PALETTE = np.array([[0.95, 0.55, 0.35], [0.45, 0.80, 0.45], [0.60, 0.55, 0.95], [0.95, 0.85, 0.35]])


def render_mesh(verts: Tensor,  # [V, 3] camera coordinates (metres)
                faces: Tensor,  # [F, 3]
                k: Tensor,  # [3, 3] OpenCV intrinsics
                width: int, height: int, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB [H, W, 3] in [0, 1] and coverage [H, W] of one Phong-shaded mesh."""
    cams = cameras_from_opencv_projection(torch.eye(3)[None], torch.zeros(1, 3), k[None].float(),
                                          torch.tensor([[height, width]]))
    mesh = Meshes(verts=[verts.float()], faces=[faces],
                  textures=TexturesVertex([torch.tensor(colour, dtype=torch.float32).expand(verts.shape[0], 3)]))
    settings = RasterizationSettings(image_size=(height, width), blur_radius=0.0, faces_per_pixel=1)
    renderer = MeshRenderer(MeshRasterizer(cameras=cams, raster_settings=settings),
                            SoftPhongShader(cameras=cams, lights=PointLights(location=[[0.0, -1.0, -2.0]])))
    with torch.no_grad():
        img = renderer(mesh)[0]
    return img[..., :3].clamp(0, 1).numpy(), (img[..., 3] > 0).float().numpy()


def overlay(image: np.ndarray,  # [H, W, 3] uint8 RGB
            verts: Tensor,  # [P, V, 3] camera coordinates
            faces: Tensor,  # [F, 3]
            focal: float, centre: tuple[float, float], opacity: float = 0.8,
            render_px: int = 160, colours: np.ndarray | None = None) -> np.ndarray:  # [H, W, 3] uint8
    """The image with every mesh blended over it, nearest person on top.

    PyTorch3D's CPU rasteriser tests every face at every pixel, so each person is rendered in its own
    bounding box at `render_px` on the long side and scaled into place.
    """
    h, w = image.shape[:2]
    out = image.astype(np.float32) / 255
    uv = focal * verts[..., :2] / verts[..., 2:].clamp_min(1e-3) + torch.tensor(centre)
    for p in torch.argsort(verts[..., 2].mean(1), descending=True).tolist():
        x0, y0 = (uv[p].amin(0) - 4).floor().clamp_min(0).tolist()
        x1, y1 = (uv[p].amax(0) + 4).ceil().tolist()
        x1, y1 = min(x1, w), min(y1, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        s = render_px / max(x1 - x0, y1 - y0)
        bw, bh = max(int(round((x1 - x0) * s)), 2), max(int(round((y1 - y0) * s)), 2)
        k = torch.tensor([[focal * s, 0, (centre[0] - x0) * s], [0, focal * s, (centre[1] - y0) * s], [0, 0, 1]])
        palette = PALETTE if colours is None else colours
        rgb, mask = render_mesh(verts[p], faces, k, bw, bh, palette[p % len(palette)])
        size = (int(x1) - int(x0), int(y1) - int(y0))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR)[..., None]
        region = out[int(y0):int(y0) + size[1], int(x0):int(x0) + size[0]]
        region[:] = region * (1 - opacity * mask) + rgb * opacity * mask
    return (out * 255).round().astype(np.uint8)
