"""`solve_least_squares`: nonlinear least squares through theseus, differentiable in the hyperparameters."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from metatune.errors import MetatuneError
from metatune.tree import Tensors, flatten, unflatten

BACKWARDS = ("implicit", "unroll", "truncated", "dlm")
OPTIMIZERS = ("gauss_newton", "levenberg_marquardt")


def solve_least_squares(
    residual_fn: Callable[[Tensors, Tensors], Tensor],
    init: Tensors,
    hparams: Tensors,
    *,
    backward: str = "implicit",
    optimizer: str = "gauss_newton",
    steps: int = 20,
    step_size: float = 1.0,
    truncate: int = 5,
    dlm_epsilon: float = 1e-4,
    tol: float = 1e-10,
) -> Tensors:
    """Minimise 0.5 |residual_fn(params, hparams)|^2 with theseus and return params differentiable in hparams.

    Tensors are `[n]` (one problem) or `[B, n]` (a batch of B problems; residuals then `[B, m]`).
    backward: theseus's "implicit", "unroll", "truncated" (last `truncate` iterations) or "dlm".
    """
    import theseus as th  # imported here: theseus is slow to import and only this function needs it

    if backward not in BACKWARDS:
        raise MetatuneError(f"unknown backward mode {backward!r}; choose one of {BACKWARDS}")
    if optimizer not in OPTIMIZERS:
        raise MetatuneError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    x0, x_single = flatten(init, "init")
    h, h_single = flatten(hparams, "hparams")
    batched = x0[0].dim() == 2
    if any(t.dim() != (2 if batched else 1) for t in x0):
        raise MetatuneError(f"init tensors must all be [n] or all be [B, n]; got shapes {[tuple(t.shape) for t in x0]}")

    if batched and any(t.dim() == 0 or t.shape[0] != x0[0].shape[0] for t in h):
        raise MetatuneError("with batched init [B, n], every hparam must have the same leading batch size B")
    # theseus variables carry a batch dimension: unbatched tensors get one of size 1 (flattened),
    # and residual_fn always sees the caller's original shapes.
    h_shapes = [t.shape for t in h]
    xb = tuple(t if batched else t.unsqueeze(0) for t in x0)
    hb = tuple(t if batched else t.reshape(1, -1) for t in h)

    def user(xs: tuple[Tensor, ...], hs: tuple[Tensor, ...]) -> Tensor:
        if not batched:
            xs = tuple(t[0] for t in xs)
            hs = tuple(t[0].reshape(s) for t, s in zip(hs, h_shapes))
        try:
            r = residual_fn(unflatten(xs, x_single), unflatten(hs, h_single))
        except (RuntimeError, IndexError, TypeError) as err:
            raise MetatuneError(f"residual_fn failed (shape mismatch?): {err}") from err
        return r if batched else r.unsqueeze(0)

    r0 = user(xb, hb)
    if r0.dim() != 2:
        raise MetatuneError(f"residual_fn must return [m] (or [B, m] when batched), got {tuple(r0.shape)}")
    dtype = xb[0].dtype
    optim_vars = [th.Vector(tensor=t.detach().clone(), name=f"x{i}") for i, t in enumerate(xb)]
    aux_vars = [th.Variable(tensor=t, name=f"h{i}") for i, t in enumerate(hb)]

    def err_fn(optim_vars: list, aux_vars: list) -> Tensor:
        return user(tuple(v.tensor for v in optim_vars), tuple(a.tensor for a in aux_vars))

    cost = th.AutoDiffCostFunction(optim_vars, err_fn, r0.shape[1], aux_vars=aux_vars, name="residual",
                                   cost_weight=th.ScaleCostWeight(torch.ones((), dtype=dtype)))
    objective = th.Objective(dtype=dtype)
    objective.add(cost)
    cls = th.GaussNewton if optimizer == "gauss_newton" else th.LevenbergMarquardt
    layer = th.TheseusLayer(cls(objective, max_iterations=steps, step_size=step_size,
                                abs_err_tolerance=tol, rel_err_tolerance=tol))
    kwargs: dict = {"backward_mode": backward, "verbose": False}
    if backward == "truncated":
        kwargs["backward_num_iterations"] = min(truncate, steps)
    if backward == "dlm":
        kwargs["dlm_epsilon"] = float(dlm_epsilon)
    inputs = {f"x{i}": t.detach() for i, t in enumerate(xb)} | {f"h{i}": t for i, t in enumerate(hb)}
    values, _ = layer.forward(inputs, optimizer_kwargs=kwargs)
    out = tuple(values[f"x{i}"] for i in range(len(xb)))
    if not all(bool(torch.isfinite(t).all()) for t in out):
        raise MetatuneError("solve_least_squares: theseus returned non-finite values")
    return unflatten(tuple(t if batched else t[0] for t in out), x_single)
