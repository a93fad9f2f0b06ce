"""Perspective camera at the origin (OpenCV axes: x right, y down, z forward) and its torso-length initialisation."""
from __future__ import annotations

import math

import torch
from torch import Tensor

# A person seen by this camera faces it when the body is turned half a turn about x (SMPL is y-up, z-forward).
FACING_CAMERA = (math.pi, 0.0, 0.0)
# Torso segments (smplx joint pairs) whose 3D length sets the depth by similar triangles.
TORSO_PAIRS = [(12, 0), (17, 2), (16, 1)]   # neck-pelvis, right shoulder-hip, left shoulder-hip
# ... and the segment used when a person shows no torso segment (a head-and-shoulders portrait)
SHOULDERS = (17, 16)


def default_focal(width: Tensor | float, height: Tensor | float) -> Tensor:
    """Focal length in pixels assumed when none is known (about 45 degrees across the longer side)."""
    w, h = torch.as_tensor(width, dtype=torch.float32), torch.as_tensor(height, dtype=torch.float32)
    return 1.2 * torch.maximum(w, h)


def project(points: Tensor,  # [B, N, 3] camera coordinates
            focal: Tensor,  # [B]
            centre: Tensor,  # [B, 2]
            ) -> Tensor:  # [B, N, 2] pixels
    """Pinhole projection."""
    z = points[..., 2:].clamp_min(1e-3)
    return focal[:, None, None] * points[..., :2] / z + centre[:, None]


def init_translation(joints3d: Tensor,  # [B, 45, 3] joints of the initial body, camera-rotated, untranslated
                     kp_xy: Tensor,  # [B, K, 2]
                     kp_conf: Tensor,  # [B, K]
                     joint_map: list[int],
                     focal: Tensor,  # [B]
                     centre: Tensor,  # [B, 2]
                     default_depth: float = 5.0,
                     ) -> Tensor:  # [B, 3]
    """Translation putting the body's torso at the keypoints' torso: depth = focal * L3d / L2d (the shoulder
    width where no torso segment is seen, else `default_depth`)."""
    pos = {j: i for i, j in enumerate(joint_map)}

    def ratios(pairs: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:  # mean L3d / L2d [B], seen [B]
        r, w = torch.zeros_like(focal), torch.zeros_like(focal)
        for a, b in pairs:
            if a in pos and b in pos:
                l3 = (joints3d[:, a] - joints3d[:, b]).norm(dim=-1)
                l2 = (kp_xy[:, pos[a]] - kp_xy[:, pos[b]]).norm(dim=-1)
                ok = (kp_conf[:, pos[a]] > 0) & (kp_conf[:, pos[b]] > 0) & (l2 > 1.0)
                r = r + torch.where(ok, l3 / l2.clamp_min(1.0), torch.zeros_like(l2))
                w = w + ok.float()
        return r / w.clamp_min(1), w > 0

    torso, seen = ratios(TORSO_PAIRS)
    shoulders, seen_shoulders = ratios([SHOULDERS])
    depth = torch.where(seen, focal * torso, torch.where(seen_shoulders, focal * shoulders,
                                                         torch.full_like(focal, default_depth)))
    idx = torch.tensor(joint_map)
    conf = kp_conf.clamp_min(0)
    wsum = conf.sum(1, keepdim=True).clamp_min(1e-6)
    c2d = (kp_xy * conf[..., None]).sum(1) / wsum                     # [B, 2]
    c3d = (joints3d[:, idx] * conf[..., None]).sum(1) / wsum          # [B, 3]
    xy = (c2d - centre) * depth[:, None] / focal[:, None] - c3d[:, :2]
    return torch.cat([xy, (depth - c3d[:, 2])[:, None]], 1)


def focal_from_fov(fov_deg: float, width: int, height: int) -> float:
    """Focal length in pixels of a camera whose field of view across the longer side is `fov_deg`."""
    return 0.5 * max(width, height) / math.tan(math.radians(fov_deg) / 2)
