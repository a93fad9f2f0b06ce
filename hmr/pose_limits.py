"""Joint limits of the 23 SMPL body joints (axis-angle components, radians) and the pose prior they imply."""
from __future__ import annotations

import math

import torch
from torch import Tensor

# (lo, hi) per axis (x, y, z) for joints 1..23. Signs follow SMPL's rest frame: +x rotation flexes the
# knee, the left arm lies along +x, so the left elbow flexes about -y and the right one about +y.
_LIMITS = {
    1: ((-1.3, 0.3), (-0.4, 0.4), (-0.15, 0.6)),     # left hip
    2: ((-1.3, 0.3), (-0.4, 0.4), (-0.6, 0.15)),     # right hip
    3: ((-0.2, 0.4), (-0.3, 0.3), (-0.2, 0.2)),      # spine1
    4: ((0.0, 1.8), (-0.05, 0.05), (-0.05, 0.05)),   # left knee
    5: ((0.0, 1.8), (-0.05, 0.05), (-0.05, 0.05)),   # right knee
    6: ((-0.15, 0.3), (-0.2, 0.2), (-0.15, 0.15)),   # spine2
    7: ((-0.3, 0.4), (-0.15, 0.15), (-0.15, 0.15)),  # left ankle
    8: ((-0.3, 0.4), (-0.15, 0.15), (-0.15, 0.15)),  # right ankle
    9: ((-0.1, 0.2), (-0.15, 0.15), (-0.1, 0.1)),    # spine3
    10: ((-0.1, 0.1), (-0.05, 0.05), (-0.05, 0.05)),  # left foot
    11: ((-0.1, 0.1), (-0.05, 0.05), (-0.05, 0.05)),  # right foot
    12: ((-0.3, 0.4), (-0.4, 0.4), (-0.2, 0.2)),     # neck
    13: ((-0.1, 0.1), (-0.15, 0.15), (-0.2, 0.2)),   # left collar
    14: ((-0.1, 0.1), (-0.15, 0.15), (-0.2, 0.2)),   # right collar
    15: ((-0.2, 0.3), (-0.3, 0.3), (-0.2, 0.2)),     # head
    16: ((-0.4, 0.4), (-1.0, 0.4), (-1.2, 0.5)),     # left shoulder
    17: ((-0.4, 0.4), (-0.4, 1.0), (-0.5, 1.2)),     # right shoulder
    18: ((-0.1, 0.1), (-1.8, 0.0), (-0.1, 0.1)),     # left elbow
    19: ((-0.1, 0.1), (0.0, 1.8), (-0.1, 0.1)),      # right elbow
    20: ((-0.3, 0.3), (-0.2, 0.2), (-0.4, 0.4)),     # left wrist
    21: ((-0.3, 0.3), (-0.2, 0.2), (-0.4, 0.4)),     # right wrist
    22: ((-0.1, 0.1), (-0.1, 0.1), (-0.1, 0.1)),     # left hand
    23: ((-0.1, 0.1), (-0.1, 0.1), (-0.1, 0.1)),     # right hand
}


def pose_limits() -> tuple[Tensor, Tensor]:
    """Lower and upper bounds of the 69 body-pose values."""
    lo = torch.tensor([_LIMITS[j][a][0] for j in range(1, 24) for a in range(3)])
    hi = torch.tensor([_LIMITS[j][a][1] for j in range(1, 24) for a in range(3)])
    return lo, hi


def pose_prior_stats() -> tuple[Tensor, Tensor]:
    """Mean and std of the 69 pose values under a uniform draw within the limits (the Gaussian pose prior)."""
    lo, hi = pose_limits()
    return (lo + hi) / 2, (hi - lo) / math.sqrt(12.0)


def sample_poses(n: int, generator: torch.Generator) -> Tensor:  # [n, 69]
    """Body poses drawn uniformly within the joint limits."""
    lo, hi = pose_limits()
    return lo + (hi - lo) * torch.rand(n, 69, generator=generator)
