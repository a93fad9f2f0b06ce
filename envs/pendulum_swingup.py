"""Pendulum swing-up with a torque limit: energy pumping blended into a PD catch at the top.

Parameters (log scale) [3]: energy gain kE, catch stiffness kp, catch damping kd. The controller
uses the nominal pendulum's energy; the robots differ in mass, length, damping and payload.
"""
from __future__ import annotations

import torch
from torch import Tensor

from envs.catalog import default_params, make
from envs.tasks import RobotTask, TaskDistribution, stack_params
from envs.tuning_problem import Trajectory, TuningProblem

PENDULUM_TASKS = TaskDistribution(
    "pendulum", ranges={"mass_pole": (0.15, 0.3), "length_pole": (0.4, 0.6), "damping_pole": (0.01, 0.08),
                        "payload_pole": (0.0, 0.08)})
HAND_SET = (3.0, 5.0, 0.5)


class PendulumSwingUp(TuningProblem):
    """Swing a torque-limited pendulum from hanging (q = 0) to upright (q = pi) and hold it there."""

    name = "pendulum"

    def __init__(self, horizon: int = 400, dt: float = 0.01, torque_limit: float = 0.6,
                 distribution: TaskDistribution = PENDULUM_TASKS, dtype: torch.dtype = torch.float64,
                 device: torch.device | str = "cpu"):
        self.horizon, self.dt, self.torque_limit = horizon, dt, torque_limit
        self.distribution, self.dtype, self.device = distribution, dtype, torch.device(device)
        nominal = default_params("pendulum")
        m = nominal["mass_pole"]
        self.inertia = nominal["inertia_pole"] + m * nominal["com_pole"] ** 2
        self.mgl = m * 9.81 * nominal["com_pole"]

    def init_params(self) -> Tensor:
        return torch.tensor(HAND_SET, dtype=self.dtype, device=self.device).log()

    def policy(self, x: Tensor, t: int, log_gains: Tensor) -> Tensor:  # [B, 2], [B, 3] -> [B, 1]
        g = log_gains.exp()
        q, qd = x[..., 0], x[..., 1]
        energy = 0.5 * self.inertia * qd ** 2 - self.mgl * torch.cos(q)
        pump = g[..., 0] * (self.mgl - energy) * qd
        catch = g[..., 1] * torch.sin(q) - g[..., 2] * qd  # -kp sin(q - pi) - kd qd
        near_top = ((1 - torch.cos(q)) / 2) ** 8
        u = (1 - near_top) * pump + near_top * catch
        return (self.torque_limit * torch.tanh(u / self.torque_limit))[..., None]

    def closed_loop(self, tasks: list[RobotTask]) -> tuple:
        env = make("pendulum", dtype=self.dtype, dt=self.dt,
                   **stack_params(tasks, default_params("pendulum"), self.dtype, self.device))
        x0 = torch.zeros(len(tasks), 2, dtype=self.dtype, device=self.device)
        x0[:, 0] = 0.05  # a nudge off the bottom equilibrium, where pumping has nothing to act on

        def cost(x: Tensor, u: Tensor, t: int) -> Tensor:
            return (1 + torch.cos(x[..., 0])) + 0.01 * x[..., 1] ** 2 + 0.1 * u[..., 0] ** 2

        return env.step, x0, self.policy, cost

    def trajectory(self, states: Tensor) -> Trajectory:
        time = torch.arange(states.shape[0], dtype=self.dtype, device=states.device)[:, None].expand(
            states.shape[:2]) * self.dt
        # tracked: the tip height (cos form), reference: upright; distance measured on the unit circle
        tracked = torch.stack([torch.sin(states[..., 0]), -torch.cos(states[..., 0])], -1)
        reference = torch.zeros_like(tracked)
        reference[..., 1] = 1.0
        return Trajectory(time, states, reference, tracked, ("sin q", "-cos q"))

    def mjcf(self, task: RobotTask) -> str:
        return make("pendulum", dt=self.dt, **task.params).mjcf()

    def features(self, task: RobotTask) -> Tensor:
        p = {**default_params("pendulum"), **task.params}
        return torch.tensor([p["mass_pole"] / 0.2 - 1, p["length_pole"] / 0.5 - 1, p["damping_pole"] * 20 - 1,
                             p["payload_pole"] * 20 - 1], dtype=self.dtype, device=self.device)

