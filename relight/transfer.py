"""Rendering with frozen geometry as a linear map from Gaussian colours to pixels (cheap inner loops)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from relight.camera import Camera
from relight.gaussians import covariance_3d
from relight.projection import project
from relight.rasterize import TILE, blend_tiles


@dataclass
class Transfer:
    """image = (weights @ colors).reshape(H, W, C) + background_t[..., None] * bg for fixed geometry."""
    weights: Tensor  # sparse [H * W, N]
    background_t: Tensor  # [H * W]
    width: int
    height: int

    def apply(self, colors: Tensor,  # [N, C]
              background: Tensor | None = None,  # [C]
              ) -> Tensor:  # [H, W, C]
        img = torch.sparse.mm(self.weights, colors)
        if background is not None:
            img = img + self.background_t[:, None] * background
        return img.reshape(self.height, self.width, -1)


@torch.no_grad()
def transfer(means: Tensor,  # [N, 3]
             quats: Tensor,  # [N, 4]
             scales: Tensor,  # [N, 3]
             opacities: Tensor,  # [N]
             camera: Camera, tile: int = TILE) -> Transfer:
    """The pixel weights of every Gaussian in one view (no gradient to the geometry)."""
    proj = project(means, covariance_3d(quats, scales), opacities, camera)
    blends, tiles_x, _ = blend_tiles(proj, opacities, camera.width, camera.height, tile)
    w, h, dev = camera.width, camera.height, means.device
    ys, xs = torch.meshgrid(torch.arange(tile, device=dev), torch.arange(tile, device=dev), indexing="ij")
    rows, cols, vals = [], [], []
    bg_t = torch.ones(h * w, dtype=means.dtype, device=dev)
    for b in blends:
        tiles = torch.tensor(b.tiles, device=dev)
        px = (tiles % tiles_x)[:, None] * tile + xs.reshape(1, -1)  # [T, P]
        py = (tiles // tiles_x)[:, None] * tile + ys.reshape(1, -1)
        inside = (px < w) & (py < h)
        pixel = torch.where(inside, py * w + px, torch.zeros_like(px))
        bg_t[pixel[inside]] = b.background_t[inside]
        nz = (b.weights > 0) & inside[..., None]
        t_i, p_i, k_i = nz.nonzero(as_tuple=True)
        rows.append(pixel[t_i, p_i])
        cols.append(b.gaussians[t_i, k_i])
        vals.append(b.weights[t_i, p_i, k_i])
    n = means.shape[0]
    if rows:
        idx = torch.stack([torch.cat(rows), torch.cat(cols)])
        with warnings.catch_warnings():  # torch warns that it skips its (slow) invariant checks
            warnings.simplefilter("ignore")
            weights = torch.sparse_coo_tensor(idx, torch.cat(vals), (h * w, n), check_invariants=False).coalesce()
    else:
        weights = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long, device=dev),
                                          torch.zeros(0, dtype=means.dtype, device=dev), (h * w, n),
                                          check_invariants=False)
    return Transfer(weights, bg_t, w, h)
