"""`MujocoDynamics`: any MuJoCo model as a differentiable torch `step(x, u)`.

The forward pass is `mj_step`; the backward pass multiplies by the step Jacobians that
`mujoco.mjd_transitionFD` computes, so `metatune.rollout(..., grad="adjoint")` differentiates real
MuJoCo simulation. State x = [qpos, qvel, act] in MuJoCo's order; input u = ctrl.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from metatune.errors import MetatuneError
from metatune.mujoco_loader import load_mujoco

mujoco = load_mujoco()  # off-screen rendering set up, triton loaded first

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
    """A MuJoCo model with a batched, differentiable `step(x [..., nx], u [..., nu]) -> [..., nx]`."""

    def __init__(self, model: str | Path | mujoco.MjModel, eps: float = 1e-6, centered: bool = True):
        self.model = load_model(model)
        m = self.model
        if m.nu == 0:
            raise MetatuneError("MuJoCo model has no actuators (nu = 0): there is no input to differentiate")
        self.data = mujoco.MjData(m)
        self.nq, self.nv, self.na, self.nu = m.nq, m.nv, m.na, m.nu
        self.nx = m.nq + m.nv + m.na
        self.dt = float(m.opt.timestep)
        self.eps, self.centered = eps, centered

    # -- plain numpy single steps ------------------------------------------------------------------
    def _load(self, x: np.ndarray, u: np.ndarray) -> None:
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[:] = x[: m.nq]
        d.qvel[:] = x[m.nq: m.nq + m.nv]
        d.act[:] = x[m.nq + m.nv:]
        d.ctrl[:] = u

    def step_numpy(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One mj_step of one state [nx] and input [nu] (MetatuneError if MuJoCo reports divergence)."""
        if not (np.isfinite(x).all() and np.isfinite(u).all()):
            raise MetatuneError("MuJoCo step: non-finite state or input")
        if max(np.abs(x).max(initial=0.0), np.abs(u).max(initial=0.0)) > MAX_VALUE:
            raise MetatuneError(f"MuJoCo step: state or input beyond {MAX_VALUE:g} (diverging rollout?)")
        self._load(x, u)
        mujoco.mj_step(self.model, self.data)
        d = self.data
        for warning in BAD_WARNINGS:
            if d.warning[warning].number > 0:
                raise MetatuneError(f"MuJoCo step diverged ({warning.name}: MuJoCo reset the state); "
                                    "the state or the input is too large")
        out = np.concatenate([d.qpos, d.qvel, d.act])
        if not np.isfinite(out).all():
            raise MetatuneError("MuJoCo step produced a non-finite state")
        return out

    def jacobians(self, x: np.ndarray, u: np.ndarray, x_next: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """d x_next / d x [nx, nx] and d x_next / d u [nx, nu] in the coordinates of x (qpos, not tangent)."""
        m, d = self.model, self.data
        ntan = 2 * m.nv + m.na
        a = np.zeros((ntan, ntan))
        b = np.zeros((ntan, m.nu))
        if m.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4:
            # MuJoCo 4.0's mjd_transitionFD rejects RK4 models (dm-control's cartpole and acrobot use
            # RK4): take the same central differences of mj_step in the tangent space ourselves.
            a, b = self._tangent_fd(x, u)
        else:
            self._load(x, u)
            mujoco.mjd_transitionFD(m, d, self.eps, self.centered, a, b, None, None)
        if m.nq == m.nv:  # hinges and slides only: tangent space = qpos space
            return a, b
        into = np.zeros((self.nx, ntan))  # d x / d tangent at x_next
        into[: m.nq, : m.nv] = self._integrate_jac(x_next[: m.nq])
        into[m.nq:, m.nv:] = np.eye(m.nv + m.na)
        outof = np.zeros((ntan, self.nx))  # d tangent / d x at x
        outof[: m.nv, : m.nq] = self._differentiate_jac(x[: m.nq])
        outof[m.nv:, m.nq:] = np.eye(m.nv + m.na)
        return into @ a @ outof, into @ b

    def _tangent_fd(self, x: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Central differences of mj_step in tangent coordinates [2nv+na, 2nv+na], [2nv+na, nu]."""
        m, eps = self.model, self.eps
        nv = m.nv
        ntan = 2 * nv + m.na

        def perturb(j: int, sign: float) -> np.ndarray:
            out = x.copy()
            if j < nv:
                dq = np.zeros(nv)
                dq[j] = 1.0
                qpos = out[: m.nq].copy()
                mujoco.mj_integratePos(m, qpos, dq, sign * eps)
                out[: m.nq] = qpos
            else:
                out[m.nq + j - nv] += sign * eps
            return out

        def difference(plus: np.ndarray, minus: np.ndarray) -> np.ndarray:
            v = np.zeros(nv)
            mujoco.mj_differentiatePos(m, v, 2 * eps, minus[: m.nq], plus[: m.nq])
            return np.concatenate([v, (plus[m.nq:] - minus[m.nq:]) / (2 * eps)])

        a = np.zeros((ntan, ntan))
        b = np.zeros((ntan, m.nu))
        for j in range(ntan):
            a[:, j] = difference(self.step_numpy(perturb(j, 1.0), u), self.step_numpy(perturb(j, -1.0), u))
        for k in range(m.nu):
            du = np.zeros(m.nu)
            du[k] = eps
            b[:, k] = difference(self.step_numpy(x, u + du), self.step_numpy(x, u - du))
        return a, b

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
        if x.shape[-1] != self.nx:
            raise MetatuneError(f"MuJoCo state must have nx = nq + nv + na = {self.nx} entries, got {x.shape[-1]}")
        if u.shape[-1] != self.nu:
            raise MetatuneError(f"MuJoCo input must have nu = {self.nu} entries, got {u.shape[-1]}")
        batch = torch.broadcast_shapes(x.shape[:-1], u.shape[:-1])
        return _MujocoStep.apply(x.expand(*batch, self.nx), u.expand(*batch, self.nu), self)

    def initial_state(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The model's reference configuration qpos0 at rest [nx]."""
        return torch.tensor(np.concatenate([self.model.qpos0, np.zeros(self.nv + self.na)]), dtype=dtype)


class _MujocoStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, u: Tensor, dyn: MujocoDynamics) -> Tensor:
        xs = x.detach().reshape(-1, dyn.nx).cpu().double().numpy()
        us = u.detach().reshape(-1, dyn.nu).cpu().double().numpy()
        out = np.stack([dyn.step_numpy(xi, ui) for xi, ui in zip(xs, us)])
        ctx.dyn = dyn
        ctx.save_for_backward(x, u)
        ctx.x_next = out
        return torch.from_numpy(out).to(dtype=x.dtype, device=x.device).reshape(x.shape)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, u = ctx.saved_tensors
        dyn: MujocoDynamics = ctx.dyn
        xs = x.detach().reshape(-1, dyn.nx).cpu().double().numpy()
        us = u.detach().reshape(-1, dyn.nu).cpu().double().numpy()
        gs = g.detach().reshape(-1, dyn.nx).cpu().double().numpy()
        gx, gu = np.zeros_like(xs), np.zeros_like(us)
        for i, (xi, ui, gi) in enumerate(zip(xs, us, gs)):
            a, b = dyn.jacobians(xi, ui, ctx.x_next[i])
            gx[i], gu[i] = a.T @ gi, b.T @ gi
        if not (np.isfinite(gx).all() and np.isfinite(gu).all()):
            raise MetatuneError("MuJoCo step: non-finite Jacobian from mjd_transitionFD")
        return (torch.from_numpy(gx).to(x).reshape(x.shape), torch.from_numpy(gu).to(u).reshape(u.shape), None)
