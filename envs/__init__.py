"""Robots: differentiable dynamics in torch, differentiable MuJoCo, and meta-tuned controllers.

The names import on first use (PEP 562): the CLI registers `metatune robot` without importing torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from metatune.lazy import install_lazy_attributes
from metatune.mujoco_loader import guard_triton

_LAZY = {"ROBOTS": "envs.catalog", "default_params": "envs.catalog", "make": "envs.catalog",
         "MujocoDynamics": "envs.mujoco_dynamics", "LinearFeedback": "envs.mujoco_closed_loop",
         "QuadraticCost": "envs.mujoco_closed_loop", "PlanarChain": "envs.planar_chain", "Quadrotor": "envs.quadrotor"}

if TYPE_CHECKING:
    from envs.catalog import ROBOTS, default_params, make
    from envs.mujoco_closed_loop import LinearFeedback, QuadraticCost
    from envs.mujoco_dynamics import MujocoDynamics
    from envs.planar_chain import PlanarChain
    from envs.quadrotor import Quadrotor


install_lazy_attributes(__name__, _LAZY)
guard_triton()  # a script that imported MuJoCo first must not crash in torch (metatune/mujoco_loader.py)


__all__ = ["ROBOTS", "LinearFeedback", "MujocoDynamics", "PlanarChain", "QuadraticCost", "Quadrotor", "default_params",
           "make"]
