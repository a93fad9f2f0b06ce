"""Differentiable observations of a MuJoCo state: site positions and orientations, sensor readings.

`observe(dyn, x, u, sites, sensors, orientation)` runs `mj_forward` at each state x = [qpos, qvel, act]
(with ctrl u, which actuator and acceleration sensors read) and returns, per batch element, the sites'
world positions (3 each), their rotation matrices row by row (9 each, with `orientation`) and the named
sensors' readings, concatenated. Its Jacobians are central differences in the tangent space, as the
step's are: a column whose one-sided differences disagree (a touch sensor as a contact appears, a kink)
is retried at eps/10 and eps/100 and then taken on the smaller side.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from envs.mujoco_state import INTEGRATION, mujoco
from metatune.errors import MetatuneError


class Probe:
    """Which quantities an observation reads, resolved to ids and sensordata slices once."""

    def __init__(self, model: mujoco.MjModel, sites: Sequence[str], sensors: Sequence[str], orientation: bool):
        self.model, self.orientation = model, orientation
        self.sites = [self._id(mujoco.mjtObj.mjOBJ_SITE, s, "site", model.nsite) for s in sites]
        self.sensors = []
        for name in sensors:
            i = self._id(mujoco.mjtObj.mjOBJ_SENSOR, name, "sensor", model.nsensor)
            adr, dim = int(model.sensor_adr[i]), int(model.sensor_dim[i])
            self.sensors.append(slice(adr, adr + dim))
        self.size = len(self.sites) * (12 if orientation else 3) + sum(s.stop - s.start for s in self.sensors)
        if self.size == 0:
            raise MetatuneError("observe: name at least one site or sensor")
        self.data = mujoco.MjData(model)

    def _id(self, kind: mujoco.mjtObj, name: str, what: str, count: int) -> int:
        i = mujoco.mj_name2id(self.model, kind, name)
        if i < 0:
            known = [mujoco.mj_id2name(self.model, kind, k) for k in range(count)]
            raise MetatuneError(f"the model has no {what} {name!r}; it has {known}")
        return i

    def read(self, start: np.ndarray) -> np.ndarray:
        """The observation [size] at an integration state [nint]."""
        d = self.data
        mujoco.mj_setState(self.model, d, start, INTEGRATION)
        mujoco.mj_forward(self.model, d)
        parts = [d.site_xpos[i] for i in self.sites]
        if self.orientation:
            parts += [d.site_xmat[i] for i in self.sites]
        parts += [d.sensordata[s] for s in self.sensors]
        return np.concatenate(parts)


def _jacobian(dyn, probe: Probe, start: np.ndarray, y0: np.ndarray) -> np.ndarray:
    """d observation / d [tangent of x, ctrl] [size, ntan + nu] at one integration state."""
    fd = dyn.fd
    out = np.empty((probe.size, fd.ncol))
    for col in range(fd.ncol):
        eps = dyn.eps
        for level in range(3):
            plus = (probe.read(fd._perturbed(start, col, eps)) - y0) / eps
            minus = (y0 - probe.read(fd._perturbed(start, col, -eps))) / eps
            if fd._agree(plus, minus) or level == 2:
                break
            eps /= 10
        out[:, col] = 0.5 * (plus + minus) if fd._agree(plus, minus) else \
            (plus if np.abs(plus).max() <= np.abs(minus).max() else minus)
    return out


class _Observe(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, u: Tensor, dyn, probe: Probe) -> Tensor:
        xs = x.detach().reshape(-1, dyn.nx).cpu().double().numpy()
        us = u.detach().reshape(-1, dyn.nu).cpu().double().numpy()
        starts = [dyn.start_state(xi, ui) for xi, ui in zip(xs, us)]
        ys = np.stack([probe.read(s) for s in starts])
        ctx.dyn, ctx.probe, ctx.starts, ctx.xs, ctx.ys, ctx.shapes = dyn, probe, starts, xs, ys, (x.shape, u.shape)
        return torch.from_numpy(ys).to(dtype=x.dtype, device=x.device).reshape(*x.shape[:-1], probe.size)

    @staticmethod
    def backward(ctx, g: Tensor):
        dyn, probe = ctx.dyn, ctx.probe
        gs = g.detach().reshape(-1, probe.size).cpu().double().numpy()
        ntan = dyn.fd.ntan
        gx, gu = np.zeros_like(ctx.xs), np.zeros((len(gs), dyn.nu))
        for i, (start, x, y, gi) in enumerate(zip(ctx.starts, ctx.xs, ctx.ys, gs)):
            jac = _jacobian(dyn, probe, start, y)
            gt = gi @ jac[:, :ntan]  # cotangent in tangent coordinates
            if not dyn.fd.hinges_only:
                gt = gt @ dyn.tangent_of(x)
            gx[i], gu[i] = gt, gi @ jac[:, ntan:]
        x_shape, u_shape = ctx.shapes
        return torch.from_numpy(gx).to(g).reshape(x_shape), torch.from_numpy(gu).to(g).reshape(u_shape), None, None


def observe(dyn, x: Tensor, u: Tensor | None, sites: Sequence[str], sensors: Sequence[str],
            orientation: bool) -> Tensor:
    """Sites' positions (and rotation matrices) and sensor readings at x [..., nx] with ctrl u [..., nu]
    (zero if None): [..., 3 n_sites (+ 9 n_sites) + sensor dims], differentiable in x and u."""
    key = (tuple(sites), tuple(sensors), orientation)
    probe = dyn._probes.get(key)
    if probe is None:
        probe = dyn._probes[key] = Probe(dyn.model, sites, sensors, orientation)
    if x.shape[-1] != dyn.nx:
        raise MetatuneError(f"observe: the state must have nx = {dyn.nx} entries, got {x.shape[-1]}")
    if u is None:
        u = torch.zeros(*x.shape[:-1], dyn.nu, dtype=x.dtype, device=x.device)
    batch = torch.broadcast_shapes(x.shape[:-1], u.shape[:-1])
    return _Observe.apply(x.expand(*batch, dyn.nx), u.expand(*batch, dyn.nu), dyn, probe)
