"""Gradients of a rollout cost through dm_control's MuJoCo models: ours against plain MuJoCo and MJX.

For each model (reacher, cheetah, walker, humanoid), horizon (100, 1000) and gain count G (4 ... 1000),
the controller is u = 0.3 tanh((K0 + reshape(P theta)) x) with a fixed random K0 and projection P
[nu * nx, G], and the cost sums |x|^2 + 0.1 |u|^2 over the rollout, from the model's start pose. Per row:
- ours, two ways, seconds for the whole gradient: `metatune.rollout(MujocoDynamics.step, grad="adjoint")`
  (one step Jacobian per step whatever G) and `grad="forward"` (the closed loop and G forward
  sensitivities in C, envs/mujoco_closed_loop.py; run up to `FORWARD_MAX_GAINS`, beyond which its cost,
  linear in G, only loses); `ours_s` is the faster of the two, the mode a user picks for that G;
- relative error of each along a random direction against plain-MuJoCo central differences of the whole
  cost (h = 1e-6; `ref_converged` compares h = 1e-7: where it is large the cost is not differentiable at
  that scale, contacts switching along the rollout, and no gradient can be checked);
- naive: 2 G plain-MuJoCo rollouts (mj_step in a Python loop), measured for up to `budget` seconds and
  extrapolated linearly beyond ("~" in the table, `naive_estimated`);
- MJX (if `mujoco-mjx` is installed: `pip install -e .[bench]`): `jax.jacfwd` through `mjx.step` in a
  `lax.scan`, float64 on CPU, seconds per gradient after compiling and the compile time, on the rows
  `mjx_rows` selects (compiling takes 30 s to minutes per shape).
Run through benchmarks/robots.py (section "mujoco_gradients").
"""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

import metatune as mt
from envs.mujoco_closed_loop import EXTENSION, LinearFeedback, QuadraticCost
from envs.mujoco_dynamics import MujocoDynamics
from envs.mujoco_state import mujoco

MODELS = ("reacher", "cheetah", "walker", "humanoid")
FORWARD_MAX_GAINS = 64


def suite_model(name: str) -> mujoco.MjModel:
    import dm_control

    return mujoco.MjModel.from_xml_path(os.path.join(os.path.dirname(dm_control.__file__), "suite", f"{name}.xml"))


class Setup:
    """One model's controller family: K0, the projection P and the start state."""

    def __init__(self, model: mujoco.MjModel, gains: int, seed: int = 0):
        self.model = model
        self.nx = model.nq + model.nv + model.na
        rng = np.random.default_rng(seed)
        self.k0 = 0.1 * rng.standard_normal((model.nu, self.nx))
        self.proj = rng.standard_normal((model.nu * self.nx, gains)) / np.sqrt(gains)
        self.x0 = np.concatenate([model.qpos0, np.zeros(model.nv + model.na)]) + 0.01 * rng.standard_normal(self.nx)
        self.direction = rng.standard_normal(gains)

    def plain_cost(self, theta: np.ndarray, horizon: int) -> float:
        """The cost with plain MuJoCo: mj_step in a loop, numpy policy, no project code."""
        m = self.model
        d = mujoco.MjData(m)
        d.qpos[:], d.qvel[:] = self.x0[: m.nq], self.x0[m.nq: m.nq + m.nv]
        k = self.k0 + (self.proj @ theta).reshape(self.k0.shape)
        total = 0.0
        for _ in range(horizon):
            x = np.concatenate([d.qpos, d.qvel, d.act])
            u = 0.3 * np.tanh(k @ x)
            total += float(x @ x + 0.1 * u @ u)
            d.ctrl[:] = u
            mujoco.mj_step(m, d)
        return total

    def ours(self, horizon: int, grad: str = "adjoint") -> tuple[np.ndarray, float, dict]:
        """Our gradient [G] by `grad` ("adjoint" or "forward"), its seconds and the Jacobian statistics."""
        dyn = MujocoDynamics(self.model)
        k0, proj = torch.from_numpy(self.k0), torch.from_numpy(self.proj)
        theta = torch.zeros(proj.shape[1], dtype=torch.float64, requires_grad=True)
        policy = LinearFeedback(lambda th: k0 + (proj @ th).reshape(k0.shape), scale=0.3)
        cost = QuadraticCost(1.0, effort=0.1)
        t0 = time.perf_counter()
        out = mt.rollout(dyn.step, torch.from_numpy(self.x0), policy, theta, horizon, grad=grad, cost=cost,
                         store_states=False)
        (g,) = torch.autograd.grad(out.cost, theta)
        seconds = time.perf_counter() - t0
        stats = dyn.jacobian_stats
        dyn.fd.close()
        return g.numpy(), seconds, stats


