"""Controller tuning for any user's MJCF model: PD on chosen actuated joints (or linear state feedback),
tracking a reference from a CSV or a set point, on robots made by randomising the model's physical
parameters. The physics is MuJoCo itself, differentiated through `envs.MujocoDynamics` (contacts included).

Parameters: PD: log gains [2 n] (kp of each of the n controlled actuators, then kd), in the actuator's
control units per radian (or metre) of its joint; linear: a state-feedback matrix K [n, nx] added to the
hand-set PD, u = PD(x) + K (x_target - x), starting at zero. The hand-set PD (what "untuned" means here)
makes each joint a 1 Hz, 0.7-damped oscillator about its inertia at the start pose.
"""
from __future__ import annotations

import copy
import csv
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import metatune as mt
from envs.mujoco_dynamics import MujocoDynamics, load_model
from envs.mujoco_state import mujoco
from envs.tasks import RobotTask, TaskDistribution
from envs.tuning_problem import Trajectory, TuningProblem
from metatune.errors import MetatuneError

RANDOMISABLE = ("mass", "inertia", "friction", "damping", "gear")
CONTROLLERS = ("pd", "linear")


@dataclass
class MjcfSpec:
    """What `metatune robot --mjcf` tunes (saved in the run folder's config.json)."""

    mjcf: str                                  # path of the MJCF file
    controller: str = "pd"                     # pd | linear
    actuators: list[str] = field(default_factory=list)  # controlled actuators (default: every joint motor)
    reference: str | None = None               # CSV of targets over time (columns: [time,] joints, SITE.x/y/z)
    setpoint: dict[str, float] = field(default_factory=dict)  # joint -> target (default: the start pose)
    randomise: dict[str, list[float]] = field(default_factory=lambda: {"mass": [0.7, 1.3]})
    effort: float = 1e-3                       # weight of the control effort in the cost
    grad: str = "auto"                         # auto | forward | adjoint (see MjcfTracking._cheaper_grad)


