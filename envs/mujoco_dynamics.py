"""`MujocoDynamics`: any MuJoCo model as a differentiable torch `step(x, u)`.

The forward pass is `mj_step`, continuing MuJoCo's whole state (warm-start, time, mocap) for states it
produced, as `mj_step` in a loop does (envs/mujoco_state.py). The backward pass multiplies by step
Jacobians from finite differences that never straddle a change of the contact set, batched in C over
all batch elements and perturbations (envs/mujoco_jacobian.py), so `metatune.rollout(..., grad="adjoint")`
differentiates real MuJoCo simulation, contacts included. State x = [qpos, qvel, act] in MuJoCo's order;
input u = ctrl. Use float64 states: the carried state is found by the exact bytes of x.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from envs.mujoco_jacobian import ConsistentFD
from envs.mujoco_state import INTEGRATION, StateMemo, mujoco
from metatune.errors import MetatuneError

MAX_VALUE = 1e8  # below MuJoCo's own 1e10 limit, at which it silently zeroes controls or resets the state
BAD_WARNINGS = (mujoco.mjtWarning.mjWARN_BADQACC, mujoco.mjtWarning.mjWARN_BADQVEL,
                mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADCTRL)


def load_model(model: str | Path | mujoco.MjModel) -> mujoco.MjModel:
    """An MjModel from an MJCF string, an MJCF file path, or an MjModel; MetatuneError if it does not parse."""
    if isinstance(model, mujoco.MjModel):
        return model
    text = str(model)
    try:
        if text.lstrip().startswith("<"):
            return mujoco.MjModel.from_xml_string(text)
        path = Path(text)
        if not path.is_file():
            raise MetatuneError(f"MJCF file {text!r} does not exist")
        return mujoco.MjModel.from_xml_path(str(path))
    except ValueError as err:
        if isinstance(err, MetatuneError):
            raise
        where = "MJCF string" if text.lstrip().startswith("<") else f"MJCF file {text!r}"
        raise MetatuneError(f"{where} does not parse: {str(err).strip()}") from err


class MujocoDynamics:
    """A MuJoCo model with a batched, differentiable `step(x [..., nx], u [..., nu]) -> [..., nx]`.

    eps: finite-difference step of the Jacobians; tol: how far the two one-sided differences of a column may
    disagree (relative) before the contact sets decide; nthread: threads of the C batch (default: cores).
    `jacobian_stats` counts columns and those taken one-sided at a contact switch.
    """

    def __init__(self, model: str | Path | mujoco.MjModel, eps: float = 1e-6, tol: float = 1e-4,
                 nthread: int | None = None):
        self.model = load_model(model)
        m = self.model
        if m.nu == 0:
            raise MetatuneError("MuJoCo model has no actuators (nu = 0): there is no input to differentiate")
        self.data = mujoco.MjData(m)
        self.nq, self.nv, self.na, self.nu = m.nq, m.nv, m.na, m.nu
        self.nx = m.nq + m.nv + m.na
        self.dt = float(m.opt.timestep)
        self.eps, self.nthread = eps, nthread
        self.fd = ConsistentFD(m, eps, tol, nthread)
        self.memo = StateMemo(m)
        self._ctrl_i = self.fd.user_i[: m.nu]
        self._bad = np.array([int(w) for w in BAD_WARNINGS])
        self._probes: dict = {}  # observation probes by (sites, sensors, orientation), see envs/mujoco_observe.py

    @property
    def jacobian_stats(self) -> dict[str, int]:
        return dict(self.fd.stats)

    # -- plain numpy single steps ------------------------------------------------------------------
    def start_state(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The integration state [nint] a step of x [nx] with ctrl u [nu] starts from."""
        s = self.memo.start(x, self.fd.x_i)
        s[self._ctrl_i] = u
        return s

    def step_numpy(self, x: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One mj_step of one state [nx] and input [nu]: the next state [nx] and the integration state it
        started from (MetatuneError if MuJoCo reports divergence)."""
        if not (np.isfinite(x).all() and np.isfinite(u).all()):
            raise MetatuneError("MuJoCo step: non-finite state or input")
        if max(np.abs(x).max(initial=0.0), np.abs(u).max(initial=0.0)) > MAX_VALUE:
            raise MetatuneError(f"MuJoCo step: state or input beyond {MAX_VALUE:g} (diverging rollout?)")
        m, d = self.model, self.data
        start = self.start_state(x, u)
        mujoco.mj_setState(m, d, start, INTEGRATION)
        counts = d.warning.number  # a view of every warning's count
        counts[:] = 0
        mujoco.mj_step(m, d)
        if counts[self._bad].any():
            warning = next(w for w in BAD_WARNINGS if counts[int(w)] > 0)
            raise MetatuneError(f"MuJoCo step diverged ({warning.name}: MuJoCo reset the state); "
                                "the state or the input is too large")
        out = np.concatenate([d.qpos, d.qvel, d.act])
        if not np.isfinite(out).all():
            raise MetatuneError("MuJoCo step produced a non-finite state")
        after = np.empty_like(start)
        mujoco.mj_getState(m, d, after, INTEGRATION)
        self.memo.remember(out, after)
        return out, start

    def jacobians(self, starts: np.ndarray, x: np.ndarray, x_next: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """d x_next / d x [B, nx, nx] and d x_next / d u [B, nx, nu] in the coordinates of x (qpos, not
        tangent), for steps from integration states starts [B, nint] of x [B, nx] to x_next [B, nx]."""
        a, b = self.fd.jacobians(starts)
        if self.fd.hinges_only:  # tangent space = qpos space
            return a, b
        m, ntan = self.model, self.fd.ntan
        into = np.zeros((len(x), self.nx, ntan))  # d x / d tangent at x_next
        for i in range(len(x)):
            into[i, : m.nq, : m.nv] = self._integrate_jac(x_next[i, : m.nq])
        into[:, m.nq:, m.nv:] = np.eye(m.nv + m.na)
        outof = np.stack([self.tangent_of(xi) for xi in x])
        return into @ a @ outof, into @ b

    def tangent_of(self, x: np.ndarray) -> np.ndarray:
        """d tangent / d x at x [ntan, nx]: how a change of [qpos, qvel, act] reads in tangent coordinates."""
        m = self.model
        out = np.zeros((self.fd.ntan, self.nx))
        out[: m.nv, : m.nq] = self._differentiate_jac(x[: m.nq])
        out[m.nv:, m.nq:] = np.eye(m.nv + m.na)
        return out

    def observe(self, x: Tensor, u: Tensor | None = None, sites: Sequence[str] = (), sensors: Sequence[str] = (),
                orientation: bool = False) -> Tensor:
        """Differentiable site positions (3 each; with `orientation` also rotation matrices, 9 each) and sensor
        readings at states x [..., nx] with ctrl u [..., nu]: [..., k] (envs/mujoco_observe.py), e.g. a
        fingertip-to-target cost or a task-space policy."""
        from envs.mujoco_observe import observe

        return observe(self, x, u, sites, sensors, orientation)

    def _integrate_jac(self, qpos: np.ndarray, h: float = 1e-7) -> np.ndarray:
        """d qpos(integrate(qpos, dq)) / d dq at dq = 0 [nq, nv]."""
        m = self.model
        jac = np.zeros((m.nq, m.nv))
        for j in range(m.nv):
            plus, minus = qpos.copy(), qpos.copy()
            dq = np.zeros(m.nv)
            dq[j] = 1.0
            mujoco.mj_integratePos(m, plus, dq, h)
            mujoco.mj_integratePos(m, minus, dq, -h)
            jac[:, j] = (plus - minus) / (2 * h)
        return jac

    def _differentiate_jac(self, qpos: np.ndarray, h: float = 1e-7) -> np.ndarray:
        """d tangent / d qpos at qpos [nv, nq] (the tangent of mj_differentiatePos)."""
        m = self.model
        jac = np.zeros((m.nv, m.nq))
        v = np.zeros(m.nv)
        for k in range(m.nq):
            plus, minus = qpos.copy(), qpos.copy()
            plus[k] += h
            minus[k] -= h
            mujoco.mj_differentiatePos(m, v, 2 * h, minus, plus)
            jac[:, k] = v
        return jac

    # -- torch ---------------------------------------------------------------------------------------
    def step(self, x: Tensor, u: Tensor) -> Tensor:
        """One differentiable mj_step of each batch element: x [..., nx], u [..., nu] -> [..., nx]."""
        _refuse_transforms()
        if x.shape[-1] != self.nx:
            raise MetatuneError(f"MuJoCo state must have nx = nq + nv + na = {self.nx} entries, got {x.shape[-1]}")
        if u.shape[-1] != self.nu:
            raise MetatuneError(f"MuJoCo input must have nu = {self.nu} entries, got {u.shape[-1]}")
        batch = torch.broadcast_shapes(x.shape[:-1], u.shape[:-1])
        return _MujocoStep.apply(x.expand(*batch, self.nx), u.expand(*batch, self.nu), self)

    def native_rollout(self, x0: Tensor, policy: Any, params: Any, horizon: int, cost: Any,
                       store_states: bool) -> Any:
        """`metatune.rollout(self.step, ..., grad="forward")`: the closed loop and its gradient in the gains in
        C, when policy and cost are envs.LinearFeedback and envs.QuadraticCost (envs/mujoco_closed_loop.py);
        None otherwise (the rollout then says why forward mode is unavailable)."""
        from envs.mujoco_closed_loop import native_rollout

        return native_rollout(self, x0, policy, params, horizon, cost, store_states)

    def initial_state(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The model's reference configuration qpos0 at rest [nx]."""
        return torch.tensor(np.concatenate([self.model.qpos0, np.zeros(self.nv + self.na)]), dtype=dtype)


def _refuse_transforms() -> None:
    """MuJoCo steps run in C: no torch.func transform can trace them."""
    stack = torch._C._functorch.get_interpreter_stack() or []
    kinds = {level.key() for level in stack}
    if torch._C._functorch.TransformType.Jvp in kinds:
        raise MetatuneError("grad='forward' through MuJoCo runs the closed loop in C, for the policy and cost "
                            "families envs.LinearFeedback and envs.QuadraticCost; this policy or cost is a "
                            "Python function, which forward mode cannot step in C: use grad='adjoint'")
    if kinds:  # vmap: callers that try it (the vectorized adjoint) fall back to a loop on RuntimeError
        raise RuntimeError("MujocoDynamics.step cannot run under torch.func.vmap (MuJoCo steps in C)")


class _MujocoStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, u: Tensor, dyn: MujocoDynamics) -> Tensor:
        xs = x.detach().reshape(-1, dyn.nx).cpu().double().numpy()
        us = u.detach().reshape(-1, dyn.nu).cpu().double().numpy()
        steps = [dyn.step_numpy(xi, ui) for xi, ui in zip(xs, us)]
        out = np.stack([o for o, _ in steps])
        ctx.dyn, ctx.xs, ctx.x_next, ctx.starts = dyn, xs, out, np.stack([s for _, s in steps])
        ctx.shapes = (x.shape, u.shape)
        return torch.from_numpy(out).to(dtype=x.dtype, device=x.device).reshape(x.shape)

    @staticmethod
    def backward(ctx, g: Tensor):
        dyn: MujocoDynamics = ctx.dyn
        gs = g.detach().reshape(-1, dyn.nx).cpu().double().numpy()
        a, b = dyn.jacobians(ctx.starts, ctx.xs, ctx.x_next)
        gx, gu = np.einsum("bij,bi->bj", a, gs), np.einsum("bij,bi->bj", b, gs)
        if not (np.isfinite(gx).all() and np.isfinite(gu).all()):
            raise MetatuneError("MuJoCo step: non-finite Jacobian (a diverging step?)")
        x_shape, u_shape = ctx.shapes
        return (torch.from_numpy(gx).to(g).reshape(x_shape), torch.from_numpy(gu).to(g).reshape(u_shape), None)
