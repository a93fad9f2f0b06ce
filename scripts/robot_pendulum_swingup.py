"""Pendulum swing-up with a torque limit: meta-tune the energy-pumping and catch gains.

Meta-trains on robots sampled from the task distribution (adjoint rollouts, Meta-SGD), adapts to
unseen robots in a few adjoint steps, and writes tracking.png (reference vs tracked), adaptation.png
(cost over adaptation steps), tuner.png (meta-training) and summary.json / metrics.json.

    .venv/bin/python scripts/robot_pendulum_swingup.py --out runs/robot/pendulum_swingup [--backend mujoco]
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
    parser.add_argument("--out", type=Path, default=Path("runs/robot/pendulum_swingup"))
    parser.add_argument("--train-steps", type=int, default=6)
    parser.add_argument("--adapt-steps", type=int, default=3)
    parser.add_argument("--robots", type=int, default=4, help="unseen robots to adapt to")
    parser.add_argument("--robots-per-task", type=int, default=3)
    parser.add_argument("--backend", choices=("torch", "mujoco"), default="mujoco")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = RobotMetaConfig(inner_steps=1, robots_per_task=args.robots_per_task, seed=args.seed)
    try:
        summary = tune("pendulum", args.out, args.train_steps, args.adapt_steps, args.robots, cfg,
                       horizon=None, dt=None, backend=args.backend)
    except MetatuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
