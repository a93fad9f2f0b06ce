"""The three verbs of the robot domain (train, adapt, evaluate) as functions writing PNGs and JSON."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import metatune as mt
from envs.meta_tuning import RobotMetaConfig, gradient_descent, learned_step_sizes, make_tuner
from envs.plots import plot_curves, plot_tracking
from envs.problems import make_problem
from envs.tasks import RobotTask
from envs.tuning_problem import TuningProblem


def write_json(data: dict, path: Path) -> Path:
    """Write JSON atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def train(task: str, out: Path, steps: int, cfg: RobotMetaConfig, horizon: int | None = None,
          dt: float | None = None, progress: bool = True) -> dict[str, Any]:
    """Meta-train a controller on sampled robots; writes the checkpoint, its settings and a training plot."""
    if steps < 1:
        raise mt.MetatuneError(f"train steps must be >= 1, got {steps}")
    problem = make_problem(task, horizon, dt)
    out = Path(out)
    log = out.with_suffix(".jsonl")
    log.unlink(missing_ok=True)
    tuner = make_tuner(problem, cfg, log_path=log)
    history = tuner.train(steps, progress=progress)
    tuner.save(out)
    settings = {"task": task, "horizon": problem.horizon, "dt": problem.dt, "config": asdict(cfg)}
    write_json(settings, out.with_suffix(".json"))
    plot_curves({"before adaptation": [h["inner_loss_before"] for h in history],
                 "after adaptation (query)": [h["outer_loss"] for h in history]},
                out.with_suffix(".png"), f"{task}: meta-training", "meta-training step",
                "sum over robots of log cost" if problem.log_loss else "cost (sum over robots)")
    return {"task": task, "steps": steps, "first_loss": history[0]["inner_loss_before"],
            "last_outer_loss": history[-1]["outer_loss"], "checkpoint": str(out)}


def load_tuner(checkpoint: Path) -> tuple[TuningProblem, mt.MetaTuner]:
    """The problem and meta-tuner a `train` run saved."""
    checkpoint = Path(checkpoint)
    settings_path = checkpoint.with_suffix(".json")
    if not checkpoint.is_file():
        raise mt.MetatuneError(f"checkpoint not found: {checkpoint}")
    if not settings_path.is_file():
        raise mt.MetatuneError(f"checkpoint settings not found: {settings_path} (written by 'metatune robot train')")
    try:
        settings = json.loads(settings_path.read_text())
        problem = make_problem(settings["task"], settings["horizon"], settings["dt"])
        cfg = RobotMetaConfig(**settings["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise mt.MetatuneError(f"cannot read checkpoint settings {settings_path}: {err}") from err
    tuner = make_tuner(problem, cfg)
    try:
        tuner.load(checkpoint)
    except (RuntimeError, KeyError) as err:
        raise mt.MetatuneError(f"checkpoint {checkpoint} does not match its settings file: {err}") from err
    return problem, tuner


def starts(problem: TuningProblem, tuner: mt.MetaTuner | None, tasks: list[RobotTask]) -> dict[str, tuple[Tensor, Any]]:
    """Start parameters [B, ...] and step sizes: untuned (the engine's default step) and meta-tuned."""
    lr = tuner.config.inner_lr if tuner is not None else RobotMetaConfig().inner_lr
    out = {"untuned": (problem.batch_params(len(tasks)), lr)}
    if tuner is not None:
        with torch.no_grad():
            out["meta-tuned"] = (tuner.init(tasks).detach().clone(), learned_step_sizes(tuner))
    return out


def adapt(problem: TuningProblem, tuner: mt.MetaTuner | None, tasks: list[RobotTask], steps: int,
          out_dir: Path, backend: str = "torch", physics: str = "torch") -> dict[str, Any]:
    """Adapt to unseen robots by adjoint gradient steps from each start; plots and JSON into out_dir.

    physics: what the adaptation gradients differentiate (torch models or MuJoCo); backend: what the
    reported trajectories are simulated with.
    """
    if backend not in ("torch", "mujoco"):
        raise mt.MetatuneError(f"unknown backend {backend!r}; choose 'torch' or 'mujoco'")
    out_dir = Path(out_dir)
    curves, runs, metrics = {}, {}, {"task": problem.name, "robots": [t.describe() for t in tasks],
                                     "steps": steps, "backend": backend, "physics": physics}
    simulate = problem.simulate_mujoco if backend == "mujoco" else problem.simulate
    for name, (start, lr) in starts(problem, tuner, tasks).items():
        params, losses = gradient_descent(problem, start, tasks, steps, lr, physics)
        curves[name] = losses.mean(1).tolist()
        before, after = simulate(start, tasks), simulate(params, tasks)
        runs[f"{name} start"] = before
        runs[f"{name} + {steps} steps"] = after
        metrics[name] = {"cost_by_step": curves[name], "rmse_start": before.rmse().tolist(),
                         "rmse_adapted": after.rmse().tolist(), "params": params.tolist()}
    plot_tracking(runs, out_dir / "tracking.png", f"{problem.name}: reference vs tracked ({backend}), robot 0")
    plot_curves(curves, out_dir / "adaptation.png", f"{problem.name}: cost over adaptation steps",
                "adaptation step", "cost (mean over robots)")
    write_json(metrics, out_dir / "metrics.json")
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
    write_json(metrics, Path(out_dir) / "metrics.json")
    return metrics


def tune(task: str, out_dir: Path, train_steps: int, adapt_steps: int, robots: int, cfg: RobotMetaConfig,
         horizon: int | None = None, dt: float | None = None, backend: str = "torch",
         seed: int = 12345) -> dict[str, Any]:
    """Meta-train on sampled robots, then adapt to `robots` unseen ones: what the robot scripts run."""
    out_dir = Path(out_dir)
    trained = train(task, out_dir / "tuner.pt", train_steps, cfg, horizon, dt)
    problem, tuner = load_tuner(out_dir / "tuner.pt")
    result = evaluate(problem, tuner, problem.sample_tasks(robots, seed=seed), adapt_steps, backend, out_dir)
    summary = {"task": task, "backend": backend, "train": trained, **result["summary"]}
    write_json(summary, out_dir / "summary.json")
    return summary
