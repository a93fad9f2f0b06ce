"""Slow, obvious reference rasterizer: every pixel visits every Gaussian in depth order (tests only)."""
from __future__ import annotations

import torch
from torch import Tensor

from relight.camera import Camera
from relight.gaussians import covariance_3d
from relight.projection import ALPHA_MAX, ALPHA_MIN, NEAR, project_one


def rasterize_reference(means: Tensor,  # [N, 3]
                        quats: Tensor,  # [N, 4]
                        scales: Tensor,  # [N, 3]
                        opacities: Tensor,  # [N]
                        colors: Tensor,  # [N, C]
                        camera: Camera,
                        background: Tensor | None = None,  # [C]
                        ) -> tuple[Tensor, Tensor]:  # [H, W, C], [H, W]
    """Per-pixel front-to-back alpha compositing of all Gaussians, no tiles and no culling radius."""
    covs = covariance_3d(quats, scales)
    splats = []
    for i in range(means.shape[0]):
        uv, cov2d, z = project_one(means[i], covs[i], camera)
        if z > NEAR:
            splats.append((float(z), uv, torch.linalg.inv(cov2d), opacities[i], colors[i]))
    splats.sort(key=lambda s: s[0])
    bg = torch.zeros(colors.shape[-1], dtype=colors.dtype) if background is None else background
    rows, alphas = [], []
    for v in range(camera.height):
        row, arow = [], []
        for u in range(camera.width):
            pixel = torch.tensor([u + 0.5, v + 0.5], dtype=means.dtype)
            color = torch.zeros_like(bg)
            trans = torch.ones((), dtype=means.dtype)
            for _, uv, inv_cov, opacity, col in splats:
                d = pixel - uv
                power = -0.5 * d @ inv_cov @ d
                alpha = torch.clamp(opacity * torch.exp(power), max=ALPHA_MAX)
                if alpha < ALPHA_MIN:
                    continue
                color = color + trans * alpha * col
                trans = trans * (1 - alpha)
            row.append(color + trans * bg)
            arow.append(1 - trans)
        rows.append(torch.stack(row))
        alphas.append(torch.stack(arow))
    return torch.stack(rows), torch.stack(alphas)
