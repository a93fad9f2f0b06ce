"""Light sources: a point light with inverse-square falloff, or a directional light."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from metatune.errors import MetatuneError


@dataclass(frozen=True)
class Light:
    """A point light at `position` (falloff 1/r^2) or, if `directional`, light arriving from direction `position`.

    `power` is the frame's relative RGB power (a capture's per-frame `pl_intensity`; 1 if not given). It does
    not take part in equality or hashing: frames lit from one place are one light condition, and shadows
    (cached per light) depend on where the light is, not on how bright it is.
    """
    position: tuple[float, float, float]
    directional: bool = False
    power: tuple[float, float, float] = field(default=(1.0, 1.0, 1.0), compare=False)

    def __post_init__(self) -> None:
        if len(self.position) != 3 or not all(math.isfinite(float(v)) for v in self.position):
            raise MetatuneError(f"a light position must be 3 finite numbers, got {tuple(self.position)}")
        if self.directional and not any(float(v) != 0 for v in self.position):
            raise MetatuneError("a directional light needs a non-zero direction, got (0, 0, 0)")
        if len(self.power) != 3 or not all(math.isfinite(float(v)) and float(v) > 0 for v in self.power):
            raise MetatuneError(f"a light's power must be 3 finite positive numbers (RGB), got {tuple(self.power)}")

    def tensor(self, like: Tensor) -> Tensor:  # [3]
        return torch.tensor(self.position, dtype=like.dtype, device=like.device)

    def power_tensor(self, like: Tensor) -> Tensor:  # [3]
        return torch.tensor(self.power, dtype=like.dtype, device=like.device)

    def incidence(self, points: Tensor,  # [N, 3]
                  reference_distance: float = 1.0,
                  ) -> tuple[Tensor, Tensor, Tensor]:  # unit direction to light [N, 3], falloff [N], distance [N]
        """Direction from each point to the light, the irradiance falloff factor and the distance.

        A directional light's falloff is 1 / reference_distance^2: it delivers what a point light of the same
        power delivers at that distance, so one intensity means the same brightness for both kinds (a model
        passes the distance of the lights it was trained under).
        """
        p = self.tensor(points)
        if self.directional:
            d = (p / p.norm()).expand_as(points)
            inf = torch.full(points.shape[:-1], float("inf"), dtype=points.dtype, device=points.device)
            return d, torch.full_like(inf, 1.0 / reference_distance**2), inf
        to_light = p - points
        dist = to_light.norm(dim=-1).clamp_min(1e-6)
        return to_light / dist[:, None], 1.0 / dist**2, dist


def parse_power(value: object, where: str) -> tuple[float, float, float]:
    """A frame's `pl_intensity`: one number (white) or three (RGB), finite and positive."""
    vals = [value] if isinstance(value, (int, float)) else value
    try:
        out = tuple(float(v) for v in vals)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise MetatuneError(f"{where}: pl_intensity {value!r} is not a number or 3 numbers") from None
    if len(out) == 1:
        out = out * 3
    if len(out) != 3 or not all(math.isfinite(v) and v > 0 for v in out):
        raise MetatuneError(f"{where}: pl_intensity {value!r} must be one or three finite positive numbers")
    return out  # type: ignore[return-value]