def mjx_gradient(setup: Setup, horizon: int) -> tuple[np.ndarray, float, float] | None:
    """MJX's forward-mode gradient [G], seconds per gradient after compiling, and the compile seconds."""
    try:
        os.environ.setdefault("JAX_ENABLE_X64", "1")
        import jax
        import jax.numpy as jnp
        from mujoco import mjx
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    m = setup.model
    mx = mjx.put_model(m)
    d0 = mjx.make_data(mx).replace(qpos=jnp.array(setup.x0[: m.nq]), qvel=jnp.array(setup.x0[m.nq: m.nq + m.nv]))
    k0, proj = jnp.array(setup.k0), jnp.array(setup.proj)

    def cost(theta: Any) -> Any:
        k = k0 + (proj @ theta).reshape(k0.shape)

        def body(d: Any, _: Any) -> tuple[Any, Any]:
            x = jnp.concatenate([d.qpos, d.qvel, d.act])
            u = 0.3 * jnp.tanh(k @ x)
            return mjx.step(mx, d.replace(ctrl=u)), x @ x + 0.1 * u @ u

        return jax.lax.scan(body, d0, None, length=horizon)[1].sum()

    grad = jax.jit(jax.jacfwd(cost))
    theta = jnp.zeros(proj.shape[1])
    t0 = time.perf_counter()
    grad(theta).block_until_ready()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = np.asarray(grad(theta).block_until_ready())
    return g, time.perf_counter() - t0, compile_s


