"""3D Gaussians: geometry parameters (means, rotations, scales, opacities) and their covariances."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn


def quat_to_rotmat(quats: Tensor,  # [N, 4] (w, x, y, z), any norm
                   ) -> Tensor:  # [N, 3, 3]
    """Rotation matrices of (normalised) quaternions in (w, x, y, z) order."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*q.shape[:-1], 3, 3)


def covariance_3d(quats: Tensor,  # [N, 4]
                  scales: Tensor,  # [N, 3] standard deviations along the local axes
                  ) -> Tensor:  # [N, 3, 3]
    """World-space covariance R diag(s^2) R^T of each Gaussian."""
    rot = quat_to_rotmat(quats)
    m = rot * scales[..., None, :]
    return m @ m.transpose(-1, -2)


class Gaussians(nn.Module):
    """Learnable geometry: means, quaternions, log-scales and opacity logits of N Gaussians."""

    def __init__(self, means: Tensor,  # [N, 3]
                 scale: float | Tensor = 0.02,  # scalar, [N, 1] or [N, 3]
 opacity: float = 0.5,
                 quats: Tensor | None = None,  # [N, 4]
                 ) -> None:
        super().__init__()
        n = means.shape[0]
        scales = torch.as_tensor(scale, dtype=means.dtype).expand(n, 3)
        self.means = nn.Parameter(means.clone())
        self.quats = nn.Parameter(quats.clone() if quats is not None
                                  else torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=means.dtype).repeat(n, 1))
        self.log_scales = nn.Parameter(torch.log(scales.clone().to(means.dtype)))
        self.opacity_logits = nn.Parameter(torch.full((n,), math.log(opacity / (1 - opacity)), dtype=means.dtype))
        self.watch: Callable[..., None] | None = None  # given each render's screen-space projection (densify.py)

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def scales(self) -> Tensor:  # [N, 3]
        return self.log_scales.exp()

    @property
    def opacities(self) -> Tensor:  # [N]
        return torch.sigmoid(self.opacity_logits)

    def covariances(self) -> Tensor:  # [N, 3, 3]
        return covariance_3d(self.quats, self.scales)

    def normals(self) -> Tensor:  # [N, 3] unit axis of the smallest scale
        rot = quat_to_rotmat(self.quats)
        idx = self.log_scales.argmin(dim=-1)
        return rot.gather(-1, idx[:, None, None].expand(-1, 3, 1)).squeeze(-1)
