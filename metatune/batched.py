"""A meta-batch of tasks adapted in one batched computation: `torch.func.vmap` over stacked tasks, the inner
steps taken with `torch.func.grad`.

The same update rule as `adaptation.inner_adapt` without curvature (MAML, first-order MAML, Meta-SGD):
x <- x - lr * grad_x inner(x, task), from the start `start(task)`. Ordinary autograd differentiates the
batched result, second order included (the inner gradients stay differentiable unless `first_order`).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from metatune.adaptation import trust_region

Params = tuple[Tensor, ...]


def stack_tasks(tasks: Sequence[Any]) -> Tensor | tuple[Tensor, ...] | None:
    """The tasks stacked along a new first dimension, if they are tensors (or equal-structure tuples of
    tensors) of one shape each; None when they cannot be stacked (then the tasks are adapted one by one)."""
    first = tasks[0]
    if isinstance(first, Tensor):
        if all(isinstance(t, Tensor) and t.shape == first.shape and t.dtype == first.dtype for t in tasks):
            return torch.stack(list(tasks))
        return None
    if isinstance(first, tuple) and first and all(isinstance(x, Tensor) for x in first):
        if all(isinstance(t, tuple) and len(t) == len(first)
               and all(isinstance(a, Tensor) and a.shape == b.shape for a, b in zip(t, first)) for t in tasks):
            return tuple(torch.stack([t[i] for t in tasks]) for i in range(len(first)))
    return None


def batched_adapt_and_score(
    start: Callable[[Any], Params],
    inner: Callable[[Params, Any], Tensor],
    outer: Callable[[Params, Any], Tensor],
    tasks: Tensor | tuple[Tensor, ...],  # stacked: [T, ...] (or a tuple of such)
    steps: int,
    lrs: Params,
    first_order: bool,
    max_step: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Adapt every task `steps` times and score it: (outer loss [T], inner loss before [T], inner loss after [T]).
    `max_step`: the trust region of inner_adapt (adaptation.trust_region)."""
    def one(task: Any) -> tuple[Tensor, Tensor, Tensor]:
        x = start(task)
        first = None
        for _ in range(steps):
            g, value = torch.func.grad_and_value(lambda p: inner(p, task))(x)
            if first is None:
                first = value
            if first_order:
                g = tuple(gi.detach() for gi in g)
            x = tuple(xi - trust_region(lr * gi, max_step) for xi, lr, gi in zip(x, lrs, g))
        last = inner(x, task)
        return outer(x, task), (last if first is None else first).detach(), last.detach()

    return torch.func.vmap(one, randomness="error")(tasks)
