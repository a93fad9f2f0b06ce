"""Projection of 3D Gaussians to screen-space 2D Gaussians (EWA splatting, as in 3D Gaussian splatting)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from relight.camera import Camera

NEAR = 0.01        # Gaussians closer to the camera than this are culled
BLUR = 0.3         # screen-space low-pass filter added to each 2D covariance (pixels^2)
ALPHA_MIN = 1.0 / 255.0  # smaller alphas are skipped
ALPHA_MAX = 0.99


@dataclass
class Projected:
    """Screen-space Gaussians."""
    means2d: Tensor  # [N, 2] pixel coordinates (x right, y down); [1, N, 2] as gsplat hands them to `watch`
    conics: Tensor  # [N, 3] inverse 2D covariance (a, b, c) of [[a, b], [b, c]]
    depths: Tensor  # [N] camera-space z
    radii: Tensor  # [N] pixel radius beyond which alpha < ALPHA_MIN (0: culled)


def project(means: Tensor,  # [N, 3]
            covs: Tensor,  # [N, 3, 3]
            opacities: Tensor,  # [N]
            camera: Camera) -> Projected:
    """Screen-space means, inverse covariances, depths and cut-off radii of the Gaussians."""
    view = camera.viewmat().to(means)
    rot, trans = view[:3, :3], view[:3, 3]
    p = means @ rot.T + trans
    x, y, z = p.unbind(-1)
    zc = z.clamp_min(NEAR)
    fx, fy = camera.fx, camera.fy
    zeros = torch.zeros_like(zc)
    jac = torch.stack([fx / zc, zeros, -fx * x / zc**2, zeros, fy / zc, -fy * y / zc**2], -1).reshape(-1, 2, 3)
    t = jac @ rot
    cov2d = t @ covs @ t.transpose(-1, -2) + BLUR * torch.eye(2, dtype=means.dtype, device=means.device)
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det = (a * c - b * b).clamp_min(1e-12)
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * x / zc + camera.cx, fy * y / zc + camera.cy], -1)
    with torch.no_grad():
        lam_max = 0.5 * (a + c) + torch.sqrt((0.25 * (a - c) ** 2 + b * b).clamp_min(0))
        # alpha = o exp(-d^2/2) >= ALPHA_MIN  <=>  d^2 <= 2 ln(o / ALPHA_MIN)
        reach = torch.sqrt(2 * torch.log((opacities.detach() / ALPHA_MIN).clamp_min(1.0)))
        radii = torch.ceil(reach * lam_max.sqrt())
        radii = torch.where(z > NEAR, radii, torch.zeros_like(radii))
    return Projected(means2d, conics, z, radii)


def project_one(mean: Tensor,  # [3]
                cov: Tensor,  # [3, 3]
                camera: Camera) -> tuple[Tensor, Tensor, Tensor]:  # [2], [2, 2] covariance, []
    """Reference projection of a single Gaussian: pixel mean, 2D covariance (with blur), depth."""
    view = camera.viewmat().to(mean)
    p = view[:3, :3] @ mean + view[:3, 3]
    x, y, z = p[0], p[1], p[2]
    jac = torch.zeros(2, 3, dtype=mean.dtype)
    jac[0, 0], jac[0, 2] = camera.fx / z, -camera.fx * x / z**2
    jac[1, 1], jac[1, 2] = camera.fy / z, -camera.fy * y / z**2
    cov_cam = view[:3, :3] @ cov @ view[:3, :3].T
    cov2d = jac @ cov_cam @ jac.T + BLUR * torch.eye(2, dtype=mean.dtype)
    uv = torch.stack([camera.fx * x / z + camera.cx, camera.fy * y / z + camera.cy])
    return uv, cov2d, z

