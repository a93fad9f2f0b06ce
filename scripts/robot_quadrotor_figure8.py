"""Quadrotor figure-eight tracking under wind gusts: meta-tune the geometric controller and disturbance observer.

Meta-trains on robots sampled from the task distribution (adjoint rollouts, Meta-SGD), adapts to
unseen robots in a few adjoint steps, and writes tracking.png (reference vs tracked), adaptation.png
(cost over adaptation steps), tuner.png (meta-training) and summary.json / metrics.json.

    .venv/bin/python scripts/robot_quadrotor_figure8.py --out runs/robot/quadrotor_figure8 [--backend mujoco]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from envs.meta_tuning import RobotMetaConfig
from envs.workflows import tune
from metatune.errors import MetatuneError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/robot/quadrotor_figure8"))
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument("--adapt-steps", type=int, default=3)
    parser.add_argument("--robots", type=int, default=4, help="unseen robots to adapt to")
    parser.add_argument("--robots-per-task", type=int, default=3)
    parser.add_argument("--backend", choices=("torch", "mujoco"), default="mujoco")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = RobotMetaConfig(inner_steps=1, robots_per_task=args.robots_per_task, seed=args.seed)
    try:
        summary = tune("quadrotor", args.out, args.train_steps, args.adapt_steps, args.robots, cfg,
                       horizon=150, dt=0.02, backend=args.backend)
    except MetatuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
