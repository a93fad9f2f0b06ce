"""Controller meta-tuning with the engine: meta-train on sampled robots, adapt to an unseen one, evaluate."""
from __future__ import annotations

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
    inner_max_step: float = 1.0   # trust region of an inner step on a log-gain (a factor of e at most)
    inner_backtrack: int = 4      # halvings of an inner step after which a robot's rollout diverged
    fd_hessian: float | None = None  # second-order meta-gradient by finite-difference Hessian-vector products
    seed: int = 0


def make_tuner(problem: TuningProblem, cfg: RobotMetaConfig, log_path: Path | None = None) -> mt.MetaTuner:
    """A MetaTuner whose tasks are batches of robots drawn from the problem's distribution.

    Meta-training step k draws its robots with seed 1e6 * seed + k, so a resumed run draws what an
    uninterrupted one would.
    """
    if cfg.init not in ("shared", "neural"):
        raise mt.MetatuneError(f"unknown gain init {cfg.init!r}; choose 'shared' or 'neural'")
    if cfg.robots_per_task < 1 or cfg.inner_steps < 0:
        raise mt.MetatuneError(f"robots_per_task must be >= 1 and inner_steps >= 0, got {cfg.robots_per_task} "
                               f"and {cfg.inner_steps}")
    with torch.random.fork_rng(devices=[]):  # the neural policy's initial weights: seeded, global RNG untouched
        torch.manual_seed(cfg.seed)
        init = NeuralGains(problem) if cfg.init == "neural" else SharedGains(problem.init_params())
    config = mt.MetaConfig(method=cfg.method, inner_steps=cfg.inner_steps, inner_lr=cfg.inner_lr,
                           outer_lr=cfg.outer_lr, meta_batch=1, first_order=True, batch_dims=1, seed=cfg.seed,
                           inner_max_step=cfg.inner_max_step, inner_backtrack=cfg.inner_backtrack,
                           drop_diverging=True, fd_hessian=cfg.fd_hessian)
    tuner: mt.MetaTuner

    def sample(n: int) -> list[list[RobotTask]]:
        return [problem.sample_tasks(cfg.robots_per_task, seed=1_000_000 * cfg.seed + tuner.step_count * n + i)
                for i in range(n)]

    tuner = mt.MetaTuner(init, problem.loss, sample_tasks=sample, config=config, log_path=log_path)
    return tuner


def fixed_start_tuner(start: Tensor, lr: float | Tensor, problem: TuningProblem) -> mt.MetaTuner:
    """A tuner that adapts from a fixed start [B, ...] with fixed step sizes (a scalar, or one per element of
    the start): plain gradient descent through the engine, for untuned baselines."""
    lr_t = torch.as_tensor(lr, dtype=start.dtype, device=start.device)
    config = mt.MetaConfig(method="metasgd", inner_lr=1.0, meta_batch=1, first_order=True, batch_dims=0)
    tuner = mt.MetaTuner(start.detach().clone(), problem.loss, config=config)
    assert tuner.log_lr is not None
    tuner.log_lr[0].data.copy_(lr_t.log().expand_as(start))
    return tuner


def adapt_robots(problem: TuningProblem, tuner: mt.MetaTuner, tasks: list[RobotTask], steps: int,
                 physics: str = "torch") -> tuple[Tensor, Tensor]:
    """Adapt the tuner's start to these robots in `steps` engine steps (MetaTuner.adapt), each robot on its own
    loss, through the torch models or MuJoCo (physics): the adapted params [B, ...] and each robot's mean
    cost before every step and after the last [steps+1, B]."""
    costs: list[Tensor] = []

    def loss(params: Tensor, robots: list[RobotTask]) -> Tensor:  # the engine's hook: another physics
        per_robot = problem.robot_losses(params, robots, physics=physics)
        costs.append(per_robot.detach())
        return (per_robot.log() if problem.log_loss else per_robot).sum()

    res = tuner.adapt(tasks, steps, inner_loss=loss)
    params = res.params if isinstance(res.params, Tensor) else res.params[0]
    return params, torch.stack(costs)


def learned_step_sizes(tuner: mt.MetaTuner) -> Tensor:
    """The per-parameter inner step sizes a Meta-SGD tuner learned (or its fixed one)."""
    sizes = tuner.step_sizes()
    return sizes if isinstance(sizes, Tensor) else sizes[0]
