"""Differentiable Gaussian splatting: depth-sorted, tiled, alpha-composited; CPU in PyTorch or the fused C++
kernel (relight/kernel.py), CUDA via gsplat."""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from relight.camera import Camera
from relight.gaussians import covariance_3d
from relight.projection import ALPHA_MAX, ALPHA_MIN, BLUR, NEAR, Projected, project

TILE = 8
CHUNK_ELEMENTS = 1 << 22  # tiles x pixels x Gaussians evaluated at once (bounds memory)
BACKEND_ENV = "RELIGHT_RASTERIZER"  # "torch": force the PyTorch path on CPU; "fused": require the kernel


def rasterize(means: Tensor,  # [N, 3]
              quats: Tensor,  # [N, 4] (w, x, y, z)
              scales: Tensor,  # [N, 3]
              opacities: Tensor,  # [N]
              colors: Tensor,  # [N, C]
              camera: Camera,
              background: Tensor | None = None,  # [C]
              watch: Callable[[Projected], None] | None = None,
              backend: str | None = None,
              ) -> tuple[Tensor, Tensor]:  # image [H, W, C], alpha [H, W]
    """Render Gaussians with per-Gaussian colours; gsplat on a CUDA device; on the CPU the fused C++ kernel
    when it is built, our tiled PyTorch code otherwise (`backend` or $RELIGHT_RASTERIZER: see `cpu_backend`).

    `watch` is handed the screen-space projection (densification reads `.means2d.grad` after backward and
    `.radii`). On the fused path its `means2d` is a leaf outside the render whose gradient the kernel fills.
    """
    if select_backend(means.device) == "gsplat":
        return _rasterize_gsplat(means, quats, scales, opacities, colors, camera, background, watch)
    if cpu_backend(backend, means, colors, quats, scales, opacities) == "fused":
        from relight.kernel import rasterize_fused
        return rasterize_fused(means, quats, scales, opacities, colors, camera, background, watch)
    proj = project(means, covariance_3d(quats, scales), opacities, camera)
    if watch is not None:
        watch(proj)
    return rasterize_projected(proj, opacities, colors, camera.width, camera.height, background)


def select_backend(device: torch.device) -> str:
    """'gsplat' for tensors on a CUDA device, 'torch' (our tiled code) otherwise.

    Raises a MetatuneError when CUDA tensors are given but gsplat is not installed.
    """
    if device.type != "cuda":
        return "torch"
    if importlib.util.find_spec("gsplat") is None:
        from metatune import MetatuneError
        raise MetatuneError("rendering tensors on a CUDA device needs gsplat, which is not installed "
                            "(pip install -e '.[cuda]'); move the model to the CPU to use the PyTorch rasterizer")
    return "gsplat"


def cpu_backend(requested: str | None, means: Tensor, colors: Tensor, *others: Tensor) -> str:
    """'fused' (the C++ kernel) or 'torch' for these CPU tensors: `requested`, else $RELIGHT_RASTERIZER, else
    'fused' when the kernel is built and takes the tensors (float32 or float64 alike), 'torch' otherwise.

    Raises a MetatuneError for an unknown name, or when 'fused' is asked for and cannot be had.
    """
    choice = requested or os.environ.get(BACKEND_ENV) or "auto"
    if choice == "torch":
        return "torch"
    from metatune import MetatuneError
    if choice not in ("auto", "fused"):
        raise MetatuneError(f"unknown CPU rasterizer {choice!r} (backend= or ${BACKEND_ENV}): 'torch' or 'fused'")
    from relight import kernel
    if kernel.load() is None:
        if choice == "fused":
            raise MetatuneError(f"the fused CPU rasterizer is not available: {kernel.unavailable_reason()}")
        return "torch"
    if not kernel.supports(means, colors, *others):
        if choice == "fused":
            raise MetatuneError("the fused CPU rasterizer takes CPU tensors, all float32 or all float64, "
                                "with at most 58 colour channels")
        return "torch"
    return "fused"


