"""Inner-loop update rules of meta-learning: plain (MAML), per-parameter step sizes (Meta-SGD), and
uncertainty-aware steps scaled by a diagonal Laplace variance, with collapsed parameters frozen."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from metatune.errors import MetatuneError
from metatune.tree import Tensors

Params = tuple[Tensor, ...]


@dataclass
class Adapted:
    # inner_adapt returns tuples; MetaTuner.adapt gives params and std back in its init's structure (a Tensor
    # for a Tensor init), hence Tensors
    params: Tensors           # adapted parameters (same structure and shapes as the start)
    std: Tensors | None       # per-parameter posterior std (uncertainty mode), else None
    frozen: Params | None     # bool masks of parameters frozen because their std collapsed
    losses: list[float]       # inner loss before each step and after the last
    # with record=True: each step taken as (x_k, g_k, f_k), x_{k+1} = x_k - f_k * trust_region(lr * g_k), f_k the
    # backtracking factor; x_0 is the start itself (with its graph), the rest detached
    trace: list[tuple[Params, Params, float]] | None = None


def _rademacher(t: Tensor, generator: torch.Generator | None) -> Tensor:
    z = torch.randint(0, 2, t.shape, generator=generator, dtype=t.dtype, device="cpu" if generator else t.device)
    return (z * 2 - 1).to(t.device)


def _hutchinson_diag(g: Params, x: Params, samples: int, generator: torch.Generator | None) -> Params:
    """Unbiased estimate of diag(d^2 f / dx^2) from Rademacher probes z: E[z * (H z)]."""
    acc = [torch.zeros_like(t) for t in x]
    for _ in range(samples):
        z = tuple(_rademacher(t, generator) for t in x)
        hz = torch.autograd.grad(g, x, z, retain_graph=True, allow_unused=True)
        for i, (zi, hi) in enumerate(zip(z, hz)):
            if hi is not None:
                acc[i] += zi * hi.detach()
    return tuple(a / samples for a in acc)


def trust_region(step: Tensor, max_step: float | None) -> Tensor:
    """The update `step` held to max_step per element, smoothly: max_step * tanh(step / max_step)."""
    return step if max_step is None else max_step * torch.tanh(step / max_step)


def trust_region_slope(step: Tensor, max_step: float | None) -> Tensor:
    """d trust_region(step) / d step, elementwise."""
    return torch.ones_like(step) if max_step is None else 1 - torch.tanh(step / max_step) ** 2


def inner_adapt(
    loss_fn: Callable[[Params], Tensor],
    start: Params,
    steps: int,
    lrs: Params,
    *,
    create_graph: bool,
    prior_var: Params | None = None,
    freeze_ratio: float = 0.0,
    probes: int = 1,
    curvature_decay: float = 0.5,
    generator: torch.Generator | None = None,
    max_step: float | None = None,
    backtrack: int = 0,
    record: bool = False,
) -> Adapted:
    """Run `steps` updates x <- x - lr * s * grad, where s = 1 (no `prior_var`) or the uncertainty scaling.

    With `prior_var`, the posterior precision is prior precision plus a running diagonal curvature
    estimate; each step is scaled by posterior / prior variance (a diagonal Newton-like damping), and
    a parameter whose std falls below `freeze_ratio` times its prior std is frozen from then on.
    The curvature probes draw from `generator` (a CPU generator; None: the global one).
    `max_step`: a trust region; each element's update d becomes max_step * tanh(d / max_step), so no step
    moves a parameter by more than max_step (smooth, so step sizes keep their meta-gradient).
    `backtrack`: where the loss after a step fails (a MetatuneError, e.g. a diverging rollout) or is not
    finite, the step is halved and retried, at most this many times.
    `record`: keep each step's point, gradient and backtracking factor in `Adapted.trace` (for
    `second_order_meta_gradient`; not with `prior_var`).
    """
    if record and prior_var is not None:
        raise MetatuneError("record=True traces plain and per-parameter steps only, not uncertainty-scaled ones")
    with torch.enable_grad():  # adaptation needs gradients even when the caller is under no_grad
        return _inner_adapt(loss_fn, start, steps, lrs, create_graph, prior_var, freeze_ratio, probes,
                            curvature_decay, generator, max_step, backtrack, record)


def _inner_adapt(loss_fn: Callable[[Params], Tensor], start: Params, steps: int, lrs: Params, create_graph: bool,
                 prior_var: Params | None, freeze_ratio: float, probes: int, curvature_decay: float,
                 generator: torch.Generator | None, max_step: float | None, backtrack: int, record: bool) -> Adapted:
    x = tuple(t if t.requires_grad else t.detach().requires_grad_() for t in start)
    uncertain = prior_var is not None
    curv = ema = tuple(torch.zeros_like(t.detach()) for t in x)
    frozen = tuple(torch.zeros_like(t, dtype=torch.bool) for t in x)
    losses: list[float] = []
    previous: tuple[Params, Params] | None = None  # (x before the last step, the step)
    trace: list[tuple[Params, Params, float]] = []
    for k in range(steps + 1):
        for attempt in range(backtrack + 1):
            try:
                loss = loss_fn(x)
                if loss.numel() != 1:
                    raise MetatuneError(f"inner loss must be a scalar, got shape {tuple(loss.shape)}")
                if not bool(torch.isfinite(loss)):
                    raise MetatuneError(f"inner loss is not finite at adaptation step {k}; lower the step size")
                break
            except MetatuneError:
                if previous is None or attempt == backtrack:
                    raise
                x_prev, d = previous  # backtrack: half the last step
                d = tuple(di / 2 for di in d)
                previous = (x_prev, d)
                x = tuple(xi - di for xi, di in zip(x_prev, d))
        if trace:  # the last step's backtracking factor
            x_k, g_k, _ = trace[-1]
            trace[-1] = (x_k, g_k, 0.5 ** attempt)
        losses.append(float(loss.detach()))
        if k == steps:
            break
        need_graph = create_graph or uncertain
        g = torch.autograd.grad(loss, x, create_graph=need_graph, allow_unused=True)
        g = tuple(torch.zeros_like(t) if gi is None else gi for t, gi in zip(x, g))
        if uncertain:
            d = _hutchinson_diag(g, x, probes, generator)
            ema = tuple(curvature_decay * c + (1 - curvature_decay) * di.clamp_min(0) for c, di in zip(ema, d))
            curv = tuple(e / (1 - curvature_decay ** (k + 1)) for e in ema)  # bias-corrected running mean
        if not create_graph:
            g = tuple(gi.detach() for gi in g)
        if prior_var is not None:  # i.e. uncertain; spelled out so that the type narrows
            scale = tuple(1.0 / (1.0 + pv * c) for pv, c in zip(prior_var, curv))  # posterior var / prior var
            frozen = tuple(f | (s.detach().sqrt() < freeze_ratio) for f, s in zip(frozen, scale))
            steps_ = tuple(lr * s * gi * (~f) for lr, s, gi, f in zip(lrs, scale, g, frozen))
        else:
            steps_ = tuple(lr * gi for lr, gi in zip(lrs, g))
        steps_ = tuple(trust_region(d, max_step) for d in steps_)
        if record:
            trace.append((x if k == 0 else tuple(xi.detach() for xi in x), tuple(gi.detach() for gi in g), 1.0))
        previous = (x, steps_)
        x = tuple(xi - d for xi, d in zip(x, steps_))
    std = None
    if prior_var is not None:  # i.e. uncertain
        std = tuple((pv / (1.0 + pv * c)).detach().sqrt().expand_as(xi).clone() for pv, c, xi in zip(prior_var, curv, x))
    return Adapted(params=x, std=std, frozen=frozen if uncertain else None, losses=losses,
                   trace=trace if record else None)


def second_order_meta_gradient(loss_fn: Callable[[Params], Tensor], trace: list[tuple[Params, Params, float]],
                               lrs: Params, outer_grad: Params, max_step: float | None,
                               eps: float) -> tuple[Params, Params]:
    """The gradient of an outer loss L(x_K) w.r.t. the start x_0 and the step sizes `lrs`, through the recorded
    inner steps (inner_adapt(record=True)), second-order term included, for losses that are not twice
    differentiable (adjoint rollouts): each step's Hessian-vector product is a forward difference of the inner
    gradient, the point moved by at most `eps` per element. outer_grad: dL/dx_K. One extra gradient per step.

    Each step is x_{k+1} = x_k - f_k d(lr g_k), d = trust_region, so with s_k = d'(lr g_k) (elementwise)
    v_k = v_{k+1} - H_k (f_k s_k lr v_{k+1}) and dL/dlr += -f_k s_k g_k v_{k+1}, from v_K = outer_grad.
    """
    v = tuple(gi.detach() for gi in outer_grad)
    lr_d = tuple(lr.detach() for lr in lrs)
    grad_lr = [torch.zeros_like(lr) for lr in lr_d]
    with torch.enable_grad():
        for x, g, factor in reversed(trace):
            slope = tuple(trust_region_slope(lr * gi, max_step) for lr, gi in zip(lr_d, g))
            for i, (s, gi, vi) in enumerate(zip(slope, g, v)):
                grad_lr[i] = grad_lr[i] - (factor * s * gi * vi).sum_to_size(lr_d[i].shape)
            w = tuple(factor * s * lr * vi for s, lr, vi in zip(slope, lr_d, v))
            scale = max(float(wi.abs().max()) for wi in w)
            if scale == 0.0:
                continue
            h = eps / scale
            xp = tuple((xi.detach() + h * wi).requires_grad_() for xi, wi in zip(x, w))
            gp = torch.autograd.grad(loss_fn(xp), xp, allow_unused=True)
            v = tuple(vi - (torch.zeros_like(vi) if gpi is None else (gpi - gi) / h)
                      for vi, gpi, gi in zip(v, gp, g))
    return v, tuple(grad_lr)
