"""Shadows: the fraction of a light reaching each Gaussian, splatting the others from the light's viewpoint."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from relight.camera import Camera, look_at
from relight.light import Light
from relight.projection import ALPHA_MAX, ALPHA_MIN, project
from relight.rasterize import tile_lists

SHADOW_RES = 256  # light-view image size: sets the resolution of the screen-space footprints
TILE = 16


def light_camera(means: Tensor,  # [N, 3]
                 light: Light, resolution: int = SHADOW_RES) -> Camera:
    """A camera at the light (far along the direction for a directional light) that sees every Gaussian."""
    centre = means.mean(0)
    eye = light.tensor(means) if not light.directional else centre + 1e3 * light.tensor(means) / light.tensor(means).norm()
    c2w = look_at(eye.detach(), centre.detach())
    axis = (centre - eye) / (centre - eye).norm()
    rel = means - eye
    cos = ((rel @ axis) / rel.norm(dim=-1).clamp_min(1e-9)).clamp(-1, 1)
    half = float(torch.arccos(cos.min())) * 1.05 + 1e-4
    return Camera.from_fov(c2w, 2 * min(half, math.radians(85.0)), resolution, resolution)


def light_visibility(means: Tensor,  # [N, 3]
                     covs: Tensor,  # [N, 3, 3]
                     opacities: Tensor,  # [N]
                     light: Light,
                     bias: Tensor | float = 0.0,  # [N] or scalar: depth band in front of a receiver ignored
                     resolution: int = SHADOW_RES) -> Tensor:  # [N] transmittance in [0, 1]
    """prod_j (1 - alpha_j(x_i)) over the Gaussians j nearer to the light than receiver i (deep shadow map).

    alpha_j is the 2D splat of Gaussian j in the light's view evaluated where receiver i projects,
    exactly as the rasterizer composites it for a pixel.
    """
    n = means.shape[0]
    cam = light_camera(means, light, resolution)
    proj = project(means, covs, opacities, cam)
    bias_t = torch.as_tensor(bias, dtype=means.dtype, device=means.device).expand(n)
    tiles = (resolution + TILE - 1) // TILE
    occluders = tile_lists(proj.means2d, proj.radii, tiles, tiles, TILE)
    cell = (proj.means2d.detach() / TILE).floor().long().clamp(0, tiles - 1)
    cell_id = cell[:, 1] * tiles + cell[:, 0]
    vis = torch.ones(n, dtype=means.dtype, device=means.device)
    for t in torch.unique(cell_id).tolist():
        rec = (cell_id == t).nonzero().squeeze(-1)
        occ = occluders[t]
        if occ.numel() == 0:
            continue
        d = proj.means2d[rec][:, None] - proj.means2d[occ][None]  # [R, K, 2]
        c = proj.conics[occ][None]
        power = -0.5 * (c[..., 0] * d[..., 0] ** 2 + c[..., 2] * d[..., 1] ** 2) - c[..., 1] * d[..., 0] * d[..., 1]
        alpha = (opacities[occ][None] * torch.exp(power)).clamp_max(ALPHA_MAX)
        front = proj.depths[occ][None] < (proj.depths[rec] - bias_t[rec])[:, None]
        front &= occ[None] != rec[:, None]
        alpha = torch.where(front & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
        vis = vis.index_put((rec,), torch.exp(torch.log1p(-alpha).sum(-1)))
    return vis
