"""The three verbs of the robot domain (train, adapt, evaluate) as functions writing PNGs and JSON."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import metatune as mt
from envs.meta_tuning import RobotMetaConfig, adapt_robots, fixed_start_tuner, make_tuner
from envs.mjcf_problem import MjcfTracking
from envs.plots import plot_curves, plot_tracking
from envs.problems import make_problem
from envs.tasks import RobotTask
from envs.tuning_problem import TuningProblem
from metatune.atomic import write_json
from metatune.run_folder import RunFolder, checkpoint_file, run_folder_of

DOMAIN, KIND = "robot", "meta_tuner"


TRAIN_DEFINING = ("domain", "task", "horizon", "dt", "config", "mjcf")  # a resume must agree on these
VALIDATION_SEED = 999_999  # the held-out robots `train` scores (training step k of seed s draws 1e6 * s + k)


def validation(problem: TuningProblem, tuner: mt.MetaTuner, robots: int) -> dict[str, Any]:
    """The meta-objective on `robots` held-out robots: the tuner adapts to them with its inner steps, then the mean
    over robots of the loss at the adapted gains (log cost), and how many robots' closed loops diverged there (left
    out of the mean, so compare both). Leaves `problem.dropped_robots` as it was."""
    tasks, dropped = problem.sample_tasks(robots, seed=VALIDATION_SEED), problem.dropped_robots
    try:
        params = tuner.adapt(tasks).params
        assert isinstance(params, Tensor)  # a robot tuner's start is one tensor [B, ...]
        with torch.no_grad():
            losses, kept = problem.kept_losses(params, tasks, grad="autograd")
        result = {"loss": float((losses.log() if problem.log_loss else losses).mean()), "diverged": kept.count(False)}
    except mt.MetatuneError:  # every robot diverged
        result = {"loss": None, "diverged": robots}
    problem.dropped_robots = dropped
    return result


def train(task: str, out: Path, steps: int, cfg: RobotMetaConfig, horizon: int | None = None,
          dt: float | None = None, progress: bool = True, force: bool = False,
          checkpoint_every: int = 5, mjcf: dict | None = None, device: torch.device | str = "cpu",
          validation_robots: int = 0) -> dict[str, Any]:
    """Meta-train a controller on sampled robots into the run folder `out` (docs/cli.md): config.json,
    checkpoint.pt every `checkpoint_every` steps, log.jsonl appended, training.png, metrics.json (with the
    `validation` of the untrained and the trained tuner on `validation_robots` held-out robots; 0: none).

    A run folder holding the same run resumes where its checkpoint ends (and equals an uninterrupted run);
    one holding another run is refused unless `force`. `mjcf`: a user's model (envs.mjcf_problem.MjcfSpec as a
    dict) instead of the built-in `task`. `device` holds the gains and the torch models (not part of the run's
    definition: a run resumes on any device).
    """
    if steps < 1:
        raise mt.MetatuneError(f"train steps must be >= 1, got {steps}")
    problem = make_problem(task, horizon, dt, mjcf, device)
    run = RunFolder(out)
    config = {"domain": "robot", "verb": "train", "task": task, "horizon": problem.horizon, "dt": problem.dt,
              "config": asdict(cfg), "mjcf": mjcf}
    with run.lock():
        resuming = run.start(config, TRAIN_DEFINING, force)
        tuner = make_tuner(problem, cfg, log_path=run.log)
        if resuming:
            tuner.load(run.checkpoint, DOMAIN, KIND)
        while tuner.step_count < steps:
            tuner.train(min(checkpoint_every, steps - tuner.step_count), progress=progress)
            tuner.save(run.checkpoint, DOMAIN, KIND)
        history = [h for h in run.step_history(tuner.step_count) if h["outer_loss"] is not None]  # not dropped
        plot_curves({"before adaptation": [h["inner_loss_before"] for h in history],
                     "after adaptation (query)": [h["outer_loss"] for h in history]},
                    run / "training.png", f"{task}: meta-training", "meta-training step",
                    "sum over robots of log cost" if problem.log_loss else "cost (sum over robots)")
        skipped = tuner.step_count - len(history)
        metrics = {"task": task, "steps": tuner.step_count, "resumed": resuming,
                   "skipped_steps": skipped,  # meta-steps whose every robot diverged: logged, no update
                   "dropped_robots": problem.dropped_robots,  # this session's robots whose closed loop diverged
                   "first_loss": history[0]["inner_loss_before"], "last_outer_loss": history[-1]["outer_loss"],
                   "checkpoint": str(run.checkpoint)}
        if validation_robots:  # the same held-out robots before and after: the per-step losses are on new ones
            metrics["validation"] = {"robots": validation_robots,
                                     "untrained": validation(problem, make_tuner(problem, cfg), validation_robots),
                                     "trained": validation(problem, tuner, validation_robots)}
        write_json(run.metrics, metrics)
    return metrics


def load_tuner(checkpoint: Path, device: torch.device | str = "cpu") -> tuple[TuningProblem, mt.MetaTuner]:
    """The problem and meta-tuner of a `train` run folder (or of the checkpoint file inside it), on `device`."""
    path = checkpoint_file(checkpoint)
    run = RunFolder(run_folder_of(checkpoint))
    settings = run.read_config()
    if settings is None:
        raise mt.MetatuneError(f"{run.config} not found: {checkpoint} is not a run folder of 'metatune robot train'")
    if settings.get("domain") != "robot":
        raise mt.MetatuneError(f"{run.path} is a {settings.get('domain')!r} run, not a robot one")
    try:
        problem = make_problem(settings["task"], settings["horizon"], settings["dt"], settings.get("mjcf"), device)
        cfg = RobotMetaConfig(**settings["config"])
    except (KeyError, TypeError) as err:
        raise mt.MetatuneError(f"cannot read run settings {run.config}: {err}") from None
    tuner = make_tuner(problem, cfg)
    tuner.load(path, DOMAIN, KIND)
    return problem, tuner


def starts(problem: TuningProblem, tuner: mt.MetaTuner | None, n: int) -> dict[str, mt.MetaTuner]:
    """Where adaptation starts: untuned (hand-set gains, the default step) and, with a tuner, meta-tuned."""
    out = {"untuned": fixed_start_tuner(problem.batch_params(n), RobotMetaConfig().inner_lr
                                        if tuner is None else tuner.config.inner_lr, problem)}
    if tuner is not None:
        out["meta-tuned"] = tuner
    return out


def adapt(problem: TuningProblem, tuner: mt.MetaTuner | None, tasks: list[RobotTask], steps: int,
          out_dir: Path, backend: str = "torch", physics: str = "torch") -> dict[str, Any]:
    """Adapt to unseen robots from each start through the engine (MetaTuner.adapt); plots and JSON into out_dir.

    physics: what the adaptation gradients differentiate (torch models or MuJoCo); backend: what the
    reported trajectories are simulated with.
    """
    if backend not in ("torch", "mujoco"):
        raise mt.MetatuneError(f"unknown backend {backend!r}; choose 'torch' or 'mujoco'")
    out_dir = Path(out_dir)
    if isinstance(problem, MjcfTracking):  # a user's model: MuJoCo is its only physics
        backend = physics = "mujoco"
    curves, runs, gains, metrics = {}, {}, {}, {"task": problem.name, "robots": [t.describe() for t in tasks],
                                     "steps": steps, "backend": backend, "physics": physics}
    simulate = problem.simulate_mujoco if backend == "mujoco" else problem.simulate
    for name, start_tuner in starts(problem, tuner, len(tasks)).items():
        with torch.no_grad():
            start = start_tuner.init(tasks)
            start = (start if isinstance(start, Tensor) else start[0]).detach().clone()
        params, costs = adapt_robots(problem, start_tuner, tasks, steps, physics)
        curves[name] = costs.mean(1).tolist()
        before, after = simulate(start, tasks), simulate(params, tasks)
        runs[f"{name} start"] = before
        runs[f"{name} + {steps} steps"] = after
        metrics[name] = {"cost_by_step": curves[name], "rmse_start": before.rmse().tolist(),
                         "rmse_adapted": after.rmse().tolist(), "params": params.tolist()}
        if isinstance(problem, MjcfTracking):
            gains[name] = problem.gains_json(params)
    plot_tracking(runs, out_dir / "tracking.png", f"{problem.name}: reference vs tracked ({backend}), robot 0")
    plot_curves(curves, out_dir / "adaptation.png", f"{problem.name}: cost over adaptation steps",
                "adaptation step", "cost (mean over robots)")
    if gains:  # a user's model: the adapted gains per robot and actuator
        write_json(out_dir / "gains.json", gains)
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def evaluate(problem: TuningProblem, tuner: mt.MetaTuner | None, tasks: list[RobotTask], steps: int,
             backend: str, out_dir: Path, physics: str = "torch") -> dict[str, Any]:
    """Tracking RMSE over robots: untuned vs meta-tuned, at the start and after `steps` adaptation steps."""
    metrics = adapt(problem, tuner, tasks, steps, out_dir, backend, physics)
    summary = {}
    for name in ("untuned", "meta-tuned"):
        if name in metrics:
            m = metrics[name]
            summary[name] = {"rmse_start": sum(m["rmse_start"]) / len(tasks),
                             "rmse_adapted": sum(m["rmse_adapted"]) / len(tasks)}
    metrics["summary"] = summary
    write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics


def tune(task: str, out_dir: Path, train_steps: int, adapt_steps: int, robots: int, cfg: RobotMetaConfig,
         horizon: int | None = None, dt: float | None = None, backend: str = "torch",
         seed: int = 12345) -> dict[str, Any]:
    """Meta-train on sampled robots, then adapt to `robots` unseen ones: what the robot scripts run."""
    out_dir = Path(out_dir)
    trained = train(task, out_dir / "train", train_steps, cfg, horizon, dt)
    problem, tuner = load_tuner(out_dir / "train")
    result = evaluate(problem, tuner, problem.sample_tasks(robots, seed=seed), adapt_steps, backend, out_dir)
    summary = {"task": task, "backend": backend, "train": trained, **result["summary"]}
    write_json(out_dir / "summary.json", summary)
    return summary