def parse_ranges(items: list[str]) -> dict[str, list[float]]:
    """`mass=0.7:1.3` items -> {"mass": [0.7, 1.3]}, checked."""
    out: dict[str, list[float]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        lo, colon, hi = value.partition(":")
        if not sep or not colon:
            raise MetatuneError(f"--randomise takes name=lo:hi (a factor range), got {item!r}")
        if key not in RANDOMISABLE:
            raise MetatuneError(f"--randomise {key!r}: choose from {RANDOMISABLE}")
        try:
            a, b = float(lo), float(hi)
        except ValueError:
            raise MetatuneError(f"--randomise {key}: {value!r} is not lo:hi numbers") from None
        if not (0 < a <= b and math.isfinite(b)):
            raise MetatuneError(f"--randomise {key}: factors must satisfy 0 < lo <= hi, got {a}:{b}")
        out[key] = [a, b]
    return out


def parse_setpoint(items: list[str]) -> dict[str, float]:
    """`joint=value` items -> {joint: value}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key] = float(value) if sep else float("nan")
        except ValueError:
            raise MetatuneError(f"--setpoint {key}: {value!r} is not a number") from None
        if not sep or not math.isfinite(out[key]):
            raise MetatuneError(f"--setpoint takes joint=value with a finite value, got {item!r}")
    return out


def randomised(model: mujoco.MjModel, factors: dict[str, float]) -> mujoco.MjModel:
    """A copy of the model with each physical parameter group scaled by its factor."""
    m = copy.deepcopy(model)
    for key, f in factors.items():
        if key == "mass":  # the mass and the inertia about the same centre scale together
            m.body_mass[1:] *= f
            m.body_inertia[1:] *= f
        elif key == "inertia":
            m.body_inertia[1:] *= f
        elif key == "friction":
            m.geom_friction[:, 0] *= f
        elif key == "damping":
            m.dof_damping[:] *= f
        elif key == "gear":
            m.actuator_gear[:, 0] *= f
    return m


class MjcfTracking(TuningProblem):
    """Track joint targets with PD (or linear feedback) on a user's MJCF model; see the module doc."""

    log_loss = True

    def __init__(self, spec: MjcfSpec, horizon: int = 200, dt: float | None = None,
                 dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"):
        self.spec, self.dtype, self.device = spec, dtype, torch.device(device)
        if spec.controller not in CONTROLLERS:
            raise MetatuneError(f"--controller {spec.controller!r}: choose from {CONTROLLERS}")
        self.base = load_model(spec.mjcf)
        if dt is not None:
            self.base.opt.timestep = dt
        self.dt, self.horizon = float(self.base.opt.timestep), horizon
        self.name = f"mjcf:{Path(spec.mjcf).stem}"
        m = self.base
        self.nq, self.nv, self.na, self.nu = m.nq, m.nv, m.na, m.nu
        self.actuators = self._controlled(spec.actuators)
        joints = [int(m.actuator_trnid[a, 0]) for a in self.actuators]
        self.joint_names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, j) or f"joint{j}" for j in joints]
        self.qadr = [int(m.jnt_qposadr[j]) for j in joints]
        self.vadr = [int(m.jnt_dofadr[j]) for j in joints]
        self.x0 = self._start_state()
        self.site_targets: dict[str, Tensor] = {}  # site -> world position target [T+1, 3] (CSV SITE.x columns)
        self.q_ref, self.qd_ref = self._reference()
        self.vel_idx = [self.nq + v for v in self.vadr]  # the controlled joints' velocities in x
        self.x_target = self._target()
        self.distribution = TaskDistribution(self.name, {k: (lo, hi) for k, (lo, hi) in spec.randomise.items()})
        self.log_gains0 = self._default_log_gains()
        self._dynamics: OrderedDict[tuple, MujocoDynamics] = OrderedDict()
        self.grad = self._cheaper_grad()

    # -- the model ---------------------------------------------------------------------------------
    def _controlled(self, names: list[str]) -> list[int]:
        m = self.base
        hinge_slide = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
        motors = [a for a in range(m.nu) if int(m.actuator_trntype[a]) == int(mujoco.mjtTrn.mjTRN_JOINT)
                  and int(m.jnt_type[m.actuator_trnid[a, 0]]) in hinge_slide]
        if not names:
            if not motors:
                raise MetatuneError(f"{self.spec.mjcf}: no actuator drives a hinge or slide joint; PD needs one")
            chosen = motors
        else:
            chosen = []
            for name in names:
                a = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, name)
                if a < 0:
                    known = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_ACTUATOR, i) for i in range(m.nu)]
                    raise MetatuneError(f"{self.spec.mjcf} has no actuator {name!r}; it has {known}")
                if a not in motors:
                    raise MetatuneError(f"actuator {name!r} does not drive a hinge or slide joint")
                chosen.append(a)
        for a in chosen:
            if int(m.actuator_biastype[a]) != int(mujoco.mjtBias.mjBIAS_NONE):
                name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_ACTUATOR, a)
                raise MetatuneError(f"actuator {name!r} is a servo (it has a bias force); PD tuning needs motors")
        return chosen

    def _start_state(self) -> Tensor:
        m = self.base
        qpos = m.key_qpos[0] if m.nkey > 0 else m.qpos0
        return torch.tensor(np.concatenate([qpos, np.zeros(m.nv + m.na)]), dtype=self.dtype, device=self.device)

    def _reference(self) -> tuple[Tensor, Tensor]:
        """Joint targets [T+1, n] and their rates [T+1, n] of the controlled joints."""
        steps = self.horizon + 1
        start = self.x0[self.qadr]
        q = start.expand(steps, -1).clone()
        unknown = sorted(set(self.spec.setpoint) - set(self.joint_names))
        if unknown:
            raise MetatuneError(f"--setpoint names joints {unknown} that no controlled actuator drives; "
                                f"controlled joints: {self.joint_names}")
        for name, value in self.spec.setpoint.items():
            q[:, self.joint_names.index(name)] = value
        if self.spec.reference is not None:
            q = self._reference_csv(Path(self.spec.reference), q)
        qd = torch.zeros_like(q)
        qd[1:-1] = (q[2:] - q[:-2]) / (2 * self.dt)
        return q, qd

    def _target(self) -> Tensor:
        """The whole state the controller steers to [T+1, nx]: the reference on the controlled joints, the
        start pose elsewhere, at rest."""
        x = self.x0.expand(self.horizon + 1, -1).clone()
        x[:, self.nq:] = 0.0
        x[:, self.qadr] = self.q_ref
        x[:, self.vel_idx] = self.qd_ref
        return x

    def _reference_csv(self, path: Path, q: Tensor) -> Tensor:
        try:
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
        except OSError as err:
            raise MetatuneError(f"cannot read reference {path}: {err.strerror}") from None
        if len(rows) < 2:
            raise MetatuneError(f"reference {path}: needs a header and at least one row")
        header, body = [h.strip() for h in rows[0]], rows[1:]
        try:
            values = np.array([[float(v) for v in r] for r in body if r], dtype=np.float64)
        except ValueError as err:
            raise MetatuneError(f"reference {path}: {err}") from None
        if values.ndim != 2 or values.shape[1] != len(header) or not np.isfinite(values).all():
            raise MetatuneError(f"reference {path}: every row needs {len(header)} finite numbers")
        t_out = np.arange(self.horizon + 1) * self.dt
        if header[0] == "time":
            t_in, cols, header = values[:, 0], values[:, 1:], header[1:]
            if (np.diff(t_in) <= 0).any():
                raise MetatuneError(f"reference {path}: the time column must increase")
        else:
            t_in, cols = np.arange(len(values)) * self.dt, values
        m, q = self.base, q.clone()
        for i, name in enumerate(header):
            track = torch.from_numpy(np.interp(t_out, t_in, cols[:, i])).to(q)
            site, dot, axis = name.rpartition(".")
            if name in self.joint_names:
                q[:, self.joint_names.index(name)] = track
            elif dot and axis in ("x", "y", "z") and mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, site) >= 0:
                if site not in self.site_targets:  # axes not given hold the site's start position
                    self.site_targets[site] = self._site_start(site).expand(len(t_out), 3).clone()
                self.site_targets[site][:, "xyz".index(axis)] = track
            else:
                raise MetatuneError(f"reference {path}: column {name!r} is neither a controlled joint "
                                    f"({self.joint_names}) nor a site axis like SITE.x")
        return q

    def _site_start(self, site: str) -> Tensor:
        """The site's world position at the start pose [3]."""
        d = mujoco.MjData(self.base)
        d.qpos[:] = self.x0[: self.nq].cpu().numpy()
        mujoco.mj_kinematics(self.base, d)
        return torch.tensor(d.site(site).xpos.copy(), dtype=self.dtype, device=self.device)

    def _default_log_gains(self) -> Tensor:
        """Log of kp, kd per controlled actuator: a 1 Hz, 0.7-damped oscillator about each joint's inertia."""
        m, d = self.base, mujoco.MjData(self.base)
        d.qpos[:] = self.x0[: m.nq].cpu().numpy()
        mujoco.mj_forward(m, d)
        full = np.zeros((m.nv, m.nv))
        mujoco.mj_fullM(m, d, full)
        omega, zeta = 2 * math.pi, 0.7
        kp, kd = [], []
        for a, v in zip(self.actuators, self.vadr):
            inertia, gear = full[v, v], abs(float(m.actuator_gear[a, 0])) or 1.0
            kp.append(inertia * omega ** 2 / gear)
            kd.append(2 * zeta * inertia * omega / gear)
        return torch.tensor(kp + kd, dtype=self.dtype, device=self.device).log()

    def dynamics(self, task: RobotTask) -> MujocoDynamics:
        """The task's randomised model as a differentiable step (kept for reuse, at most 64)."""
        key = tuple(sorted(task.params.items()))
        dyn = self._dynamics.get(key)
        if dyn is None:
            dyn = MujocoDynamics(randomised(self.base, task.params))
            self._dynamics[key] = dyn
            if len(self._dynamics) > 64:
                self._dynamics.popitem(last=False)[1].fd.close()
        return dyn

    def _cheaper_grad(self) -> str:
        """The spec's grad; "auto": "forward" (the closed loop in C, 2 G + 2 steps per step) when the gains are no
        more than a step Jacobian's columns (2 nv + na + nu, the adjoint's cost per step, plus its Python per
        step), else "adjoint"; the adjoint also when the C loop is not built."""
        from envs.mujoco_closed_loop import EXTENSION

        if self.spec.grad not in ("auto", "forward", "adjoint"):
            raise MetatuneError(f"--grad {self.spec.grad!r}: choose auto, forward or adjoint")
        if self.spec.grad == "forward" and EXTENSION.load() is None:
            raise MetatuneError(f"--grad forward needs the MuJoCo closed loop in C: {EXTENSION.unavailable_reason()}")
        if self.spec.grad != "auto":
            return self.spec.grad
        gains = self.init_params().numel()
        columns = 2 * self.nv + self.na + self.nu
        return "forward" if gains <= columns and EXTENSION.load() is not None else "adjoint"

    def native_families(self, dyn: MujocoDynamics) -> tuple[Any, Any]:
        """This problem's policy and cost as envs.LinearFeedback and envs.QuadraticCost (the same functions
        `closed_loop` writes in torch), for grad="forward" on one robot; the gains are flattened to [G]."""
        from envs.mujoco_closed_loop import LinearFeedback, QuadraticCost

        n, nx, act = len(self.actuators), self.nq + self.nv + self.na, self.actuators
        rows = torch.tensor(act, device=self.device)
        pos, vel = torch.tensor(self.qadr, device=self.device), torch.tensor(self.vel_idx, device=self.device)
        linear = self.spec.controller == "linear"

        def matrix(flat: Tensor) -> Tensor:  # u = W (x - target): PD rows -kp at q, -kd at qdot, minus K
            kp, kd = self._gains(flat if not linear else flat.reshape(n, nx))
            w = torch.zeros(n, nx, dtype=flat.dtype, device=flat.device)
            w = w.index_put((torch.arange(n), pos), -kp).index_put((torch.arange(n), vel), -kd)
            if linear:
                w = w - flat.reshape(n, nx)
            return torch.zeros(self.nu, nx, dtype=flat.dtype, device=flat.device).index_copy(0, rows, w)

        weights = torch.zeros(nx, dtype=self.dtype, device=self.device)
        weights[self.qadr] = 1.0
        sites = list(self.site_targets)
        site_ref = torch.stack([self.site_targets[s] for s in sites], 1) if sites else None
        cost = QuadraticCost(weights, target=self.x_target, effort=self.spec.effort, sites=sites,
                             site_targets=site_ref, dynamics=dyn)
        return LinearFeedback(matrix, reference=self.x_target), cost

    def robot_losses(self, params: Tensor, tasks: list[RobotTask], grad: str | None = None,
                     physics: str = "torch") -> Tensor:
        """As TuningProblem's; with grad="forward" each robot's closed loop runs in C (envs/mujoco_closed_loop.py)."""
        if (grad or self.grad) != "forward":
            return super().robot_losses(params, tasks, grad, physics)
        losses = []
        for i, task in enumerate(tasks):
            dyn = self.dynamics(task)
            policy, cost = self.native_families(dyn)
            out = mt.rollout(dyn.step, self.x0, policy, params[i].reshape(-1), self.horizon, grad="forward",
                             cost=cost, store_states=False)
            losses.append(out.cost)
        return torch.stack(losses) / self.horizon

    # -- TuningProblem ---------------------------------------------------------------------------------
    def init_params(self) -> Tensor:
        if self.spec.controller == "pd":
            return self.log_gains0.clone()
        return torch.zeros(len(self.actuators), self.nq + self.nv + self.na, dtype=self.dtype, device=self.device)

    def _gains(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """kp, kd [..., n] of the PD part."""
        n = len(self.actuators)
        g = (params if self.spec.controller == "pd" else self.log_gains0).exp()
        return g[..., :n], g[..., n:]

    def closed_loop(self, tasks: list[RobotTask]) -> tuple:
        models = [self.dynamics(t) for t in tasks]
        qadr, vel_idx = self.qadr, self.vel_idx
        act = torch.tensor(self.actuators, device=self.device)
        q_ref, qd_ref, target = self.q_ref, self.qd_ref, self.x_target
        linear = self.spec.controller == "linear"

        def step(x: Tensor, u: Tensor) -> Tensor:
            return torch.stack([dyn.step(x[i], u[i]) for i, dyn in enumerate(models)])

        def policy(x: Tensor, t: int | Tensor, params: Tensor) -> Tensor:
            kp, kd = self._gains(params)
            ti = int(t)
            e = q_ref[ti] - x[..., qadr]
            de = qd_ref[ti] - x[..., vel_idx]
            out = kp * e + kd * de
            if linear:
                out = out + ((target[ti] - x).unsqueeze(-2) * params).sum(-1)
            u = torch.zeros(*x.shape[:-1], self.nu, dtype=x.dtype, device=x.device)
            return u.index_copy(-1, act, out)

        sites = list(self.site_targets)
        site_ref = torch.stack([self.site_targets[n] for n in sites], 1) if sites else None  # [T+1, n, 3]

        def cost(x: Tensor, u: Tensor, t: int | Tensor) -> Tensor:
            e = q_ref[int(t)] - x[..., qadr]
            c = (e ** 2).sum(-1) + self.spec.effort * (u ** 2).sum(-1)
            if site_ref is not None:  # each robot's sites, differentiable through its own MuJoCo model
                pos = torch.stack([dyn.observe(x[i], sites=sites) for i, dyn in enumerate(models)])
                c = c + ((pos.reshape(*pos.shape[:-1], len(sites), 3) - site_ref[int(t)]) ** 2).sum((-2, -1))
            return c

        x0 = self.x0.expand(len(tasks), -1).clone()
        return step, x0, policy, cost

    def trajectory(self, states: Tensor) -> Trajectory:
        time = torch.arange(states.shape[0], dtype=self.dtype, device=states.device)[:, None].expand(
            states.shape[:2]) * self.dt
        reference = self.q_ref[: states.shape[0], None].expand(-1, states.shape[1], -1)
        return Trajectory(time, states, reference, states[..., self.qadr], tuple(self.joint_names))

    def features(self, task: RobotTask) -> Tensor:
        return torch.tensor([math.log(task.params[k]) for k in sorted(self.spec.randomise)], dtype=self.dtype,
                            device=self.device)

    def mujoco_step(self, tasks: list[RobotTask]):
        return self.closed_loop(tasks)[0]  # the physics is MuJoCo already

    def simulate_mujoco(self, params: Tensor, tasks: list[RobotTask]) -> Trajectory:
        return self.simulate(params, tasks)  # the physics is MuJoCo already

    def gains_json(self, params: Tensor) -> list[dict[str, Any]]:
        """Tuned gains per robot and actuator: [{actuator: {"kp": .., "kd": ..}}, ...]."""
        if self.spec.controller == "linear":
            params = self.log_gains0.expand(params.shape[0], -1)  # the PD part; K is in metrics.json's params
        kp, kd = self._gains(params.detach())
        m = self.base
        names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_ACTUATOR, a) or f"actuator{a}" for a in self.actuators]
        return [{n: {"joint": j, "kp": float(p), "kd": float(d)} for n, j, p, d in zip(names, self.joint_names, pr, dr)}
                for pr, dr in zip(kp.reshape(-1, len(names)), kd.reshape(-1, len(names)))]
