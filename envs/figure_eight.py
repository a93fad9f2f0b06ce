"""The figure-eight (lemniscate of Gerono) reference for quadrotor tracking, with its derivatives."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class FigureEight:
    """x = a sin(w t), y = (a / 2) sin(2 w t), z = height; one loop every `period` seconds."""

    size: float = 1.0
    period: float = 3.0
    height: float = 1.0

    def position(self, t: Tensor) -> Tensor:  # t [...] -> [..., 3]
        """Position at times t (what a tracking cost needs, without the derivatives)."""
        w, a = 2 * math.pi / self.period, self.size
        return torch.stack([a * torch.sin(w * t), 0.5 * a * torch.sin(2 * w * t), torch.full_like(t, self.height)], -1)

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # t [...] -> 3 x [..., 3]
        """Position, velocity and acceleration at times t."""
        w, a = 2 * math.pi / self.period, self.size
        s1, c1, s2, c2 = torch.sin(w * t), torch.cos(w * t), torch.sin(2 * w * t), torch.cos(2 * w * t)
        zero = torch.zeros_like(t)
        pos = torch.stack([a * s1, 0.5 * a * s2, zero + self.height], -1)
        vel = torch.stack([a * w * c1, a * w * c2, zero], -1)
        acc = torch.stack([-a * w * w * s1, -2 * a * w * w * s2, zero], -1)
        return pos, vel, acc
