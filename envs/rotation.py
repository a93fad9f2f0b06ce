"""Batched SO(3) helpers with MuJoCo's conventions (quaternions are [w, x, y, z])."""
from __future__ import annotations

import torch
from torch import Tensor


def quat_to_matrix(q: Tensor) -> Tensor:  # q: [..., 4] -> [..., 3, 3]
    """Rotation matrix of a unit quaternion [w, x, y, z]."""
    w, x, y, z = q.unbind(-1)
    rows = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
    return torch.stack(rows, -1).reshape(*q.shape[:-1], 3, 3)


def quat_z_axis(q: Tensor) -> Tensor:  # q: [..., 4] -> [..., 3]
    """The rotated z axis (third column of quat_to_matrix), all a thrust direction needs."""
    w, x, y, z = q.unbind(-1)
    return torch.stack([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)], -1)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:  # [..., 4] x [..., 4] -> [..., 4]
    """Hamilton product a * b."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], -1)


def quat_integrate(q: Tensor, omega: Tensor, h: float) -> Tensor:  # [..., 4], [..., 3] -> [..., 4]
    """Rotate q by the body-frame angular velocity omega for time h, as mju_quatIntegrate, normalised."""
    sq = (omega * omega).sum(-1, keepdim=True)
    norm = torch.sqrt(sq + 1e-30)  # smooth at omega = 0 (its gradient there is 0, not NaN)
    half = 0.5 * h * norm
    dq = torch.cat([torch.cos(half), 0.5 * h * torch.sinc(half / torch.pi) * omega], -1)
    out = quat_multiply(q, dq)
    return out / out.norm(dim=-1, keepdim=True)


def hat(v: Tensor) -> Tensor:  # [..., 3] -> [..., 3, 3]
    """Skew-symmetric matrix with hat(v) @ w = v x w."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*v.shape[:-1], 3, 3)


def vee(m: Tensor) -> Tensor:  # [..., 3, 3] -> [..., 3]
    """Inverse of `hat` (reads the skew part of m)."""
    return torch.stack([m[..., 2, 1], m[..., 0, 2], m[..., 1, 0]], -1)
