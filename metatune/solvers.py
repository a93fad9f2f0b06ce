"""Inner solvers written as pure update rules, so that a solve can be unrolled and differentiated."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from metatune.errors import MetatuneError
from metatune.tree import axpy, dot

Params = tuple[Tensor, ...]
Objective = Callable[[Params], Tensor]


def value_and_grad(f: Objective, x: Params, create_graph: bool) -> tuple[Tensor, Params]:
    """f(x) and its gradient; without `create_graph` the gradient carries no graph."""
    if not create_graph:
        x = tuple(t.detach().requires_grad_() for t in x)
    else:  # differentiate through the step: x keeps its graph, but must be differentiable itself
        x = tuple(t if t.requires_grad else t.detach().requires_grad_() for t in x)
    with torch.enable_grad():
        loss = f(x)
        grads = torch.autograd.grad(loss, x, create_graph=create_graph, allow_unused=True)
    grads = tuple(torch.zeros_like(t) if g is None else g for t, g in zip(x, grads))
    if not create_graph:
        loss, grads = loss.detach(), tuple(g.detach() for g in grads)
    return loss, grads


@dataclass
class StepResult:
    params: Params
    loss: Tensor  # loss at the parameters the step started from
    grad_norm: float


class GradientDescent:
    """x <- x - lr * grad f(x); `lr` may be a float or a tensor broadcastable to each parameter."""

    def __init__(self, f: Objective, lr: float | Tensor):
        self.f, self.lr = f, lr

    def init(self, x: Params) -> dict:
        return {}

    def step(self, x: Params, state: dict, create_graph: bool) -> StepResult:
        loss, g = value_and_grad(self.f, x, create_graph)
        new = tuple(xi - self.lr * gi for xi, gi in zip(x, g))
        return StepResult(new, loss, float(dot(g, g).detach().sqrt()))


class Adam:
    """Adam (Kingma and Ba) as a pure function of its moment estimates."""

    # lr: a float or a tensor broadcastable to each parameter, as for GradientDescent (solve passes either)
    def __init__(self, f: Objective, lr: float | Tensor, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.f, self.lr, self.betas, self.eps = f, lr, betas, eps

    def init(self, x: Params) -> dict:
        return {"m": tuple(torch.zeros_like(t) for t in x), "v": tuple(torch.zeros_like(t) for t in x), "k": 0}

    def step(self, x: Params, state: dict, create_graph: bool) -> StepResult:
        b1, b2 = self.betas
        loss, g = value_and_grad(self.f, x, create_graph)
        k = state["k"] + 1
        m = tuple(b1 * mi + (1 - b1) * gi for mi, gi in zip(state["m"], g))
        v = tuple(b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(state["v"], g))
        c1, c2 = 1 - b1**k, 1 - b2**k
        # sqrt(v) has an infinite derivative at 0: add eps inside so unrolled gradients stay finite.
        new = tuple(xi - self.lr * (mi / c1) / (torch.sqrt(vi / c2 + self.eps**2) + self.eps)
                    for xi, mi, vi in zip(x, m, v))
        state.update(m=m, v=v, k=k)
        return StepResult(new, loss, float(dot(g, g).detach().sqrt()))


@dataclass
class _LbfgsMemory:
    s: list[Params] = field(default_factory=list)
    y: list[Params] = field(default_factory=list)
    prev_x: Params | None = None
    prev_g: Params | None = None


class LBFGS:
    """L-BFGS: two-loop recursion with a backtracking (Armijo) line search on the detached objective."""

    # lr: the initial step length, a float or a 0-d tensor (one length for all parameters)
    def __init__(self, f: Objective, lr: float | Tensor = 1.0, history: int = 10, max_backtracks: int = 20):
        self.f, self.lr, self.history, self.max_backtracks = f, lr, history, max_backtracks

    def init(self, x: Params) -> dict:
        return {"mem": _LbfgsMemory()}

    def _direction(self, g: Params, mem: _LbfgsMemory) -> Params:
        q, alphas = g, []
        for s, y in reversed(list(zip(mem.s, mem.y))):
            rho = 1.0 / dot(y, s)
            a = rho * dot(s, q)
            q = axpy(-a, y, q)
            alphas.append((rho, a))
        if mem.s:
            gamma = dot(mem.s[-1], mem.y[-1]) / dot(mem.y[-1], mem.y[-1])
            q = tuple(gamma * qi for qi in q)
        for (s, y), (rho, a) in zip(zip(mem.s, mem.y), reversed(alphas)):
            b = rho * dot(y, q)
            q = axpy(a - b, s, q)
        return tuple(-qi for qi in q)

    def step(self, x: Params, state: dict, create_graph: bool) -> StepResult:
        mem: _LbfgsMemory = state["mem"]
        loss, g = value_and_grad(self.f, x, create_graph)
        if mem.prev_x is not None:
            assert mem.prev_g is not None  # prev_x and prev_g are set together, at the end of each step
            s = tuple(a - b for a, b in zip(x, mem.prev_x))
            y = tuple(a - b for a, b in zip(g, mem.prev_g))
            if float(dot(s, y).detach()) > 1e-12:  # keep the curvature pair only if it is positive
                mem.s.append(s)
                mem.y.append(y)
                if len(mem.s) > self.history:
                    mem.s.pop(0), mem.y.pop(0)
        d = self._direction(g, mem)
        slope = float(dot(g, d).detach())
        if slope >= 0:  # not a descent direction: fall back to steepest descent
            d, slope = tuple(-gi for gi in g), -float(dot(g, g).detach())
        # The step length is chosen on detached values: it is a discrete choice, not a differentiable one.
        t = self.lr if mem.s else min(self.lr, 1.0 / max(float(dot(g, g).detach().sqrt()), 1e-12))
        f0 = float(loss.detach())
        with torch.no_grad():
            xd, dd = tuple(xi.detach() for xi in x), tuple(di.detach() for di in d)
            for _ in range(self.max_backtracks):
                if float(self.f(axpy(t, dd, xd))) <= f0 + 1e-4 * t * slope:
                    break
                t *= 0.5
        mem.prev_x, mem.prev_g = x, g
        return StepResult(axpy(t, d, x), loss, float(dot(g, g).detach().sqrt()))


class GaussNewton:
    """Gauss-Newton on residuals r(x): solves (J^T J + damping I) dx = -J^T r each step."""

    # lr: a float or a 0-d tensor (it scales the flattened step)
    def __init__(self, residual: Objective, lr: float | Tensor = 1.0, damping: float = 1e-10):
        self.residual, self.lr, self.damping = residual, lr, damping

    def init(self, x: Params) -> dict:
        return {}

    def step(self, x: Params, state: dict, create_graph: bool) -> StepResult:
        shapes = [t.shape for t in x]
        sizes = [t.numel() for t in x]

        def r_flat(z: Tensor) -> Tensor:
            parts = torch.split(z, sizes)
            return self.residual(tuple(p.reshape(s) for p, s in zip(parts, shapes))).reshape(-1)

        z = torch.cat([t.reshape(-1) for t in x])
        if not create_graph:
            z = z.detach()
        with torch.enable_grad():
            r = r_flat(z)
            jac = torch.autograd.functional.jacobian(r_flat, z, create_graph=create_graph, vectorize=True)
        jtj = jac.T @ jac
        jtr = jac.T @ r
        eye = torch.eye(z.numel(), dtype=z.dtype, device=z.device)
        try:
            dz = torch.linalg.solve(jtj + self.damping * eye, -jtr)
        except torch.linalg.LinAlgError as err:
            raise MetatuneError("Gauss-Newton: J^T J is singular (do the residuals ignore some parameters?); "
                                "pass a larger damping=") from err
        new = torch.split(z + self.lr * dz, sizes)
        new = tuple(p.reshape(s) for p, s in zip(new, shapes))
        if not create_graph:
            new = tuple(t.detach() for t in new)
        loss = 0.5 * (r * r).sum()
        return StepResult(new, loss if create_graph else loss.detach(), float(jtr.detach().norm()))


SOLVERS = ("gd", "adam", "lbfgs", "gauss_newton")


def make_solver(name: str, objective: Objective, residual: Objective, lr: float | Tensor, opts: dict):
    """Build the named solver; `residual` is used by Gauss-Newton, `objective` by the others."""
    if name == "gd":
        return GradientDescent(objective, lr, **opts)
    if name == "adam":
        return Adam(objective, lr, **opts)
    if name == "lbfgs":
        return LBFGS(objective, lr, **opts)
    if name == "gauss_newton":
        return GaussNewton(residual, lr, **opts)
    raise MetatuneError(f"unknown solver {name!r}; choose one of {SOLVERS}")
