"""Robots: differentiable dynamics in torch, differentiable MuJoCo, and meta-tuned controllers."""
from envs.catalog import ROBOTS, default_params, make
from envs.planar_chain import PlanarChain
from envs.quadrotor import Quadrotor

__all__ = ["ROBOTS", "PlanarChain", "Quadrotor", "default_params", "make"]
