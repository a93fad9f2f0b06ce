"""The command line shared by the `scripts/robot_*.py` controller-tuning scripts."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from envs.meta_tuning import RobotMetaConfig
from envs.workflows import tune
from metatune.errors import MetatuneError


def run_tuning_script(task: str, name: str, description: str, argv: list[str] | None = None, *,
                      train_steps: int = 6, horizon: int | None = None, dt: float | None = None) -> int:
    """Meta-train on sampled robots, adapt to unseen ones, write plots + JSON under --out; exit status."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path("runs/robot") / name)
    parser.add_argument("--train-steps", type=int, default=train_steps)
    parser.add_argument("--adapt-steps", type=int, default=3)
    parser.add_argument("--robots", type=int, default=4, help="unseen robots to adapt to")
    parser.add_argument("--robots-per-task", type=int, default=3)
    parser.add_argument("--backend", choices=("torch", "mujoco"), default="mujoco")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--horizon", type=int, default=horizon, help="simulated steps (default: the script's)")
    args = parser.parse_args(argv)
    cfg = RobotMetaConfig(inner_steps=1, robots_per_task=args.robots_per_task, seed=args.seed)
    try:
        summary = tune(task, args.out, args.train_steps, args.adapt_steps, args.robots, cfg,
                       horizon=args.horizon, dt=dt, backend=args.backend)
    except MetatuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0
