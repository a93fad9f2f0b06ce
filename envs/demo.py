"""The robot part of `metatune demo`: meta-tune the quadrotor's figure-eight controller under wind,
then adapt to unseen robots and fly them in MuJoCo (about a minute on 2 CPU cores)."""
from __future__ import annotations

import time
from pathlib import Path

from envs.meta_tuning import RobotMetaConfig
from envs.workflows import evaluate, load_tuner, train


def run_demo(out_dir: Path, train_steps: int = 6, robots: int = 4, adapt_steps: int = 2, device: str = "cpu") -> dict:
    """Meta-train, then evaluate untuned vs meta-tuned on unseen robots simulated in MuJoCo (gains and torch
    models on `device`, MuJoCo on the CPU)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = RobotMetaConfig(inner_steps=1, robots_per_task=3)
    trained = train("quadrotor", out_dir / "train", train_steps, cfg, horizon=150, dt=0.02, force=True, device=device)
    problem, tuner = load_tuner(out_dir / "train", device)
    t1 = time.perf_counter()
    tasks = problem.sample_tasks(robots, seed=424242)  # robots never seen in training
    result = evaluate(problem, tuner, tasks, adapt_steps, "mujoco", out_dir)
    s = result["summary"]
    untuned, meta = s["untuned"]["rmse_start"], s["meta-tuned"]["rmse_start"]
    return {"task": "quadrotor figure-eight under wind gusts (MuJoCo)", "meta_train_steps": train_steps,
            "meta_train_seconds": round(t1 - t0, 1), "unseen_robots": robots,
            "rmse_untuned_m": round(untuned, 4), "rmse_meta_tuned_m": round(meta, 4),
            "rmse_meta_tuned_adapted_m": round(s["meta-tuned"]["rmse_adapted"], 4),
            "rmse_untuned_adapted_m": round(s["untuned"]["rmse_adapted"], 4),
            "rmse_reduction": round(1 - meta / untuned, 3), "first_train_loss": round(trained["first_loss"], 4),
            "last_train_loss": round(trained["last_outer_loss"], 4)}
