"""Time-scheduled gains: K knots of log gains spread over the horizon, linearly interpolated in log space."""
from __future__ import annotations

import torch
from torch import Tensor


def scheduled(log_gains: Tensor, t: int | Tensor, horizon: int) -> Tensor:  # [..., K, G] -> [..., G]
    """Gains at step t (an int, or a 0-d tensor, e.g. when a rollout vmaps over time).

    Knot k sits at step k (horizon - 1) / (K - 1); between knots the log gains are mixed by hat
    weights max(0, 1 - |s - k|), which is linear interpolation written without indexing by t.
    """
    k = log_gains.shape[-2]
    if k == 1:
        return log_gains[..., 0, :].exp()
    s = (k - 1) * torch.clamp(torch.as_tensor(t, dtype=log_gains.dtype) / max(horizon - 1, 1), max=1.0)
    knots = torch.arange(k, dtype=log_gains.dtype, device=log_gains.device)
    weights = (1 - (s - knots).abs()).clamp_min(0)  # [K]
    return (weights[:, None] * log_gains).sum(-2).exp()
