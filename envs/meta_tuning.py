"""Controller meta-tuning with the engine: meta-train on sampled robots, adapt to an unseen one, evaluate."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import metatune as mt
from envs.gain_init import NeuralGains, SharedGains
from envs.tasks import RobotTask
from envs.tuning_problem import TuningProblem


@dataclass
class RobotMetaConfig:
    """Meta-tuning settings; adjoint rollouts need first-order meta-gradients."""

    method: str = "metasgd"       # metasgd (learned per-gain step sizes) or fomaml
    init: str = "shared"          # shared gains, or "neural": gains from task features
    inner_steps: int = 2
    inner_lr: float = 0.3         # on log-gains and log-cost: a step changes gains by tens of percent
    outer_lr: float = 0.05
    robots_per_task: int = 4      # robots simulated together in one rollout (one meta-task)
    seed: int = 0


def make_tuner(problem: TuningProblem, cfg: RobotMetaConfig, log_path: Path | None = None) -> mt.MetaTuner:
    """A MetaTuner whose tasks are batches of robots drawn from the problem's distribution."""
    counter = itertools.count()

    def sample(n: int) -> list[list[RobotTask]]:
        return [problem.sample_tasks(cfg.robots_per_task, seed=1_000_000 * cfg.seed + next(counter))
                for _ in range(n)]

    init = NeuralGains(problem) if cfg.init == "neural" else SharedGains(problem.init_params())
    if cfg.init not in ("shared", "neural"):
        raise mt.MetatuneError(f"unknown gain init {cfg.init!r}; choose 'shared' or 'neural'")
    config = mt.MetaConfig(method=cfg.method, inner_steps=cfg.inner_steps, inner_lr=cfg.inner_lr,
                           outer_lr=cfg.outer_lr, meta_batch=1, first_order=True, batch_dims=1, seed=cfg.seed)
    return mt.MetaTuner(init, problem.loss, sample_tasks=sample, config=config, log_path=log_path)


def gradient_descent(problem: TuningProblem, params: Tensor, tasks: list[RobotTask], steps: int,
                     lr: float | Tensor, physics: str = "torch") -> tuple[Tensor, Tensor]:
    """Plain adjoint gradient steps on each robot's own loss (as `problem.loss` defines it):
    params [B, ...]; returns the adapted params and each robot's mean cost [steps+1, B]. physics "mujoco"
    takes the gradients through MuJoCo itself (see TuningProblem.robot_losses)."""
    x = params.detach().clone()
    losses = []
    for k in range(steps + 1):
        leaf = x.requires_grad_()
        per_robot = problem.robot_losses(leaf, tasks, physics=physics)
        losses.append(per_robot.detach())
        if k == steps:
            break
        objective = per_robot.log().sum() if problem.log_loss else per_robot.sum()
        (g,) = torch.autograd.grad(objective, leaf)
        x = (leaf - lr * g).detach()
    return x.detach(), torch.stack(losses)


def learned_step_sizes(tuner: mt.MetaTuner) -> Tensor:
    """The per-parameter inner step sizes a Meta-SGD tuner learned (or its fixed one)."""
    sizes = tuner.step_sizes()
    return sizes if isinstance(sizes, Tensor) else sizes[0]
