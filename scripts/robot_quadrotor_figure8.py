"""Quadrotor figure-eight tracking under wind gusts: meta-tune the geometric controller and disturbance observer.

Meta-trains on robots sampled from the task distribution (adjoint rollouts, Meta-SGD), adapts to
unseen robots in a few adjoint steps, and writes tracking.png (reference vs tracked), adaptation.png
(cost over adaptation steps), train/training.png (meta-training) and summary.json / metrics.json.

    .venv/bin/python scripts/robot_quadrotor_figure8.py --out runs/robot/quadrotor_figure8 [--backend mujoco]
"""
import sys

from envs.tuning_script import run_tuning_script

if __name__ == "__main__":
    sys.exit(run_tuning_script("quadrotor", "quadrotor_figure8", __doc__.splitlines()[0], sys.argv[1:],
                              train_steps=8, horizon=150, dt=0.02))
