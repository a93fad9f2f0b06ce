"""Shadows, the exact reference: every receiver against every occluder whose footprint reaches its tile.

Quadratic (per 16x16 light-view tile, receivers x occluders dense): tests and benchmarks only.
"""
from __future__ import annotations

import torch
from torch import Tensor

from relight.light import Light
from relight.projection import ALPHA_MAX, ALPHA_MIN, Projected, project
from relight.rasterize import tile_lists
from relight.visibility import SHADOW_RES, light_camera

TILE = 16


def transmittance_at(proj: Projected, opacities: Tensor,  # [N]
                     points: Tensor,  # [M, 2] light-view pixel coordinates to evaluate at
                     limits: Tensor,  # [M] only Gaussians with depth < limit occlude
                     exclude: Tensor,  # [M] long: a Gaussian left out at each point (-1: none)
                     resolution: int) -> Tensor:  # [M] transmittance in [0, 1]
    """prod_j (1 - alpha_j(point)) over the Gaussians j nearer than `limit`, alpha_j as the rasterizer splats it."""
    tiles = (resolution + TILE - 1) // TILE
    occluders = tile_lists(proj.means2d, proj.radii, tiles, tiles, TILE)
    cell = (points.detach() / TILE).floor().long().clamp(0, tiles - 1)
    cell_id = cell[:, 1] * tiles + cell[:, 0]
    out = torch.ones(points.shape[0], dtype=opacities.dtype, device=opacities.device)
    for t in torch.unique(cell_id).tolist():
        rec = (cell_id == t).nonzero().squeeze(-1)
        occ = occluders[t]
        if occ.numel() == 0:
            continue
        d = points[rec][:, None] - proj.means2d[occ][None]  # [R, K, 2]
        c = proj.conics[occ][None]
        power = -0.5 * (c[..., 0] * d[..., 0] ** 2 + c[..., 2] * d[..., 1] ** 2) - c[..., 1] * d[..., 0] * d[..., 1]
        alpha = (opacities[occ][None] * torch.exp(power)).clamp_max(ALPHA_MAX)
        front = proj.depths[occ][None] < limits[rec][:, None]
        front &= occ[None] != exclude[rec][:, None]
        alpha = torch.where(front & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
        out = out.index_put((rec,), torch.exp(torch.log1p(-alpha).sum(-1)))
    return out


def light_visibility_exact(means: Tensor,  # [N, 3]
                           covs: Tensor,  # [N, 3, 3]
                           opacities: Tensor,  # [N]
                           light: Light,
                           bias: Tensor | float = 0.0,  # [N] or scalar: depth band in front of a receiver ignored
                           resolution: int = SHADOW_RES) -> Tensor:  # [N] transmittance in [0, 1]
    """`light_visibility`'s definition computed pairwise: each receiver's transmittance at its own projected mean."""
    n = means.shape[0]
    cam = light_camera(means, light, resolution)
    proj = project(means, covs, opacities, cam)
    bias_t = torch.as_tensor(bias, dtype=means.dtype, device=means.device).expand(n)
    return transmittance_at(proj, opacities, proj.means2d, proj.depths - bias_t,
                            torch.arange(n, device=means.device), resolution)
