"""Pendulum swing-up with a torque limit: meta-tune the energy-pumping and catch gains.

Meta-trains on robots sampled from the task distribution (adjoint rollouts, Meta-SGD), adapts to
unseen robots in a few adjoint steps, and writes tracking.png (reference vs tracked), adaptation.png
(cost over adaptation steps), train/training.png (meta-training) and summary.json / metrics.json.

    .venv/bin/python scripts/robot_pendulum_swingup.py --out runs/robot/pendulum_swingup [--backend mujoco]
"""
import sys

from envs.tuning_script import run_tuning_script

if __name__ == "__main__":
    sys.exit(run_tuning_script("pendulum", "pendulum_swingup", __doc__.splitlines()[0], sys.argv[1:]))
