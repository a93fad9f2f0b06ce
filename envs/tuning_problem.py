"""What every controller-tuning problem provides to meta-tuning, the CLI, scripts and benchmarks.

A problem works on a batch of B robots at once (one rollout simulates them all); controller
parameters carry that batch as their leading dimension ([B, ...]), one controller per robot.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

import metatune as mt
from envs.tasks import RobotTask, TaskDistribution

FD_HESSIAN = 1e-5  # finite-difference step (on log-gains) of second-order meta-gradients (MetaConfig.fd_hessian)


@dataclass
class Trajectory:
    """A simulated closed loop: time [T+1, B], states [T+1, B, nx], reference and tracked [T+1, B, r]."""

    time: Tensor
    states: Tensor
    reference: Tensor
    tracked: Tensor
    labels: tuple[str, ...]

    def rmse(self) -> Tensor:
        """Root mean square tracking error of each robot [B]."""
        return ((self.tracked - self.reference) ** 2).sum(-1).mean(0).sqrt()


class TuningProblem(ABC):
    """A robot family, a controller with tunable parameters, a reference and a cost."""

    name: str
    horizon: int
    distribution: TaskDistribution
    dtype: torch.dtype
    device = torch.device("cpu")  # where its tensors live (MuJoCo steps on the CPU and hands results back here)
    grad: str = "adjoint"
    outer_lr: float = 0.05  # the meta-training step `metatune robot train` uses unless told
    log_loss: bool = True  # adapt on log(cost): scale-free steps, costs span decades across robots
    dropped_robots: int = 0  # robots left out of a loss because their closed loop diverged (see `loss`)
    # the meta-gradient's second-order term by finite-difference Hessian-vector products (MetaConfig.fd_hessian)
    # that `metatune robot train` uses unless told; None: first-order
    fd_hessian: float | None = None

    @abstractmethod
    def init_params(self) -> Tensor:
        """The untuned (hand-set or nominal-model) controller parameters of one robot [...]."""

    @abstractmethod
    def closed_loop(self, tasks: list[RobotTask]) -> tuple:
        """(step, x0 [B, nx], policy, cost) for metatune.rollout on these robots."""

    @abstractmethod
    def trajectory(self, states: Tensor) -> Trajectory:
        """Reference vs tracked quantities of a rollout's states [T+1, B, nx]."""

    @abstractmethod
    def features(self, task: RobotTask) -> Tensor:
        """Task features [F] (what a neural gain policy sees)."""

    def batch_params(self, n: int) -> Tensor:
        """init_params repeated for n robots [n, ...]."""
        p = self.init_params()
        return p.expand(n, *p.shape).clone()

    def robot_losses(self, params: Tensor, tasks: list[RobotTask], grad: str | None = None,
                     physics: str = "torch") -> Tensor:
        """Mean per-step cost of each robot's closed loop [B] (differentiable in params [B, ...]).

        physics: "torch" (the torch models) or "mujoco" (each robot's MJCF stepped by MuJoCo, differentiated
        through mjd_transitionFD Jacobians).
        """
        step, x0, policy, cost = self.closed_loop(tasks)
        if physics == "mujoco":
            step = self.mujoco_step(tasks)
        elif physics != "torch":
            raise mt.MetatuneError(f"unknown physics {physics!r}; choose 'torch' or 'mujoco'")
        # only the cost is read: the adjoint then keeps one state per segment (memory flat in the horizon)
        out = mt.rollout(step, x0, policy, params, self.horizon, grad=grad or self.grad, cost=cost, store_states=False)
        return out.cost / self.horizon

    def kept_losses(self, params: Tensor, tasks: list[RobotTask], grad: str | None = None) -> tuple[Tensor, list[bool]]:
        """robot_losses of the robots whose closed loop does not diverge [K], and which those are [B].

        A robot whose rollout raises a MetatuneError (it diverged) is left out and counted in `dropped_robots`;
        if every robot diverges the error is raised.
        """
        try:
            return self.robot_losses(params, tasks, grad), [True] * len(tasks)
        except mt.MetatuneError:
            if len(tasks) == 1:
                raise
            kept, mask = [], []
            for i in range(len(tasks)):  # find the diverging robots: each on its own
                try:
                    kept.append(self.robot_losses(params[i:i + 1], tasks[i:i + 1], grad))
                    mask.append(True)
                except mt.MetatuneError:
                    self.dropped_robots += 1
                    mask.append(False)
            if not kept:
                raise
            return torch.cat(kept), mask

    def loss(self, params: Tensor, tasks: list[RobotTask], grad: str | None = None) -> Tensor:
        """Sum over robots of their mean cost (or its log): each robot's gradient is its own (scalar).

        A robot whose closed loop diverges at these gains is left out of the sum (`kept_losses`), so one
        unstable robot does not abort meta-training.
        """
        losses, _ = self.kept_losses(params, tasks, grad)
        return (losses.log() if self.log_loss else losses).sum()

    def simulate(self, params: Tensor, tasks: list[RobotTask]) -> Trajectory:
        """The closed loops on the torch dynamics, without gradients."""
        step, x0, policy, _ = self.closed_loop(tasks)
        with torch.no_grad():
            out = mt.rollout(step, x0, policy, params.detach(), self.horizon, grad="autograd")
        return self.trajectory(out.states)

    def mjcf(self, task: RobotTask) -> str:
        """The task's robot as MJCF (for simulating the closed loop in MuJoCo); problems with one override this."""
        raise mt.MetatuneError(f"the {self.name} problem has no MJCF form, so it cannot run on MuJoCo")

    def mujoco_step(self, tasks: list[RobotTask]):
        """A differentiable step(x [B, nx], u [B, nu]) that advances robot i with MuJoCo on its own MJCF."""
        from envs.mujoco_dynamics import MujocoDynamics

        models = [MujocoDynamics(self.mjcf(task)) for task in tasks]

        def step(x: Tensor, u: Tensor) -> Tensor:
            return torch.stack([m.step(x[i], u[i]) for i, m in enumerate(models)])

        return step

    def simulate_mujoco(self, params: Tensor, tasks: list[RobotTask]) -> Trajectory:
        """The same closed loops with MuJoCo as the physics (each robot's own MJCF), without gradients."""
        from envs.mujoco_dynamics import MujocoDynamics

        runs = []
        for i, task in enumerate(tasks):
            dyn = MujocoDynamics(self.mjcf(task))
            _, x0, policy, _ = self.closed_loop([task])
            with torch.no_grad():
                out = mt.rollout(dyn.step, x0, policy, params[i:i + 1].detach(), self.horizon, grad="autograd")
            runs.append(out.states[:, 0])
        return self.trajectory(torch.stack(runs, 1))

    def sample_tasks(self, n: int, seed: int) -> list[RobotTask]:
        """n robots from the task distribution; the seed names the set."""
        return self.distribution.sample(n, torch.Generator().manual_seed(seed))

    def task_features(self, tasks: list[RobotTask]) -> Tensor:
        """Features of a batch of robots [B, F]."""
        return torch.stack([self.features(t) for t in tasks])
