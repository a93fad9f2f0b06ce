"""Where cameras and lights go in a generated OLAT scene: train lights on one side of the hemisphere, test on the other."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from relight.camera import look_at


@dataclass
class LayoutConfig:
    """Numbers of lights and views, and the sizes of the camera and light hemispheres."""
    resolution: int = 64
    camera_angle_x: float = 0.75
    camera_radius: float = 3.2
    n_cameras: int = 12  # on a ring; each light sees a random subset
    train_lights: int = 16
    test_lights: int = 4
    views_per_light: int = 4
    light_radius: float = 2.5
    seed: int = 0

    @classmethod
    def moving(cls, resolution: int = 64, seed: int = 0) -> "LayoutConfig":
        """The moving-light layout of MetaGS's and NRHints' captures: every frame its own light, one view each."""
        return cls(resolution=resolution, n_cameras=24, train_lights=64, test_lights=8, views_per_light=1, seed=seed)


def camera_poses(cfg: LayoutConfig) -> list[np.ndarray]:
    """Camera-to-world poses on two rings looking at the scene centre."""
    poses = []
    for i in range(cfg.n_cameras):
        az = 2 * math.pi * i / cfg.n_cameras
        el = math.radians(30.0 if i % 2 == 0 else 45.0)
        eye = cfg.camera_radius * torch.tensor([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        poses.append(look_at(eye, torch.tensor([0.0, 0.0, 0.2])).numpy())
    return poses


def light_positions(cfg: LayoutConfig, split: str) -> list[tuple[float, float, float]]:
    """Point lights: azimuth in (0, pi) for train, (pi, 2 pi) for test; elevation 30 to 70 degrees."""
    rng = np.random.default_rng(cfg.seed + (0 if split == "train" else 1))
    n = cfg.train_lights if split == "train" else cfg.test_lights
    side = 0.0 if split == "train" else math.pi
    out = []
    for i in range(n):
        az = side + math.pi * (i + rng.uniform(0.15, 0.85)) / n
        el = math.radians(rng.uniform(30.0, 70.0))
        r = cfg.light_radius
        out.append((r * math.cos(el) * math.cos(az), r * math.cos(el) * math.sin(az), r * math.sin(el)))
    return out


def frame_plan(cfg: LayoutConfig, split: str) -> list[tuple[int, tuple[float, float, float]]]:
    """(camera index, light position) of every frame of a split; each light gets distinct views."""
    rng = np.random.default_rng(cfg.seed + 10 + (0 if split == "train" else 1))
    plan = []
    for light in light_positions(cfg, split):
        for cam in rng.choice(cfg.n_cameras, size=min(cfg.views_per_light, cfg.n_cameras), replace=False):
            plan.append((int(cam), light))
    return plan
