"""Light conditions as meta-learning tasks: support and query views of one light, never the same view."""
from __future__ import annotations

import random
from dataclasses import dataclass

from torch import Tensor

from metatune import MetatuneError
from relight.light import Light
from relight.scene import Frame, group_by_light


@dataclass
class LightTask:
    """One light with disjoint support (adaptation) and query (evaluation) views."""
    light: Light
    support: list[Frame]
    query: list[Frame]

    def __post_init__(self) -> None:
        if not self.support or not self.query:
            raise MetatuneError("a light task needs at least one support and one query view")
        if {id(f) for f in self.support} & {id(f) for f in self.query}:
            raise MetatuneError("support and query views of a light task must differ")


class TaskSampler:
    """Draws light tasks from the frames: a random light, `support_views` of its views, the rest as query."""

    def __init__(self, frames: list[Frame], support_views: int = 1, query_views: int = 1, seed: int = 0) -> None:
        self.groups = [g for g in group_by_light(frames) if len(g) >= 2]
        if not self.groups:
            raise MetatuneError("meta-learning needs lights seen from at least 2 views; every light of this "
                                "split has a single frame")
        self.support_views, self.query_views = support_views, query_views
        self.rng = random.Random(seed)

    def split(self, group: list[Frame]) -> LightTask:
        views = self.rng.sample(group, len(group))
        k = min(self.support_views, len(group) - 1)
        return LightTask(group[0].light, views[:k], views[k:k + self.query_views])

    def __call__(self, n: int) -> list[LightTask]:
        return [self.split(self.rng.choice(self.groups)) for _ in range(n)]


def photometric_loss(pred: Tensor,  # [H, W, 3]
                     target: Tensor,  # [H, W, 3]
                     ) -> Tensor:  # []
    """Mean absolute error plus a small squared term (sharper than L2, smoother than L1 near zero)."""
    diff = pred - target
    return diff.abs().mean() + diff.pow(2).mean()
