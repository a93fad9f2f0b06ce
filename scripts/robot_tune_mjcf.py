"""Tune a PD controller on a dm_control MJCF model (nobody here wrote it) from the command line, end to end.

Writes a joint reference (sinusoids) as CSV, meta-trains PD gains on robots made by scaling the model's
masses and joint damping (`metatune robot train --mjcf`), then evaluates the tuned gains against the
hand-set ones on held-out robots (`metatune robot evaluate`): gains.json, tracking.png, adaptation.png and
metrics.json under --out.

    .venv/bin/python scripts/robot_tune_mjcf.py --out runs/robot/reacher_mjcf [--mjcf other.xml --joints a,b]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from metatune.atomic import write_text
from metatune.cli import main as metatune


def reference_csv(path: Path, joints: list[str], seconds: float, dt: float = 0.01) -> Path:
    """Joint targets: one sinusoid per joint (0.5 Hz, amplitudes 0.8, 0.6, ..., phases apart)."""
    rows = [",".join(["time", *joints])]
    for k in range(int(seconds / dt) + 1):
        t = k * dt
        rows.append(",".join([f"{t:.4f}"] + [f"{0.8 * 0.75 ** i * math.sin(math.pi * t + i):.6f}"
                                              for i in range(len(joints))]))
    write_text(path, "\n".join(rows) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    import dm_control

    suite = Path(dm_control.__file__).parent / "suite"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mjcf", type=Path, default=suite / "reacher.xml")
    parser.add_argument("--joints", default="shoulder,wrist", help="joints the reference names")
    parser.add_argument("--out", type=Path, default=Path("runs/robot/reacher_mjcf"))
    parser.add_argument("--steps", type=int, default=10, help="meta-training steps")
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--robots", type=int, default=8, help="held-out robots to evaluate on")
    parser.add_argument("--grad", choices=("auto", "forward", "adjoint"), default="auto",
                        help="gradients through MuJoCo (metatune robot train --grad)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    ref = reference_csv(args.out / "reference.csv", args.joints.split(","), seconds=5.0)
    common = ["--randomise", "mass=0.5:2.0", "--randomise", "damping=0.5:2.0"]
    code = metatune(["robot", "train", "--mjcf", str(args.mjcf), "--reference", str(ref), *common,
                     "--horizon", str(args.horizon), "--steps", str(args.steps), "--robots-per-task", "2",
                     "--grad", args.grad,
                     "--out", str(args.out / "train"), "--force"])
    if code:
        return code
    code = metatune(["robot", "evaluate", "--checkpoint", str(args.out / "train"), "--robots", str(args.robots),
                     "--steps", "2", "--out", str(args.out / "eval")])
    if code:
        return code
    summary = json.loads((args.out / "eval" / "metrics.json").read_text())["summary"]
    print(json.dumps({"model": str(args.mjcf), **summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
