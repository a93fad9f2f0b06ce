"""Draw fitted meshes over the image (OpenCV camera at the origin).

`paint_mesh` is the fast path: a painter's algorithm at the image's own resolution (faces sorted far to near,
each filled by OpenCV with a Lambertian shade), about 0.1 s for an SMPL mesh. `render_mesh` is the reference,
PyTorch3D's rasteriser, which on CPU tests every face at every pixel (seconds at full size); a test holds
the two silhouettes together.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

PALETTE = np.array([[0.95, 0.55, 0.35], [0.45, 0.80, 0.45], [0.60, 0.55, 0.95], [0.95, 0.85, 0.35]])
SUBPIXEL_BITS = 4   # cv2.fillConvexPoly's fixed-point shift: vertices to 1/16 pixel
SUPERSAMPLE = 2     # painted at this many times the resolution, averaged down (edges antialiased)


def paint_mesh(verts: Tensor,  # [V, 3] camera coordinates (metres)
               faces: Tensor,  # [F, 3]
               focal: float, centre: tuple[float, float], width: int, height: int,
               colour: np.ndarray,  # [3] RGB in [0, 1]
               ) -> tuple[np.ndarray, np.ndarray]:  # RGB [H, W, 3] in [0, 1], coverage [H, W] in [0, 1]
    """One mesh painted far-to-near at full resolution, shaded by |cos| of its faces to the viewing ray."""
    v = verts.detach().double().numpy()
    tri = v[faces.numpy()]                                              # [F, 3, 3]
    front = (tri[..., 2] > 1e-3).all(1)
    tri = tri[front]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    centroid = tri.mean(1)
    cos = np.abs((normal * centroid).sum(1)) / (np.linalg.norm(normal, axis=1) * np.linalg.norm(centroid, axis=1)
                                               + 1e-12)
    shade = 0.25 + 0.75 * cos
    # OpenCV fills every pixel an edge touches, so paint at SUPERSAMPLE x and average down. Pixel i covers
    # [i, i+1) in the camera's coordinates (as in PyTorch3D), fine pixel k [k, k+1) / SUPERSAMPLE; OpenCV puts
    # pixel k's centre at integer k, hence the half fine pixel.
    uv = (focal * tri[..., :2] / tri[..., 2:] + np.asarray(centre)) * SUPERSAMPLE - 0.5   # [F, 3, 2]
    pts = np.round(uv * (1 << SUBPIXEL_BITS)).astype(np.int32)
    big = (height * SUPERSAMPLE, width * SUPERSAMPLE)
    rgb = np.zeros((*big, 3), np.float32)
    mask = np.zeros(big, np.float32)
    colours = (shade[:, None] * np.asarray(colour)[None]).astype(np.float32)
    for f in np.argsort(-centroid[:, 2]):                               # far first, near painted over it
        cv2.fillConvexPoly(rgb, pts[f], colours[f].tolist(), lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
        cv2.fillConvexPoly(mask, pts[f], 1.0, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
    rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_AREA)
    return rgb / np.maximum(mask, 1e-6)[..., None], mask


def render_mesh(verts: Tensor,  # [V, 3] camera coordinates (metres)
                faces: Tensor,  # [F, 3]
                k: Tensor,  # [3, 3] OpenCV intrinsics
                width: int, height: int, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB [H, W, 3] in [0, 1] and coverage [H, W] of one Phong-shaded mesh (PyTorch3D: the reference)."""
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
            colours: np.ndarray | None = None) -> np.ndarray:  # [H, W, 3] uint8
    """The image with every mesh blended over it at its own resolution, nearest person on top."""
    h, w = image.shape[:2]
    out = image.astype(np.float32) / 255
    palette = PALETTE if colours is None else colours
    for p in torch.argsort(verts[..., 2].mean(1), descending=True).tolist():
        rgb, mask = paint_mesh(verts[p], faces, focal, centre, w, h, palette[p % len(palette)])
        a = opacity * mask[..., None]
        out = out * (1 - a) + rgb * a
    return (out * 255).round().astype(np.uint8)
