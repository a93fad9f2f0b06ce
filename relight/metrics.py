"""Image quality: PSNR and SSIM (Gaussian window 11, sigma 1.5, as in Wang et al. 2004)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

C1 = 0.01**2
C2 = 0.03**2


def psnr(pred: Tensor,  # [H, W, C] in [0, 1]
         target: Tensor,  # [H, W, C]
         ) -> float:
    """Peak signal-to-noise ratio in dB for a peak of 1 (predictions clamped to [0, 1])."""
    mse = float((pred.clamp(0, 1) - target).pow(2).mean())
    return float("inf") if mse == 0 else -10 * math.log10(mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:  # [size, size], sums to 1
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(pred: Tensor,  # [H, W, C] in [0, 1]
         target: Tensor,  # [H, W, C]
         mask: Tensor | None = None,  # [H, W] bool: average over the windows centred on these pixels
         size: int = 11, sigma: float = 1.5) -> float:
    """Mean structural similarity over valid (unpadded) windows and channels (those centred in `mask`)."""
    x = pred.clamp(0, 1).permute(2, 0, 1)[:, None].double()  # [C, 1, H, W]
    y = target.permute(2, 0, 1)[:, None].double()
    w = gaussian_window(size, sigma).to(x)[None, None]
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mx**2
    syy = F.conv2d(y * y, w) - my**2
    sxy = F.conv2d(x * y, w) - mx * my
    s = ((2 * mx * my + C1) * (2 * sxy + C2)) / ((mx**2 + my**2 + C1) * (sxx + syy + C2))
    if mask is None:
        return float(s.mean())
    h = (size - 1) // 2
    centres = mask[h: mask.shape[0] - h, h: mask.shape[1] - h]
    if not bool(centres.any()):
        return float("nan")
    return float(s[:, 0][:, centres].mean())
