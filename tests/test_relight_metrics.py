"""PSNR and SSIM against closed forms and a slow window-by-window reference."""
import math

import torch

from relight.metrics import C1, C2, gaussian_window, psnr, ssim


def test_psnr_closed_form():
    gt = torch.full((8, 8, 3), 0.5)
    assert abs(psnr(gt + 0.1, gt) - 20.0) < 1e-4
    assert math.isinf(psnr(gt, gt))


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.3, 0.7
    got = ssim(torch.full((16, 16, 3), a), torch.full((16, 16, 3), b))
    assert abs(got - (2 * a * b + C1) / (a * a + b * b + C1)) < 1e-6


def test_ssim_matches_window_by_window_reference():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(14, 13, 1, generator=gen), torch.rand(14, 13, 1, generator=gen)
    w = gaussian_window()
    vals = []
    for i in range(14 - 10):
        for j in range(13 - 10):
            px, py = x[i:i + 11, j:j + 11, 0].double(), y[i:i + 11, j:j + 11, 0].double()
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            vals.append(((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx**2 + my**2 + C1) * (vx + vy + C2)))
    assert abs(ssim(x, y) - float(torch.stack(vals).mean())) < 1e-9
    assert abs(ssim(x, x) - 1.0) < 1e-9
