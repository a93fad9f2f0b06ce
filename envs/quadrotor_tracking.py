"""Quadrotor figure-eight tracking under wind gusts: the geometric controller + disturbance observer."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from envs.catalog import make
from envs.figure_eight import FigureEight
from envs.geometric_controller import ClosedLoopQuadrotor, GeometricController, default_log_gains
from envs.quadrotor import Quadrotor
from envs.tasks import RobotTask, TaskDistribution, stack_params
from envs.tuning_problem import Trajectory, TuningProblem
from metatune.errors import MetatuneError
from metatune.mujoco_loader import load_mujoco

QUAD_TASKS = TaskDistribution(
    "quadrotor",
    ranges={"mass": (0.7, 1.5), "payload": (0.0, 0.4), "ixx": (0.007, 0.015), "iyy": (0.007, 0.015),
            "izz": (0.010, 0.014), "drag": (0.05, 0.4)},
    wind=(3.0, 3.0, 0.5), gust=(2.0, 2.0, 0.5), gust_hz=(0.2, 1.0))


class QuadrotorTracking(TuningProblem):
    """Track a figure-eight from rest; parameters are log gains [knots, 4 or 5] (see geometric_controller)."""

    name = "quadrotor"

    def __init__(self, horizon: int = 300, dt: float = 0.01, knots: int = 1, observer: bool = True,
                 reference: FigureEight | None = None, distribution: TaskDistribution = QUAD_TASKS,
                 dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"):
        self.horizon, self.dt, self.knots, self.observer = horizon, dt, knots, observer
        self.reference = reference or FigureEight()
        self.distribution, self.dtype, self.device = distribution, dtype, torch.device(device)
        self.nominal = Quadrotor(dtype=dtype, dt=dt)

    def init_params(self) -> Tensor:
        return default_log_gains(self.knots, self.observer, self.dtype, self.device)

    def controller(self) -> GeometricController:
        return GeometricController(self.nominal, self.reference, self.horizon, self.observer, self.device)

    def robot(self, tasks: list[RobotTask]) -> ClosedLoopQuadrotor:
        """The B robots with their gusts, as one batched closed-loop step."""
        quad = make("quadrotor", dtype=self.dtype, dt=self.dt,
                    **stack_params(tasks, Quadrotor.DEFAULTS, self.dtype, self.device))
        like = {"dtype": self.dtype, "device": self.device}
        return ClosedLoopQuadrotor(quad, torch.tensor([t.gust for t in tasks], **like),
                                   torch.tensor([t.gust_hz for t in tasks], **like)[:, None],
                                   torch.tensor([t.phase for t in tasks], **like))

    def x0(self, n: int) -> Tensor:
        """At rest at the reference's start, level [n, 17]."""
        x = torch.zeros(n, 17, dtype=self.dtype, device=self.device)
        x[:, :3] = self.reference(torch.zeros((), dtype=self.dtype, device=self.device))[0]
        x[:, 3] = 1.0
        return x

    def closed_loop(self, tasks: list[RobotTask]) -> tuple:
        ref = self.reference

        def cost(x: Tensor, u: Tensor, t: int) -> Tensor:
            p_d = ref.position(x[..., 16])
            return ((x[..., :3] - p_d) ** 2).sum(-1) + 1e-3 * (x[..., 10:13] ** 2).sum(-1)

        return self.robot(tasks).step, self.x0(len(tasks)), self.controller(), cost

    def trajectory(self, states: Tensor) -> Trajectory:
        time = states[..., 16]
        return Trajectory(time, states, self.reference(time)[0], states[..., :3], ("x", "y", "z"))

    def features(self, task: RobotTask) -> Tensor:
        p = {**Quadrotor.DEFAULTS, **task.params}
        wind = list(p["wind"])
        inertia = [(p[k] - 0.011) / 0.004 for k in ("ixx", "iyy", "izz")]  # about [-1, 1] over the ranges
        return torch.tensor([p["mass"] + p["payload"] - 1.0, p["drag"] * 5 - 1, *inertia, *(w / 3 for w in wind),
                             *(g / 2 for g in task.gust), task.gust_hz], dtype=self.dtype, device=self.device)

    def mujoco_step(self, tasks: list[RobotTask]):
        raise MetatuneError("quadrotor gradients through MuJoCo are not offered: the gusty aerodynamic force is "
                            "not part of the MJCF; adapt on the torch model and evaluate with --backend mujoco")

    def simulate_mujoco(self, params: Tensor, tasks: list[RobotTask]) -> Trajectory:
        """The same closed loops simulated by MuJoCo, one robot at a time (MJCF written by each robot;
        the aerodynamic force under gusts applied as xfrc_applied)."""
        runs = [self._mujoco_one(params[i], tasks[i]) for i in range(len(tasks))]
        return self.trajectory(torch.stack(runs, 1))

    def _mujoco_one(self, params: Tensor, task: RobotTask) -> Tensor:  # -> states [T+1, 17] on self.device
        closed = self.robot([task])
        quad = closed.quad
        mujoco = load_mujoco()  # on first use: importing this module loads no MuJoCo
        model = mujoco.MjModel.from_xml_string(quad.mjcf(index=0))
        data = mujoco.MjData(model)
        policy = self.controller()
        x = self.x0(1)[0]
        data.qpos[:], data.qvel[:] = x[:7].cpu().numpy(), x[7:13].cpu().numpy()  # MuJoCo steps on the CPU
        states = [x]
        drag = float(quad.params["drag"][0])
        with torch.no_grad():
            for t in range(self.horizon):
                u = policy(x, t, params.detach())
                wind = closed.wind(x[16:17])[0].cpu().numpy()
                data.xfrc_applied[1, :3] = drag * (wind - data.qvel[:3])
                data.ctrl[:] = u[:4].cpu().numpy()
                mujoco.mj_step(model, data)
                robot = torch.from_numpy(np.concatenate([data.qpos, data.qvel])).to(x)
                x = torch.cat([robot, x[13:16] + self.dt * u[4:7], x[16:17] + self.dt])
                states.append(x)
        return torch.stack(states)
