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


def _inner_gradient(f: Callable[[Params, Params], Tensor], x: Params, h: Params) -> Params:
    """grad_x f(x, h), kept differentiable (for Hessian-vector products and mixed second derivatives)."""
    return torch.autograd.grad(f(x, h), x, create_graph=True)


def _hvp_of(g: Params, x: Params) -> Callable[[Params], Params]:
    def hvp(v: Params) -> Params:
        out = torch.autograd.grad(g, x, v, retain_graph=True, allow_unused=True)
        return tuple(torch.zeros_like(xi) if o is None else o for xi, o in zip(x, out))
    return hvp


def _checked(w: Params) -> Params:
    if not all(bool(torch.isfinite(t).all()) for t in w):
        raise MetatuneError("implicit hypergradient: the linear solve produced non-finite values")
    return w


class _HessianSolve(torch.autograd.Function):
    """w = H(x, h)^{-1} b, differentiable in x, h and b: the piece that makes the implicit hypergradient
    itself differentiable (double backward). dw = H^{-1} (db - dH w), so for an incoming u' the gradients
    are u = H^{-1} u' for b and -d/d(x, h) [u^T H(x, h) w] for x and h (H is symmetric)."""

    @staticmethod
    def forward(ctx, f, n: int, m: int, linear_solver: str, linear_opts: dict, *tensors: Tensor):
        x = tuple(t.detach().requires_grad_() for t in tensors[:n])
        h = tuple(t.detach().requires_grad_() for t in tensors[n:n + m])
        with torch.enable_grad():
            w = _checked(LINEAR_SOLVERS[linear_solver](_hvp_of(_inner_gradient(f, x, h), x),
                                                       tuple(t.detach() for t in tensors[n + m:]), **linear_opts))
        ctx.f, ctx.n, ctx.m, ctx.linear_solver, ctx.linear_opts = f, n, m, linear_solver, linear_opts
        ctx.save_for_backward(*tensors[:n + m], *w)
        return tuple(t.detach() for t in w)

    @staticmethod
    def backward(ctx, *grad_w: Tensor):
        n, m = ctx.n, ctx.m
        saved = ctx.saved_tensors
        x = tuple(t.detach().requires_grad_() for t in saved[:n])
        h = tuple(t.detach().requires_grad_() for t in saved[n:n + m])
        w = tuple(t.detach() for t in saved[n + m:])
        with torch.enable_grad():
            g = _inner_gradient(ctx.f, x, h)
            u = _checked(LINEAR_SOLVERS[ctx.linear_solver](_hvp_of(g, x), tuple(grad_w), **ctx.linear_opts))
            hw = torch.autograd.grad(g, x, w, create_graph=True)
            uhw = torch.stack([(ui * hi).sum() for ui, hi in zip(u, hw)]).sum()
            gxh = torch.autograd.grad(uhw, (*x, *h), allow_unused=True)
        gxh = tuple(None if gi is None else -gi for gi in gxh)
        return (None, None, None, None, None, *gxh, *u)


def _hypergradient(f, x: Params, h: Params, v: Params, linear_solver: str, linear_opts: dict,
                   create_graph: bool) -> Params:
    """-(d^2 f / dh dx) H^{-1} v at (x, h), the derivative of x*(h) applied to v (zeros where h is unused)."""
    g = _inner_gradient(f, x, h)
    if create_graph:
        w = _HessianSolve.apply(f, len(x), len(h), linear_solver, linear_opts, *x, *h, *v)
    else:
        w = _checked(LINEAR_SOLVERS[linear_solver](_hvp_of(g, x), tuple(v), **linear_opts))
    gh = torch.autograd.grad(g, h, w, allow_unused=True, create_graph=create_graph)
    return tuple(torch.zeros_like(hi) if gi is None else -gi for hi, gi in zip(h, gh))


class _Hypergradient(torch.autograd.Function):
    """The implicit hypergradient as a differentiable function of (x*, h, v): what a double backward
    (create_graph=True) differentiates. Taking x* as an input (not a constant) routes the second derivative
    through x*(h) too, by the solution's own implicit rule."""

    @staticmethod
    def forward(ctx, f, n: int, m: int, linear_solver: str, linear_opts: dict, *tensors: Tensor):
        ctx.f, ctx.n, ctx.m, ctx.linear_solver, ctx.linear_opts = f, n, m, linear_solver, linear_opts
        ctx.save_for_backward(*tensors)
        x = tuple(t.detach().requires_grad_() for t in tensors[:n])
        h = tuple(t.detach().requires_grad_() for t in tensors[n:n + m])
        with torch.enable_grad():
            gh = _hypergradient(f, x, h, tuple(t.detach() for t in tensors[n + m:]), linear_solver, linear_opts,
                                create_graph=False)
        return tuple(t.detach() for t in gh)

    @staticmethod
    def backward(ctx, *grad_gh: Tensor):
        n, m = ctx.n, ctx.m
        leaves = tuple(t.detach().requires_grad_() for t in ctx.saved_tensors)
        x, h, v = leaves[:n], leaves[n:n + m], leaves[n + m:]
        with torch.enable_grad():
            gh = _hypergradient(ctx.f, x, h, v, ctx.linear_solver, ctx.linear_opts, create_graph=True)
            grads = torch.autograd.grad(gh, leaves, grad_gh, allow_unused=True)
        return (None, None, None, None, None, *grads)


class _ImplicitSolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, n: int, linear_solver: str, linear_opts: dict, *tensors: Tensor):
        ctx.f, ctx.n, ctx.linear_solver, ctx.linear_opts = f, n, linear_solver, linear_opts
        out = tuple(t.detach().clone() for t in tensors[:n])
        ctx.save_for_backward(*out, *tensors[n:])  # the solution as this function's output: see _Hypergradient
        return out

    @staticmethod
    def backward(ctx, *grad_x: Tensor):
        saved, n = ctx.saved_tensors, ctx.n
        if torch.is_grad_enabled():  # create_graph=True: a hypergradient that can itself be differentiated
            gh = _Hypergradient.apply(ctx.f, n, len(saved) - n, ctx.linear_solver, ctx.linear_opts, *saved,
                                      *grad_x)
        else:
            x = tuple(t.detach().requires_grad_() for t in saved[:n])
            h = tuple(t.detach().requires_grad_() for t in saved[n:])
            with torch.enable_grad():
                gh = _hypergradient(ctx.f, x, h, grad_x, ctx.linear_solver, ctx.linear_opts, create_graph=False)
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
