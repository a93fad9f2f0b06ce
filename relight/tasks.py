"""Light conditions as meta-learning tasks: support and query data of one light that never overlap.

A light seen from several views splits its views (support views adapt, the others evaluate). A light seen
from one view only, as in the moving-light captures of MetaGS and NRHints (one image per light), splits that
image's pixels instead: disjoint random halves of its TILE x TILE tiles.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from metatune import MetatuneError
from relight.light import Light
from relight.scene import Frame, group_by_light

TILE = 8  # pixels per side of the tiles a single view is split into


@dataclass
class LightTask:
    """One light with disjoint support (adaptation) and query (evaluation) data: other views, or other pixels."""
    light: Light
    support: list[Frame]
    query: list[Frame]

    def __post_init__(self) -> None:
        if not self.support or not self.query:
            raise MetatuneError("a light task needs at least one support and one query view")
        for s in self.support:
            for q in self.query:
                if s.image is not q.image and s.file_path != q.file_path:
                    continue
                if s.mask is None or q.mask is None or bool((s.mask & q.mask).any()):
                    raise MetatuneError("support and query views of a light task must differ (or, for one view, "
                                        "cover disjoint pixels)")


def tile_grid(height: int, width: int, tile: int = TILE) -> tuple[int, int]:
    """Rows and columns of `tile`-pixel tiles covering an image (the last ones may be cut)."""
    return -(-height // tile), -(-width // tile)


def tile_halves(height: int, width: int, gen: torch.Generator,
                tile: int = TILE) -> tuple[Tensor, Tensor]:  # support [H, W] bool, query [H, W] bool
    """A random half of the image's tiles and the other half: disjoint, together every pixel."""
    ty, tx = tile_grid(height, width, tile)
    if ty * tx < 2:
        raise MetatuneError(f"a {width}x{height} image has fewer than 2 tiles of {tile} pixels; a single view "
                            "cannot be split into support and query pixels")
    order = torch.randperm(ty * tx, generator=gen)
    chosen = torch.zeros(ty * tx, dtype=torch.bool)
    chosen[order[: ty * tx // 2]] = True
    grid = chosen.reshape(ty, tx).repeat_interleave(tile, 0).repeat_interleave(tile, 1)[:height, :width]
    return grid, ~grid


class TaskSampler:
    """Draws light tasks from the frames: a random light, `support_views` of its views and the rest as query,
    or, for a light with one view, half of that view's tiles as support and the other half as query."""

    def __init__(self, frames: list[Frame], support_views: int = 1, query_views: int = 1, seed: int = 0) -> None:
        if not frames:
            raise MetatuneError("meta-learning needs at least one training frame")
        self.groups = group_by_light(frames)
        for group in self.groups:
            if len(group) == 1:
                cam = group[0].camera
                if math.prod(tile_grid(cam.height, cam.width)) < 2:
                    raise MetatuneError(f"frame {group[0].file_path!r} is the only view of its light and is "
                                        f"{cam.width}x{cam.height}: too small to split into {TILE}-pixel tiles")
        self.support_views, self.query_views = support_views, query_views
        self.rng = random.Random(seed)

    def split(self, group: list[Frame]) -> LightTask:
        if len(group) == 1:
            frame = group[0]
            gen = torch.Generator().manual_seed(self.rng.getrandbits(62))
            sup, qry = tile_halves(frame.camera.height, frame.camera.width, gen)
            dev = frame.image.device
            return LightTask(frame.light, [replace(frame, mask=sup.to(dev))], [replace(frame, mask=qry.to(dev))])
        views = self.rng.sample(group, len(group))
        k = min(self.support_views, len(group) - 1)
        return LightTask(group[0].light, views[:k], views[k:k + self.query_views])

    def __call__(self, n: int) -> list[LightTask]:
        return [self.split(self.rng.choice(self.groups)) for _ in range(n)]


def photometric_loss(pred: Tensor,  # [H, W, 3]
                     target: Tensor,  # [H, W, 3]
                     mask: Tensor | None = None,  # [H, W] bool: the pixels that count
                     ) -> Tensor:  # []
    """Mean absolute error plus a small squared term (sharper than L2, smoother than L1 near zero)."""
    diff = pred - target
    if mask is not None:
        diff = diff[mask]
    return diff.abs().mean() + diff.pow(2).mean()
