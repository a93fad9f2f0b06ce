"""Implicit differentiation of a minimiser: x*(h) with grad_x f(x*, h) = 0, by the implicit function theorem.

d x*/d h = -H^{-1} d^2 f / (dx dh), so for an incoming gradient v the hyperparameter gradient is
-(d^2 f / dh dx) w with H w = v, computed with Hessian-vector products only.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from metatune.errors import MetatuneError
from metatune.linear import LINEAR_SOLVERS

Params = tuple[Tensor, ...]


class _ImplicitSolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, n: int, linear_solver: str, linear_opts: dict, *tensors: Tensor):
        ctx.f, ctx.n, ctx.linear_solver, ctx.linear_opts = f, n, linear_solver, linear_opts
        ctx.save_for_backward(*tensors)
        return tuple(t.detach().clone() for t in tensors[:n])

    @staticmethod
    def backward(ctx, *grad_x: Tensor):
        saved = ctx.saved_tensors
        x = tuple(t.detach().requires_grad_() for t in saved[: ctx.n])
        h = tuple(t.detach().requires_grad_() for t in saved[ctx.n:])
        with torch.enable_grad():
            loss = ctx.f(x, h)
            g = torch.autograd.grad(loss, x, create_graph=True)

            def hvp(v: Params) -> Params:
                out = torch.autograd.grad(g, x, v, retain_graph=True, allow_unused=True)
                return tuple(torch.zeros_like(xi) if o is None else o for xi, o in zip(x, out))

            w = LINEAR_SOLVERS[ctx.linear_solver](hvp, tuple(grad_x), **ctx.linear_opts)
            if not all(bool(torch.isfinite(t).all()) for t in w):
                raise MetatuneError("implicit hypergradient: the linear solve produced non-finite values")
            gh = torch.autograd.grad(g, h, w, allow_unused=True)
        gh = tuple(None if gi is None else -gi for gi in gh)
        return (None, None, None, None, *([None] * ctx.n), *gh)


def implicit_solution(
    f: Callable[[Params, Params], Tensor],
    x_star: Params,
    hparams: Params,
    linear_solver: str = "cg",
    linear_opts: dict | None = None,
) -> Params:
    """Return x_star unchanged in value, with gradients to `hparams` given by the implicit function theorem.

    `f(x, h)` is the scalar inner objective whose minimiser (in x) is `x_star`.
    """
    if linear_solver not in LINEAR_SOLVERS:
        raise MetatuneError(f"unknown linear_solver {linear_solver!r}; choose one of {sorted(LINEAR_SOLVERS)}")
    out = _ImplicitSolution.apply(f, len(x_star), linear_solver, linear_opts or {},
                                  *(t.detach() for t in x_star), *hparams)
    return tuple(out)