@dataclass
class TileBlend:
    """Compositing weights of a group of tiles: pixel colour = weights @ colors[gaussians] + background_t * bg."""
    tiles: list[int]  # row-major tile numbers
    gaussians: Tensor  # [T, K] indices into the input Gaussians (padding points at any, with weight 0)
    weights: Tensor  # [T, P, K] alpha_k * transmittance before k
    background_t: Tensor  # [T, P] transmittance left after the last Gaussian


def blend_tiles(proj: Projected, opacities: Tensor,  # [N]
                width: int, height: int, tile: int = TILE) -> tuple[list[TileBlend], int, int]:
    """Front-to-back compositing weights of every pixel, tile by tile (tiles padded in groups)."""
    dev, dt = opacities.device, opacities.dtype
    order = torch.argsort(proj.depths.detach())
    keep = order[proj.radii[order] > 0]
    m2d, con, op, rad = proj.means2d[keep], proj.conics[keep], opacities[keep], proj.radii[keep]
    tiles_x, tiles_y = (width + tile - 1) // tile, (height + tile - 1) // tile
    per_tile = tile_lists(m2d, rad, tiles_x, tiles_y, tile)
    ys, xs = torch.meshgrid(torch.arange(tile, device=dev), torch.arange(tile, device=dev), indexing="ij")
    local = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).to(dt) + 0.5  # pixel centres [P, 2]
    n_tiles = len(per_tile)
    by_count = sorted(range(n_tiles), key=lambda i: per_tile[i].numel())  # similar lengths pad little
    blends = []
    start = next((j for j, i in enumerate(by_count) if per_tile[i].numel() > 0), n_tiles)
    while start < n_tiles:
        end = start + 1
        while end < n_tiles and (end - start + 1) * tile * tile * per_tile[by_count[end]].numel() <= CHUNK_ELEMENTS:
            end += 1
        group = by_count[start:end]
        k = int(per_tile[group[-1]].numel())
        idx = torch.zeros(len(group), k, dtype=torch.long, device=dev)
        valid = torch.zeros(len(group), k, dtype=torch.bool, device=dev)
        for j, i in enumerate(group):
            ids = per_tile[i]
            idx[j, : ids.numel()] = ids
            valid[j, : ids.numel()] = True
        origin = torch.tensor([[(i % tiles_x) * tile, (i // tiles_x) * tile] for i in group], dtype=dt, device=dev)
        pix = origin[:, None, :] + local[None]  # [T, P, 2]
        d = pix[:, :, None, :] - m2d[idx][:, None, :, :]  # [T, P, K, 2]
        c = con[idx][:, None]  # [T, 1, K, 3]
        power = -0.5 * (c[..., 0] * d[..., 0] ** 2 + c[..., 2] * d[..., 1] ** 2) - c[..., 1] * d[..., 0] * d[..., 1]
        alpha = (op[idx][:, None] * torch.exp(power)).clamp_max(ALPHA_MAX)
        alpha = torch.where(valid[:, None] & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
        log_t = torch.cumsum(torch.log1p(-alpha), dim=-1)
        trans = torch.exp(torch.cat([torch.zeros_like(log_t[..., :1]), log_t[..., :-1]], -1))
        blends.append(TileBlend(group, keep[idx], alpha * trans, torch.exp(log_t[..., -1])))
        start = end
    return blends, tiles_x, tiles_y


def rasterize_projected(proj: Projected, opacities: Tensor,  # [N]
                        colors: Tensor,  # [N, C]
                        width: int, height: int,
                        background: Tensor | None = None,  # [C]
                        tile: int = TILE) -> tuple[Tensor, Tensor]:  # [H, W, C], [H, W]
    """Composite screen-space Gaussians front to back, tile by tile."""
    dev, dt = colors.device, colors.dtype
    nc = colors.shape[-1]
    bg = torch.zeros(nc, dtype=dt, device=dev) if background is None else background.to(colors)
    blends, tiles_x, tiles_y = blend_tiles(proj, opacities, width, height, tile)
    n_tiles = tiles_x * tiles_y
    out_color: list[Tensor] = [bg.expand(tile * tile, nc)] * n_tiles
    out_alpha: list[Tensor] = [torch.zeros(tile * tile, dtype=dt, device=dev)] * n_tiles
    for b in blends:
        color = b.weights @ colors[b.gaussians] + b.background_t[..., None] * bg  # [T, P, C]
        alpha_sum = b.weights.sum(-1)
        for j, i in enumerate(b.tiles):
            out_color[i], out_alpha[i] = color[j], alpha_sum[j]
    color = torch.stack(out_color).reshape(tiles_y, tiles_x, tile, tile, nc).permute(0, 2, 1, 3, 4)
    alpha = torch.stack(out_alpha).reshape(tiles_y, tiles_x, tile, tile).permute(0, 2, 1, 3)
    color = color.reshape(tiles_y * tile, tiles_x * tile, nc)[:height, :width]
    alpha = alpha.reshape(tiles_y * tile, tiles_x * tile)[:height, :width]
    return color, alpha


def tile_lists(means2d: Tensor,  # [N, 2]
               radii: Tensor,  # [N]
               tiles_x: int, tiles_y: int, tile: int) -> list[Tensor]:  # tiles_y * tiles_x index lists
    """Indices of the Gaussians whose cut-off square touches each tile (row-major), in input order."""
    with torch.no_grad():
        dev = means2d.device
        lo = ((means2d.detach() - radii[:, None]) / tile).floor().long()
        hi = ((means2d.detach() + radii[:, None]) / tile).floor().long()
        x0, y0 = lo[:, 0].clamp(0, tiles_x), lo[:, 1].clamp(0, tiles_y)
        x1, y1 = hi[:, 0].clamp(-1, tiles_x - 1), hi[:, 1].clamp(-1, tiles_y - 1)
        w, h = (x1 - x0 + 1).clamp_min(0), (y1 - y0 + 1).clamp_min(0)
        count = torch.where(radii > 0, w * h, torch.zeros_like(w))
        gauss = torch.repeat_interleave(torch.arange(means2d.shape[0], device=dev), count)
        start = torch.cumsum(count, 0) - count
        k = torch.arange(gauss.numel(), device=dev) - start[gauss]  # position inside each Gaussian's rectangle
        tx = x0[gauss] + k % w[gauss].clamp_min(1)
        ty = y0[gauss] + torch.div(k, w[gauss].clamp_min(1), rounding_mode="floor")
        tile_id = ty * tiles_x + tx
        order = torch.argsort(tile_id, stable=True)  # stable: keeps the input (depth) order within a tile
        per = torch.bincount(tile_id, minlength=tiles_x * tiles_y).tolist()
        return list(torch.split(gauss[order], per))


def _rasterize_gsplat(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                      camera: Camera, background: Tensor | None,
                      watch: Callable[[Projected], None] | None = None) -> tuple[Tensor, Tensor]:
    """The same rendering through gsplat's CUDA kernels (imported only here). Unpacked, so that `watch` gets
    gsplat's own screen-space means ([1, N, 2]: one row per Gaussian) and radii."""
    from gsplat import rasterization
    view = camera.viewmat().to(means)[None]
    K = camera.K().to(means)[None]
    bg = None if background is None else background.to(colors)[None]
    img, alpha, meta = rasterization(means, quats, scales, opacities, colors, view, K, camera.width,
                                     camera.height, near_plane=NEAR, eps2d=BLUR, backgrounds=bg, packed=False)
    if watch is not None:
        radii = meta["radii"][0]  # [N, 2] half-extents in x and y (gsplat >= 1.5), 0 where culled
        radii = radii.amax(-1) if radii.dim() == 2 else radii
        # means2d keeps its camera axis: it is the tensor the render used, so its gradient is the one retained
        watch(Projected(meta["means2d"], meta["conics"][0], meta["depths"][0], radii.to(means.dtype)))
    return img[0], alpha[0, ..., 0]
