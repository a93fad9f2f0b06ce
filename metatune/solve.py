"""`solve`: minimise an inner objective and return a solution differentiable in the hyperparameters."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, TypeVar, overload

import torch
from torch import Tensor

from metatune.errors import MetatuneError, refuse_func_transforms
from metatune.implicit import implicit_solution
from metatune.solvers import SOLVERS, make_solver
from metatune.tree import Tensors, all_finite, flatten, unflatten

HYPERGRADS = ("unroll", "truncated", "implicit", "none")
# For the overloads: the solution has the structure of `init` (a Tensor or a tuple), and inner_loss is called
# with the structures of init and hparams (None without hparams).
P = TypeVar("P", Tensor, tuple[Tensor, ...])
H = TypeVar("H", Tensor, tuple[Tensor, ...], None)


@dataclass
class SolveInfo:
    steps: int          # inner iterations taken
    loss: float         # inner objective at the solution
    grad_norm: float    # gradient norm at the last iteration (residual J^T r for Gauss-Newton)


def _checked_call(fn: Callable, x: Tensors, h: Tensors | None, residual: bool) -> Tensor:
    try:
        out = fn(x, h)
    except (RuntimeError, IndexError, TypeError) as err:
        raise MetatuneError(f"inner_loss failed on the given init/hparams (shape mismatch?): {err}") from err
    if not isinstance(out, Tensor):
        raise MetatuneError(f"inner_loss must return a Tensor, got {type(out).__name__}")
    if residual and out.dim() != 1:
        raise MetatuneError(f"for solver='gauss_newton' inner_loss must return a residual vector, got shape {tuple(out.shape)}")
    if not residual and out.numel() != 1:
        raise MetatuneError(f"inner_loss must return a scalar, got shape {tuple(out.shape)}"
                            " (use solver='gauss_newton' for residual vectors)")
    return out


@overload
def solve(
    inner_loss: Callable[[P, H], Tensor],
    init: P,
    hparams: H,
    *,
    solver: str = ...,
    steps: int = ...,
    lr: float | Tensor = ...,
    tol: float = ...,
    hypergrad: str = ...,
    truncate: int = ...,
    linear_solver: str = ...,
    linear_steps: int = ...,
    linear_tol: float = ...,
    return_info: Literal[False] = ...,
    **opts: Any,
) -> P: ...


@overload
def solve(
    inner_loss: Callable[[P, H], Tensor],
    init: P,
    hparams: H,
    *,
    solver: str = ...,
    steps: int = ...,
    lr: float | Tensor = ...,
    tol: float = ...,
    hypergrad: str = ...,
    truncate: int = ...,
    linear_solver: str = ...,
    linear_steps: int = ...,
    linear_tol: float = ...,
    return_info: Literal[True],
    **opts: Any,
) -> tuple[P, SolveInfo]: ...


@overload
def solve(
    inner_loss: Callable[[P, H], Tensor],
    init: P,
    hparams: H,
    *,
    solver: str = ...,
    steps: int = ...,
    lr: float | Tensor = ...,
    tol: float = ...,
    hypergrad: str = ...,
    truncate: int = ...,
    linear_solver: str = ...,
    linear_steps: int = ...,
    linear_tol: float = ...,
    return_info: bool,
    **opts: Any,
) -> P | tuple[P, SolveInfo]: ...


def solve(
    inner_loss: Callable[[Any, Any], Tensor],
    init: Tensors,
    hparams: Tensors | None,
    *,
    solver: str = "gd",
    steps: int = 100,
    lr: float | Tensor = 0.1,
    tol: float = 0.0,
    hypergrad: str = "implicit",
    truncate: int = 10,
    linear_solver: str = "cg",
    linear_steps: int = 200,
    linear_tol: float = 1e-12,
    return_info: bool = False,
    **opts: Any,
) -> Tensors | tuple[Tensors, SolveInfo]:
    """Minimise `inner_loss(params, hparams)` over params from `init`; the result is differentiable in `hparams`.

    hypergrad: "unroll" (backprop through every step; also reaches `init`), "truncated" (through the last
    `truncate` steps), "implicit" (implicit function theorem, `linear_solver` "cg" or "neumann" on
    Hessian-vector products; exact at a converged minimum), "none" (detached).
    solver: "gd", "adam", "lbfgs", or "gauss_newton" (then inner_loss returns residuals r, loss = 0.5 |r|^2).
    Stops early when the gradient norm falls below `tol`. `hparams=None`: plain minimisation (inner_loss gets None).
    """
    if hypergrad not in HYPERGRADS:
        raise MetatuneError(f"unknown hypergrad mode {hypergrad!r}; choose one of {HYPERGRADS}")
    refuse_func_transforms("solve", "Differentiate it with torch.autograd.grad (create_graph=True for second "
                           "order), which the unroll, truncated and implicit modes support.")
    if solver not in SOLVERS:
        raise MetatuneError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
    if steps < 1:
        raise MetatuneError(f"steps must be >= 1, got {steps}")
    if hypergrad == "truncated" and not 1 <= truncate:
        raise MetatuneError(f"truncate must be >= 1, got {truncate}")
    x0, x_single = flatten(init, "init")
    h, h_single = flatten(hparams, "hparams") if hparams is not None else ((), False)
    residual_form = solver == "gauss_newton"

    def raw(x: tuple[Tensor, ...], hh: tuple[Tensor, ...]) -> Tensor:
        return _checked_call(inner_loss, unflatten(x, x_single), unflatten(hh, h_single) if hh else None,
                             residual_form)

    def scalar(x: tuple[Tensor, ...], hh: tuple[Tensor, ...]) -> Tensor:
        out = raw(x, hh)
        return 0.5 * (out * out).sum() if residual_form else out.reshape(())

    def run(x: tuple[Tensor, ...], hh: tuple[Tensor, ...], n: int, create_graph: bool, k0: int):
        inner = make_solver(solver, lambda z: scalar(z, hh), lambda z: raw(z, hh), lr, dict(opts))
        state = inner.init(x)
        loss, gnorm, k = torch.tensor(float("nan")), float("nan"), 0
        for k in range(n):
            res = inner.step(x, state, create_graph)
            if not (bool(torch.isfinite(res.loss).all()) and all_finite(res.params)):
                raise MetatuneError(f"inner solve ({solver}) produced NaN/Inf at iteration {k0 + k}; "
                                    "lower lr or check inner_loss")
            x, loss, gnorm = res.params, res.loss, res.grad_norm
            if gnorm < tol:
                break
        return x, loss, gnorm, k + 1

    detached_h = tuple(t.detach() for t in h)
    if hypergrad == "unroll":
        x, loss, gnorm, n = run(x0, h, steps, True, 0)
    elif hypergrad == "truncated":
        n_free = max(steps - truncate, 0)
        x, n = x0, 0
        if n_free:
            x, _, _, n = run(tuple(t.detach() for t in x0), detached_h, n_free, False, 0)
        x, loss, gnorm, n2 = run(x, h, steps - n_free, True, n)
        n += n2
    else:
        x, loss, gnorm, n = run(tuple(t.detach() for t in x0), detached_h, steps, False, 0)
        if hypergrad == "implicit" and h:
            x = implicit_solution(scalar, x, h, linear_solver,
                                  {"steps": linear_steps, "tol": linear_tol})
        else:
            x = tuple(t.detach() for t in x)
    result = unflatten(tuple(x), x_single)
    if return_info:
        return result, SolveInfo(steps=n, loss=float(loss.detach()), grad_norm=gnorm)
    return result
