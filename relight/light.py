"""Light sources: a point light with inverse-square falloff, or a directional light."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metatune.errors import MetatuneError


@dataclass(frozen=True)
class Light:
    """A point light at `position` (falloff 1/r^2) or, if `directional`, light arriving from direction `position`."""
    position: tuple[float, float, float]
    directional: bool = False

    def __post_init__(self) -> None:
        if len(self.position) != 3 or not all(math.isfinite(float(v)) for v in self.position):
            raise MetatuneError(f"a light position must be 3 finite numbers, got {tuple(self.position)}")
        if self.directional and not any(float(v) != 0 for v in self.position):
            raise MetatuneError("a directional light needs a non-zero direction, got (0, 0, 0)")

    def tensor(self, like: Tensor) -> Tensor:  # [3]
        return torch.tensor(self.position, dtype=like.dtype, device=like.device)

    def incidence(self, points: Tensor,  # [N, 3]
                  ) -> tuple[Tensor, Tensor, Tensor]:  # unit direction to light [N, 3], falloff [N], distance [N]
        """Direction from each point to the light, the irradiance falloff factor and the distance."""
        p = self.tensor(points)
        if self.directional:
            d = (p / p.norm()).expand_as(points)
            inf = torch.full(points.shape[:-1], float("inf"), dtype=points.dtype, device=points.device)
            return d, torch.ones_like(inf), inf
        to_light = p - points
        dist = to_light.norm(dim=-1).clamp_min(1e-6)
        return to_light / dist[:, None], 1.0 / dist**2, dist
