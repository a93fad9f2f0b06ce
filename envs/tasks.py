"""Task distributions over robots' physical parameters and disturbances."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class RobotTask:
    """One robot to control: its physical parameters and disturbance (gust amplitude, frequency, phase)."""

    robot: str
    params: dict[str, Any]
    gust: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gust_hz: float = 0.0
    phase: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {"robot": self.robot, "params": self.params, "gust": list(self.gust), "gust_hz": self.gust_hz,
                "seed": self.seed}


@dataclass
class TaskDistribution:
    """Uniform ranges (lo, hi) per physical parameter; 'wind' and 'gust' ranges are per axis magnitudes."""

    robot: str
    ranges: dict[str, tuple[float, float]]
    wind: tuple[float, float, float] = (0.0, 0.0, 0.0)  # max |wind| per axis (m/s)
    gust: tuple[float, float, float] = (0.0, 0.0, 0.0)  # max gust amplitude per axis (m/s)
    gust_hz: tuple[float, float] = (0.0, 0.0)
    fixed: dict[str, Any] = field(default_factory=dict)

    def sample(self, n: int, generator: torch.Generator) -> list[RobotTask]:
        """n tasks drawn with `generator` (so a seed names a set of robots)."""
        tasks = []
        for _ in range(n):
            seed = int(torch.randint(0, 2 ** 31 - 1, (), generator=generator))
            g = torch.Generator().manual_seed(seed)
            u = lambda: float(torch.rand((), generator=g))  # noqa: E731
            params: dict[str, Any] = dict(self.fixed)
            for key, (lo, hi) in self.ranges.items():
                params[key] = lo + (hi - lo) * u()
            if any(self.wind):
                params["wind"] = tuple(w * (2 * u() - 1) for w in self.wind)
            gust = tuple(a * u() for a in self.gust)
            hz = self.gust_hz[0] + (self.gust_hz[1] - self.gust_hz[0]) * u()
            phase = tuple(6.283185307179586 * u() for _ in range(3))
            tasks.append(RobotTask(self.robot, params, gust, hz, phase, seed))
        return tasks


def stack_params(tasks: list[RobotTask], defaults: dict[str, Any], dtype: torch.dtype,
                 device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Physical parameters of a batch of robots as tensors [B] (wind [B, 3]) on `device`; missing ones take
    defaults."""
    out = {}
    for key, default in defaults.items():
        out[key] = torch.tensor([t.params.get(key, default) for t in tasks], dtype=dtype, device=device)
    return out
