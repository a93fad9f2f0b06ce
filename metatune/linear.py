"""Matrix-free linear solves H w = b, with H given only through Hessian-vector products."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from metatune.errors import MetatuneError
from metatune.tree import axpy, dot

Vec = tuple[Tensor, ...]
Operator = Callable[[Vec], Vec]


def conjugate_gradient(hvp: Operator, b: Vec, *, steps: int = 200, tol: float = 1e-12) -> Vec:
    """Solve H w = b for symmetric positive definite H by conjugate gradient, from w = 0."""
    w = tuple(torch.zeros_like(bi) for bi in b)
    r, p = b, b
    rr = dot(r, r)
    stop = tol * tol * max(float(rr), 1e-300)
    for _ in range(steps):
        if float(rr) <= stop:
            break
        hp = hvp(p)
        php = dot(p, hp)
        if float(php) <= 0:
            raise MetatuneError(
                "implicit hypergradient: the inner Hessian is not positive definite at the solution "
                "(is the inner problem converged and locally convex?); try hypergrad='unroll'")
        alpha = rr / php
        w = axpy(alpha, p, w)
        r = axpy(-alpha, hp, r)
        rr_new = dot(r, r)
        p = axpy(rr_new / rr, p, r)
        rr = rr_new
    return w


def largest_eigenvalue(hvp: Operator, like: Vec, iters: int = 20) -> float:
    """Power-iteration estimate of the largest eigenvalue of H."""
    v = tuple(torch.randn_like(t) for t in like)
    lam = 1.0
    for _ in range(iters):
        n = float(dot(v, v).sqrt())
        v = tuple(t / n for t in v)
        hv = hvp(v)
        lam = float(dot(v, hv))
        v = hv
    return abs(lam)


def neumann(hvp: Operator, b: Vec, *, steps: int = 500, tol: float = 1e-12, alpha: float | None = None) -> Vec:
    """Solve H w = b by the Neumann series w = alpha * sum_j (I - alpha H)^j b."""
    if alpha is None:
        alpha = 1.0 / (1.05 * largest_eigenvalue(hvp, b))
    term = tuple(alpha * bi for bi in b)
    w = term
    scale = max(float(dot(w, w).sqrt()), 1e-300)
    for _ in range(steps):
        term = axpy(-alpha, hvp(term), term)
        w = tuple(wi + ti for wi, ti in zip(w, term))
        if float(dot(term, term).sqrt()) <= tol * scale:
            break
    return w


LINEAR_SOLVERS = {"cg": conjugate_gradient, "neumann": neumann}
