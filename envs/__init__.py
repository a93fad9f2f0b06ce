"""Robots: differentiable dynamics in torch, differentiable MuJoCo, and meta-tuned controllers."""
from envs.catalog import ROBOTS, default_params, make
from envs.mujoco_dynamics import MujocoDynamics
from envs.planar_chain import PlanarChain
from envs.quadrotor import Quadrotor

__all__ = ["ROBOTS", "MujocoDynamics", "PlanarChain", "Quadrotor", "default_params", "make"]