def row(name: str, horizon: int, gains: int, budget: float, with_mjx: bool) -> dict:
    """One measurement (see the module doc)."""
    setup = Setup(suite_model(name), gains)
    g, adjoint_s, stats = setup.ours(horizon)
    forward = (setup.ours(horizon, "forward")
               if gains <= FORWARD_MAX_GAINS and EXTENSION.load() is not None else None)
    theta0, v = np.zeros(gains), setup.direction

    def fd(h: float) -> float:
        return (setup.plain_cost(theta0 + h * v, horizon) - setup.plain_cost(theta0 - h * v, horizon)) / (2 * h)

    def err(grad: np.ndarray, ref: float) -> float:
        return abs(float(grad @ v) - ref) / max(abs(ref), 1e-300)

    t0 = time.perf_counter()
    ref = fd(1e-6)
    one_pair = time.perf_counter() - t0  # two rollouts: one gain's central difference
    ref_fine = fd(1e-7)
    pairs = max(1, min(gains, int(budget / max(one_pair, 1e-9))))
    t0 = time.perf_counter()
    for i in range(pairs):  # the naive gradient: one central difference per gain, timed
        e = np.zeros(gains)
        e[i] = 1e-6
        setup.plain_cost(theta0 + e, horizon) - setup.plain_cost(theta0 - e, horizon)
    naive = (time.perf_counter() - t0) * gains / pairs
    ours_s, mode = (forward[1], "forward") if forward is not None and forward[1] < adjoint_s else (adjoint_s, "adjoint")
    out = {"model": name, "horizon": horizon, "gains": gains, "nv": setup.model.nv, "nu": setup.model.nu,
           "adjoint_s": adjoint_s, "ours_s": ours_s, "ours_mode": mode, "naive_s": naive,
           "naive_estimated": pairs < gains, "naive_over_ours": naive / ours_s,
           "naive_over_adjoint": naive / adjoint_s, "rel_err_vs_plain_fd": err(g, ref),
           "ref_converged": abs(ref - ref_fine) / max(abs(ref), 1e-300), "jacobian_stats": stats}
    if forward is not None:
        out.update({"forward_s": forward[1], "naive_over_forward": naive / forward[1],
                    "forward_rel_err_vs_plain_fd": err(forward[0], ref), "forward_stats": forward[2],
                    "forward_vs_adjoint": float(np.abs(forward[0] - g).max() / max(np.abs(g).max(), 1e-300))})
    if out["rel_err_vs_plain_fd"] > 1e-4 and out["ref_converged"] < 1e-4:
        # the model's solver tolerance (1e-8) stops MuJoCo's solver where it happens to be; differences of the
        # whole rollout read that as derivative: both again with the solver run to 1e-12
        tight = Setup(suite_model(name), gains)
        tight.model.opt.tolerance = 1e-12
        g_tight, _, _ = tight.ours(horizon)
        ref_tight = (tight.plain_cost(theta0 + 1e-6 * v, horizon) - tight.plain_cost(theta0 - 1e-6 * v, horizon)) / 2e-6
        out["rel_err_at_solver_tolerance_1e-12"] = err(g_tight, ref_tight)
    if with_mjx:
        got = mjx_gradient(setup, horizon)
        if got is not None:
            gm, mjx_s, compile_s = got
            out.update({"mjx_s": mjx_s, "mjx_compile_s": compile_s, "mjx_over_ours": mjx_s / ours_s,
                        "mjx_with_compile_over_ours": (mjx_s + compile_s) / ours_s,
                        "mjx_rel_err_vs_plain_fd": err(gm, ref)})
    return out


def print_row(r: dict) -> None:
    est = "~" if r["naive_estimated"] else " "
    mjx = (f" | MJX {r['mjx_s']:7.3f} s (+{r['mjx_compile_s']:5.0f} s compile) err {r['mjx_rel_err_vs_plain_fd']:.0e}"
           if "mjx_s" in r else "")
    tight = (f" [{r['rel_err_at_solver_tolerance_1e-12']:.0e} at solver tol 1e-12]"
             if "rel_err_at_solver_tolerance_1e-12" in r else "")
    fwd = (f" | forward {r['forward_s']:7.3f} s err {r['forward_rel_err_vs_plain_fd']:.0e}" if "forward_s" in r
           else " | forward       -          ")
    print(f"{r['model']:8s} T={r['horizon']:5d} G={r['gains']:5d} | adjoint {r['adjoint_s']:7.3f} s err "
          f"{r['rel_err_vs_plain_fd']:.0e}{tight}{fwd} (ref conv {r['ref_converged']:.0e}) | naive FD {est}"
          f"{r['naive_s']:8.3f} s = {r['naive_over_ours']:6.1f}x ours ({r['ours_mode']}){mjx}", flush=True)


def benchmark(models: tuple[str, ...], horizons: list[int], gains: list[int], budget: float,
              mjx_rows: set[tuple[str, int, int]]) -> list[dict]:
    """Every (model, horizon, gains) row; MJX on the rows in mjx_rows."""
    rows = []
    for name in models:
        Setup(suite_model(name), 4).ours(5)  # warm-up: imports, thread pools, first-call allocations
        Setup(suite_model(name), 4).ours(5, "forward")
        for horizon in horizons:
            for g in gains:
                r = row(name, horizon, g, budget, (name, horizon, g) in mjx_rows)
                print_row(r)
                rows.append(r)
    return rows
