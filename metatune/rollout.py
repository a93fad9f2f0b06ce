"""`rollout`: a closed-loop trajectory x[t+1] = step(x[t], policy(x[t], t, params)), differentiable three ways.

- "autograd": keep the whole graph (memory grows with the horizon).
- "adjoint": the discrete adjoint. The forward pass keeps only the states; the backward pass runs back in
  time, rebuilding the graph of one short segment at a time to get lambda[t] = df/dx^T lambda[t+1] + dl/dx,
  so the graph memory does not grow with the horizon.
- "forward": forward sensitivities S[t] = dx[t]/dtheta propagated with the trajectory (forward-mode AD,
  one tangent per parameter: the DiffTune-style baseline, whose cost grows with the parameter count).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence, Union, cast

import torch
from torch import Tensor

from metatune.errors import MetatuneError, refuse_func_transforms
from metatune.tree import Tensors, flatten, unflatten

# The time index t is an int, except in the vectorized adjoint, where vmap over time passes a 0-d tensor.
Time = Union[int, Tensor]
Step = Callable[[Tensor, Tensor], Tensor]
Policy = Callable[[Tensor, Time, Tensors], Tensor]
Cost = Callable[[Tensor, Tensor, Time], Tensor]
GRADS = ("adjoint", "autograd", "forward")
# The vectorized adjoint pays while each step's operations are small (per-operation overhead dominates).
# Measured crossover, as the numbers one step's graph saves for backward: vectorized is faster at 8.5k
# (quadrotor batch 32) to 13.8k (pendulum batch 512, 8 parameters), even at 16.9k (quadrotor batch 64),
# 2x slower at 27.7k (pendulum batch 1024) and 49.6k (pendulum batch 64, 256 parameters).
VECTORIZE_MAX_SAVED = 16384


class Rollout(NamedTuple):
    states: Tensor            # [horizon + 1, ..., nx]
    cost: Optional[Tensor]    # [...] summed over time, or None without a cost function


class _Sim:
    """The simulation a rollout runs, with the checks that name what went wrong."""

    def __init__(self, step: Step, policy: Policy, cost: Cost | None, horizon: int, single: bool):
        self.step, self.policy, self.cost, self.horizon, self.single = step, policy, cost, horizon, single

    def transition(self, x: Tensor, t: Time, params: tuple[Tensor, ...],
                   with_cost: bool = True) -> tuple[Tensor, Tensor | None]:
        u = self.policy(x, t, unflatten(params, self.single))
        x_next = self.step(x, u)
        c = self.cost(x, u, t) if self.cost is not None and with_cost else None
        return x_next, c

    def check_first(self, x0: Tensor, params: tuple[Tensor, ...]) -> None:
        with torch.no_grad():
            try:
                u = self.policy(x0, 0, unflatten(params, self.single))
            except (RuntimeError, IndexError, TypeError) as err:
                raise MetatuneError(f"policy failed on x0 of shape {tuple(x0.shape)}: {err}") from err
            try:
                x1 = self.step(x0, u)
            except (RuntimeError, IndexError, TypeError) as err:
                raise MetatuneError(f"step failed on x0 {tuple(x0.shape)} and u {tuple(u.shape)}: {err}") from err
            if x1.shape != x0.shape:
                raise MetatuneError(f"step returned a state of shape {tuple(x1.shape)} but x0 has shape {tuple(x0.shape)}")
            if self.cost is not None:
                c = self.cost(x0, u, 0)
                if c.shape != x0.shape[:-1]:
                    raise MetatuneError(f"cost must return one value per batch element, shape {tuple(x0.shape[:-1])}; "
                                        f"got {tuple(c.shape)}")

    def check_finite(self, states: Tensor, every: int = 1) -> None:
        bad = ~torch.isfinite(states.detach()).reshape(states.shape[0], -1).all(dim=1)
        if bool(bad.any()):
            t = min(int(bad.nonzero()[0]) * every, self.horizon)
            where = f"at step {t}" if every == 1 else f"by step {t}"
            raise MetatuneError(f"rollout diverged: non-finite state {where} of {self.horizon} "
                                "(unstable gains or too large a time step?)")

    def simulate(self, x0: Tensor, params: tuple[Tensor, ...], every: int = 1) -> tuple[Tensor, Tensor]:
        """States x[0], x[every], x[2 every], ... and x[T] ([K, ..., nx]), and the summed cost [...]."""
        total = torch.zeros(x0.shape[:-1], dtype=x0.dtype, device=x0.device)
        keep = [t for t in range(1, self.horizon + 1) if t % every == 0 or t == self.horizon]
        states: list[Tensor] = [x0]  # with a graph: the states as separate tensors, stacked at the end
        buffer: Tensor | None = None
        write: dict[int, int] = {}
        if not torch.is_grad_enabled():  # no graph: one preallocated buffer (no per-state tensors, no stack copy)
            buffer = torch.empty((len(keep) + 1, *x0.shape), dtype=x0.dtype, device=x0.device)
            buffer[0] = x0
            write = {t: i + 1 for i, t in enumerate(keep)}
        x = x0
        for t in range(self.horizon):
            x, c = self.transition(x, t, params)
            if buffer is None:
                if (t + 1) % every == 0 or t + 1 == self.horizon:
                    states.append(x)
            elif t + 1 in write:
                buffer[write[t + 1]] = x
            if c is not None:
                total = total + c
        out = torch.stack(states) if buffer is None else buffer
        self.check_finite(out, every)
        return out, total

    def simulate_from(self, x: Tensor, start: int, stop: int, params: tuple[Tensor, ...]) -> Tensor:
        """States x[start], ..., x[stop-1] ([stop - start, ..., nx]) from x = x[start]."""
        out = torch.empty((stop - start, *x.shape), dtype=x.dtype, device=x.device)
        for t in range(start, stop):
            out[t - start] = x
            if t + 1 < stop:
                x, _ = self.transition(x, t, params, with_cost=False)
        return out


def _saved_per_step(sim: _Sim, x0: Tensor, params: tuple[Tensor, ...]) -> int:
    """How many numbers one step's graph saves for backward: the size of its operations."""
    count = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal count
        count += t.numel()
        return t

    leaves = tuple(p.detach().requires_grad_(p.is_floating_point()) for p in params)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sim.transition(x0.detach().requires_grad_(x0.is_floating_point()), 0, leaves)
    return count


