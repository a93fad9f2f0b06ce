"""Pinhole cameras in the NeRF convention (camera-to-world, OpenGL axes: looking down -z, y up)."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from metatune.errors import MetatuneError

# How far a camera-to-world rotation may be from orthonormal (max |R^T R - I|) and its bottom row from
# [0 0 0 1]. Poses stored as float32 are off by ~1e-7 and poses printed with 4 decimals by ~1e-4; a scale
# or shear of 0.1% (2e-3) already misplaces every ray, and is refused.
RIGID_TOL = 1e-3

# OpenGL camera axes (x right, y up, looking down -z) to OpenCV axes (x right, y down, looking down +z).
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


@dataclass
class Camera:
    """A pinhole camera: camera-to-world pose in the NeRF/OpenGL convention and intrinsics in pixels."""
    c2w: Tensor  # [4, 4]
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fov(cls, c2w: Tensor, camera_angle_x: float, width: int, height: int) -> "Camera":
        """A camera with the horizontal field of view of NeRF's `camera_angle_x` (radians)."""
        check_fov(camera_angle_x)
        f = 0.5 * width / math.tan(0.5 * camera_angle_x)
        return cls(c2w=c2w.float(), fx=f, fy=f, cx=width / 2, cy=height / 2, width=width, height=height)

    @property
    def position(self) -> Tensor:  # [3]
        return self.c2w[:3, 3]

    def viewmat(self) -> Tensor:  # [4, 4] world-to-camera in OpenCV axes
        return _GL_TO_CV.to(self.c2w) @ torch.linalg.inv(self.c2w)

    def K(self) -> Tensor:  # [3, 3]
        return torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]],
                            dtype=self.c2w.dtype, device=self.c2w.device)

    def to(self, device: torch.device | str) -> "Camera":
        """The same camera with its pose on `device`."""
        return replace(self, c2w=self.c2w.to(device))

    def resized(self, width: int, height: int) -> "Camera":
        """The same camera rendering at another resolution."""
        sx, sy = width / self.width, height / self.height
        return Camera(self.c2w, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)


def check_fov(camera_angle_x: float, where: str = "camera") -> None:
    """A horizontal field of view (radians) must be finite and in (0, pi)."""
    if not (math.isfinite(camera_angle_x) and 0 < camera_angle_x < math.pi):
        raise MetatuneError(f"{where}: camera_angle_x {camera_angle_x} is not a field of view in (0, pi) radians")


def check_rigid(c2w: np.ndarray, where: str = "camera") -> None:
    """A camera-to-world matrix must be 4x4, finite and rigid: rotation orthonormal with determinant +1 and
    bottom row [0 0 0 1], each to RIGID_TOL."""
    m = np.asarray(c2w, dtype=np.float64)
    if m.shape != (4, 4):
        raise MetatuneError(f"{where}: transform_matrix has shape {list(m.shape)}, not 4x4")
    if not np.isfinite(m).all():
        raise MetatuneError(f"{where}: transform_matrix has non-finite entries (NaN or infinity)")
    rot = m[:3, :3]
    ortho = float(np.abs(rot.T @ rot - np.eye(3)).max())
    if ortho > RIGID_TOL:
        raise MetatuneError(f"{where}: transform_matrix is not rigid: its rotation is off orthonormal by {ortho:.3g} "
                            f"(max |R^T R - I|; allowed {RIGID_TOL:g}); a singular, scaled or sheared camera "
                            "has no pose")
    det = float(np.linalg.det(rot))
    if det < 0:
        raise MetatuneError(f"{where}: transform_matrix's rotation has determinant {det:.3g}, a reflection; "
                            "a camera pose needs +1")
    bottom = float(np.abs(m[3] - [0.0, 0.0, 0.0, 1.0]).max())
    if bottom > RIGID_TOL:
        raise MetatuneError(f"{where}: transform_matrix's bottom row is {m[3].tolist()}, not [0, 0, 0, 1] "
                            f"(to {RIGID_TOL:g})")


def look_at(eye: Tensor,  # [3]
            target: Tensor,  # [3]
            up: Tensor | None = None,  # [3]
            ) -> Tensor:  # [4, 4] camera-to-world, OpenGL axes
    """Camera-to-world pose at `eye` looking at `target`."""
    up = torch.tensor([0.0, 0.0, 1.0]) if up is None else up
    back = eye - target
    back = back / back.norm()
    right = torch.linalg.cross(up.to(back), back)
    if right.norm() < 1e-6:  # looking straight along `up`
        right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]).to(back), back)
    right = right / right.norm()
    true_up = torch.linalg.cross(back, right)
    c2w = torch.eye(4, dtype=eye.dtype)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, back, eye
    return c2w
