"""Tensors-or-tuples: the engine accepts a Tensor or a tuple of Tensors wherever it takes parameters."""
from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

from metatune.errors import MetatuneError

Tensors = Union[Tensor, tuple[Tensor, ...]]


def flatten(x: Tensors, name: str) -> tuple[tuple[Tensor, ...], bool]:
    """Return `x` as a tuple of tensors and whether it was a single tensor; reject anything else."""
    if isinstance(x, Tensor):
        return (x,), True
    if isinstance(x, (tuple, list)) and len(x) > 0 and all(isinstance(t, Tensor) for t in x):
        return tuple(x), False
    raise MetatuneError(f"{name} must be a Tensor or a non-empty tuple of Tensors, got {type(x).__name__}")


def unflatten(ts: tuple[Tensor, ...], single: bool) -> Tensors:
    """Inverse of `flatten`."""
    return ts[0] if single else tuple(ts)


def dot(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> Tensor:
    """Inner product of two tuples of same-shaped tensors."""
    total = sum((x * y).sum() for x, y in zip(a, b))
    # sum() returns its start 0 only for empty tuples, and the engine's tuples are never empty (flatten refuses them)
    assert isinstance(total, Tensor)
    return total


def axpy(alpha: Tensor | float, x: tuple[Tensor, ...], y: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """alpha * x + y, elementwise over the tuple."""
    return tuple(alpha * xi + yi for xi, yi in zip(x, y))


def all_finite(ts: tuple[Tensor, ...]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in ts)