def _second_order(sim: _Sim, store: bool, x0: Tensor, params: tuple[Tensor, ...], needs: tuple[bool, ...],
                  g_states: Tensor, g_cost: Tensor) -> tuple[Tensor | None, ...]:
    """The rollout's gradient as a differentiable graph (create_graph=True): the trajectory is simulated again
    with autograd and differentiated with create_graph, so second-order methods (MAML through a rollout, a
    Hessian-vector product in the gains) see exact second derivatives. Memory is then autograd's, O(horizon)."""
    inputs = [t for t, need in zip((x0, *params), needs) if need]
    if not inputs:
        return tuple(None for _ in needs)
    with torch.enable_grad():
        states, total = sim.simulate(x0, params)
        outs = [states if store else states[-1:], total]
        got = iter(torch.autograd.grad(outs, inputs, [g_states, g_cost], create_graph=True, allow_unused=True))
    return tuple(next(got) if need else None for need in needs)


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sim: _Sim, segment: int, store: bool, vectorize: bool, x0: Tensor, *params: Tensor):
        # Without `store`, keep only each segment's first state: memory O(T / segment) instead of O(T).
        states, total = sim.simulate(x0, params, 1 if store else segment)
        ctx.sim, ctx.segment, ctx.store, ctx.vectorize = sim, segment, store, vectorize
        ctx.save_for_backward(states, x0, *params)
        return (states if store else states[-1:]), total

    @staticmethod
    def backward(ctx, g_states: Tensor, g_cost: Tensor):
        sim: _Sim = ctx.sim
        states, x0, *params = ctx.saved_tensors
        if torch.is_grad_enabled():  # a double backward will differentiate this gradient
            return (None, None, None, None, *_second_order(sim, ctx.store, x0, tuple(params),
                                                           ctx.needs_input_grad[4:], g_states, g_cost))
        store, vectorize, independent = ctx.store, ctx.vectorize, True
        leaves = tuple(p.detach().requires_grad_() for p in params)
        grads = [torch.zeros_like(p) for p in params]
        lam = g_states[-1]
        # Walk back one segment at a time, so that graph memory is one segment's whatever the horizon.
        for start in reversed(range(0, sim.horizon, ctx.segment)):
            stop = min(start + ctx.segment, sim.horizon)
            seg_g = g_states[start:stop] if store else None
            x_first = states[start if store else start // ctx.segment]
            gp: Sequence[Tensor | None] | None = None
            if vectorize:
                if store:
                    xs = states[start:stop]
                else:
                    with torch.no_grad():  # rebuild the segment's states from its checkpoint
                        xs = sim.simulate_from(x_first, start, stop, leaves)
                try:
                    lam_new, gp, independent = _segment_vectorized(sim, xs, start, leaves, lam, g_cost, seg_g,
                                                                   independent)
                except MetatuneError:
                    raise
                except Exception:  # a policy or step that vmap cannot trace over time: go step by step
                    vectorize = False
            if gp is None:
                lam_new, gp = _segment_sequential(sim, x_first, start, stop, leaves, lam, g_cost, seg_g)
            lam = lam_new
            for i, g in enumerate(gp):
                if g is not None:
                    grads[i] += g
        if not bool(torch.isfinite(lam).all()) or not all(bool(torch.isfinite(g).all()) for g in grads):
            raise MetatuneError("adjoint rollout: non-finite gradient (the trajectory is too sensitive; shorten it)")
        return (None, None, None, None, lam, *grads)


def _segment_sequential(sim: _Sim, x_first: Tensor, start: int, stop: int, leaves: tuple[Tensor, ...],
                        lam: Tensor, g_cost: Tensor, seg_g: Tensor | None) -> tuple[Tensor, Sequence[Tensor | None]]:
    """Rebuild the segment's graph step by step from x_first ([..., nx]) and pull lambda back through it."""
    x_first = x_first.detach().requires_grad_()
    outs, seeds = [], []
    with torch.enable_grad():
        x, seg_cost = x_first, None
        for t in range(start, stop):
            x, c = sim.transition(x, t, leaves)
            if seg_g is not None and t + 1 < stop:  # the loss also reads the states inside the segment
                outs.append(x)
                seeds.append(seg_g[t + 1 - start])
            if c is not None:
                seg_cost = c if seg_cost is None else seg_cost + c
        if seg_cost is not None:
            outs.append(seg_cost)
            seeds.append(g_cost)
        outs.append(x)
        seeds.append(lam)
        gx, *gp = torch.autograd.grad(outs, (x_first, *leaves), seeds, allow_unused=True)
    lam_new = (seg_g[0] if seg_g is not None else 0.0) + (gx if gx is not None else 0.0)
    return lam_new, gp


def _segment_vectorized(sim: _Sim, xs: Tensor, start: int, leaves: tuple[Tensor, ...], lam: Tensor,
                        g_cost: Tensor, seg_g: Tensor | None,
                        independent: bool) -> tuple[Tensor, Sequence[Tensor | None], bool]:
    """The same segment backward with the per-step work batched over time.

    All L transitions of the segment are evaluated at once from the known states xs [L, ..., nx] (vmap over
    t), building one graph. One batched backward through it (a few cotangents at once, vmapped) gives every
    step's state Jacobian A[t] = dx[t+1]/dx[t] and cost gradient; lambda[t] = A[t]^T lambda[t+1] + dc[t]/dx[t]
    is then chained with one fused op per step, and one more backward through the same graph, seeded with
    lambda, gives the parameter gradient. A few large operations instead of L small ones per step kind,
    which is what costs time at small batch.
    With `independent`, batch elements are assumed not to interact (block-diagonal Jacobian: nx cotangents
    instead of x.numel()); one more, random, checks that in every segment, and the segment is redone with
    dense Jacobians (returned flag False) when the check fails.
    """
    from torch.func import vmap

    L, shape = xs.shape[0], xs.shape[1:]
    m, nx = shape.numel(), shape[-1]
    dtype, device = xs.dtype, xs.device
    zero = torch.zeros(shape[:-1], dtype=dtype, device=device)

    def one(x: Tensor, t: Tensor, leaves: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        x_next, c = sim.transition(x, t, leaves)
        return x_next, (c if c is not None else zero)

    if independent:  # seed i: e_i on the last axis of every batch element; then the random check
        eye = torch.eye(nx, dtype=dtype, device=device).reshape(nx, 1, *([1] * (len(shape) - 1)), nx)
        v = torch.randn(xs.shape, generator=torch.Generator(device).manual_seed(start), dtype=dtype, device=device)
        seeds = torch.cat([eye.expand(nx, *xs.shape), v[None]])
    else:  # seed i: e_i over the whole state
        seeds = torch.eye(m, dtype=dtype, device=device).reshape(m, 1, *shape).expand(m, *xs.shape)
    R = seeds.shape[0] + 1  # the last seed carries the cost
    cost_seed = g_cost.expand(L, *shape[:-1])
    X = xs.detach().requires_grad_()
    ts = torch.arange(start, start + L, device=device)
    with torch.enable_grad():
        Y, C = vmap(one)(X, ts, leaves=leaves)
        if Y.shape != X.shape or C.shape != (L, *shape[:-1]):
            raise RuntimeError("vectorized transition changed shapes")
        seeds_y = torch.cat([seeds, torch.zeros(1, *xs.shape, dtype=dtype, device=device)])
        seeds_c = torch.cat([torch.zeros(R - 1, *cost_seed.shape, dtype=dtype, device=device), cost_seed[None]])
        (J,) = torch.autograd.grad((Y, C), (X,), (seeds_y, seeds_c), retain_graph=True, is_grads_batched=True)
    J = J.reshape(R, *xs.shape)
    if independent:
        A = J[:nx]  # [nx_out, L, ..., nx_in]
        guess = torch.einsum("il...j,l...i->l...j", A, v)
        tol = torch.finfo(dtype).eps ** 0.5 * (1.0 + float(J[nx].abs().max()))
        if not bool((guess - J[nx]).abs().max() <= tol):  # batch elements interact: dense Jacobians
            return _segment_vectorized(sim, xs, start, leaves, lam, g_cost, seg_g, False)
        A = A.movedim(0, -2).reshape(L, m // nx, nx, nx)  # per-element blocks [L, n, nx_out, nx_in]
    else:
        A = J[:m].reshape(m, L, m).transpose(0, 1).unsqueeze(1)  # one dense block [L, 1, m_out, m_in]
    n, w = A.shape[1], A.shape[2]
    dc = J[-1].reshape(L, n, 1, w)  # d(g_cost . c[t]) / dx[t]
    if seg_g is not None:
        dc = dc + seg_g.reshape(L, n, 1, w)
    lam_t, lams = lam.reshape(n, 1, w), []
    for A_t, dc_t in zip(reversed(A.unbind(0)), reversed(dc.unbind(0))):
        lams.append(lam_t)
        lam_t = torch.baddbmm(dc_t, lam_t, A_t)  # lambda[t] = A[t]^T lambda[t+1] + dc[t], one fused op
    lam_next = torch.stack(lams[::-1]).reshape(L, *shape)  # lambda[t+1] for t in the segment
    with torch.enable_grad():  # the same graph seeded with lambda and the cost seed: the parameters' gradient
        gp = torch.autograd.grad((Y, C), leaves, (lam_next, cost_seed), allow_unused=True)
    return lam_t.reshape(shape), gp, independent


class _Forward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sim: _Sim, store: bool, x0: Tensor, *params: Tensor):
        from torch.func import jvp, vmap

        shapes = [x0.shape, *(p.shape for p in params)]
        sizes = [s.numel() for s in shapes]
        dtype, device = x0.dtype, x0.device

        def split(theta: Tensor) -> tuple[Tensor, ...]:
            return tuple(c.reshape(s) for c, s in zip(torch.split(theta, sizes), shapes))

        # One tangent direction per scalar of each input that needs a gradient (x0 included only if so).
        wanted = [torch.full((n,), bool(need), dtype=torch.bool) for n, need in zip(sizes, ctx.needs_input_grad[2:])]
        eye = torch.eye(sum(sizes), dtype=dtype, device=device)[torch.cat(wanted)]  # [m, n]
        theta = torch.cat([x0.reshape(-1), *(p.reshape(-1) for p in params)])
        x = x0
        sens = vmap(lambda e: split(e)[0])(eye)  # [m, ..., nx]: dx0/dtheta along each direction
        states, all_sens = [x0], [sens]
        total = torch.zeros(x0.shape[:-1], dtype=dtype, device=device)
        dtotal = torch.zeros(eye.shape[0], *x0.shape[:-1], dtype=dtype, device=device)
        for t in range(sim.horizon):
            def f(xx: Tensor, th: Tensor, t: int = t) -> tuple[Tensor, Tensor]:
                x_next, c = sim.transition(xx, t, split(th)[1:])
                return x_next, (c if c is not None else torch.zeros(xx.shape[:-1], dtype=dtype, device=device))

            # jvp's stub returns a 2- or 3-tuple (the third with has_aux); without has_aux it is (primals, tangents)
            def pushforward(s: Tensor, e: Tensor) -> tuple[Any, Any]:
                return cast(tuple[Any, Any], jvp(f, (x, theta), (s, e)))

            # The ignore: vmap's stub types out_dims flat (int | tuple[int, ...] | None), but it takes a
            # nested tuple matching the output's structure, here: the primal outputs are not batched
            batched = vmap(pushforward, out_dims=((None, None), 0))  # type: ignore[arg-type]
            (x_next, c), (s_next, dc) = batched(sens, eye)
            x, sens = x_next, s_next
            total, dtotal = total + c, dtotal + dc
            if store:
                states.append(x)
                all_sens.append(sens)
        if not store:  # only the final state and its sensitivity are returned and kept
            states, all_sens = [x], [sens]
        out = torch.stack(states)
        sim.check_finite(out, 1 if store else sim.horizon)
        ctx.sizes, ctx.shapes, ctx.sim, ctx.store = sizes, shapes, sim, store
        ctx.save_for_backward(torch.stack(all_sens), dtotal, eye, x0, *params)
        return out, total

    @staticmethod
    def backward(ctx, g_states: Tensor, g_cost: Tensor):
        sens, dtotal, eye, x0, *params = ctx.saved_tensors  # [K, m, ..., nx], [m, ...], [m, n]
        if torch.is_grad_enabled():  # a double backward will differentiate this gradient
            return (None, None, *_second_order(ctx.sim, ctx.store, x0, tuple(params), ctx.needs_input_grad[2:],
                                               g_states, g_cost))
        g = torch.einsum("tm...,t...->m", sens, g_states) + torch.einsum("m...,...->m", dtotal, g_cost)
        parts = torch.split(g @ eye, ctx.sizes)
        grads = tuple(c.reshape(s) if need else None
                      for c, s, need in zip(parts, ctx.shapes, ctx.needs_input_grad[2:]))
        return (None, None, *grads)


def rollout(
    step: Step,
    x0: Tensor,
    policy: Policy,
    params: Tensors,
    horizon: int,
    *,
    grad: str = "adjoint",
    cost: Cost | None = None,
    segment: int | None = None,
    store_states: bool = True,
    vectorize: bool | None = None,
) -> Rollout:
    """Simulate `horizon` steps of x[t+1] = step(x[t], policy(x[t], t, params)) from x0 ([..., nx]).

    Returns the states [horizon+1, ..., nx] and, when `cost(x, u, t) -> [...]` is given, its sum over
    t = 0..horizon-1. Both are differentiable in `params` and `x0` by `grad` ("adjoint", "autograd", "forward").
    `segment`: steps whose graph the adjoint rebuilds at once (memory per segment, fewer backward calls);
    default 64 when vectorized, else 32.
    `store_states=False` returns only the final state ([1, ..., nx]); the adjoint then keeps one state per
    segment, so its memory stays flat in the horizon (the usual case: only the cost's gradient is needed).
    `vectorize`: the adjoint evaluates each segment's steps at once (vmap over t, so `policy` and `cost` then
    see t as a 0-d tensor) and chains per-step state Jacobians; default: when one step's graph saves at
    most VECTORIZE_MAX_SAVED numbers for backward (small operations, where per-operation overhead
    dominates). Functions that vmap cannot trace fall back to the step-by-step adjoint; the results agree
    to rounding.
    With grad="forward", a `step` that is a bound method of an object with `native_rollout(x0, policy,
    params, horizon, cost, store_states)` lets that object run the whole closed loop when it can (it returns
    None when it cannot): `MujocoDynamics` does, in C, for envs.LinearFeedback and envs.QuadraticCost.
    """
    if grad not in GRADS:
        raise MetatuneError(f"unknown grad mode {grad!r}; choose one of {GRADS}")
    if grad != "autograd":
        refuse_func_transforms(f"rollout(grad={grad!r})", "Use torch.autograd.grad on it, or grad='autograd', "
                               "which torch.func can trace.")
    if not isinstance(x0, Tensor) or x0.dim() < 1:
        raise MetatuneError("x0 must be a Tensor of shape [..., nx]")
    if horizon < 1:
        raise MetatuneError(f"horizon must be >= 1, got {horizon}")
    if grad == "forward":  # a simulator that runs the whole closed loop itself (MujocoDynamics, in C)
        native = getattr(getattr(step, "__self__", None), "native_rollout", None)
        out = native(x0, policy, params, horizon, cost, store_states) if native is not None else None
        if out is not None:
            return out
    ps, single = flatten(params, "params")
    sim = _Sim(step, policy, cost, horizon, single)
    sim.check_first(x0, ps)
    if grad == "autograd":
        states, total = sim.simulate(x0, ps)
    elif grad == "adjoint":
        if vectorize is None:
            vectorize = _saved_per_step(sim, x0, ps) <= VECTORIZE_MAX_SAVED
        if segment is None:
            segment = 64 if vectorize else 32
        if segment < 1:
            raise MetatuneError(f"segment must be >= 1, got {segment}")
        states, total = _Adjoint.apply(sim, segment, store_states, bool(vectorize), x0, *ps)
    else:
        states, total = _Forward.apply(sim, store_states, x0, *ps)
    if not store_states and grad == "autograd":
        states = states[-1:]
    return Rollout(states, total if cost is not None else None)
