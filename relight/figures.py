"""Pictures people look at: ground truth | prediction | error panels, and a relit turntable."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from relight.camera import Camera, look_at
from relight.light import Light


def error_map(pred: Tensor, gt: Tensor, gain: float = 4.0) -> np.ndarray:  # [H, W, 3] RGB in [0, 1]
    """Absolute error (mean over channels, times `gain`) as a colour map (blue: none, red: large)."""
    import cv2
    err = ((pred.clamp(0, 1) - gt).abs().mean(-1) * gain).clamp(0, 1).cpu().numpy()
    heat = cv2.applyColorMap((err * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return heat[..., ::-1].astype(np.float32) / 255.0


def comparison(rows: list[tuple[Tensor, Tensor]], scale: int = 2) -> np.ndarray:  # [H', W', 3]
    """One row per view: ground truth | prediction | error, upscaled by `scale` (nearest)."""
    out = [np.concatenate([gt.cpu().numpy(), pred.clamp(0, 1).cpu().numpy(), error_map(pred, gt)], 1)
           for gt, pred in rows]
    img = np.concatenate(out, 0)
    return img.repeat(scale, 0).repeat(scale, 1)


def orbit_cameras(reference: Camera, n: int, target: Tensor | None = None) -> list[Camera]:
    """n cameras on a horizontal circle through `reference`'s position, looking at `target`."""
    target = torch.tensor([0.0, 0.0, 0.2]) if target is None else target
    pos = reference.position
    radius = float(torch.hypot(pos[0], pos[1]))
    start = math.atan2(float(pos[1]), float(pos[0]))
    cams = []
    for i in range(n):
        a = start + 2 * math.pi * i / n
        eye = torch.tensor([radius * math.cos(a), radius * math.sin(a), float(pos[2])])
        cams.append(Camera(look_at(eye, target), reference.fx, reference.fy, reference.cx, reference.cy,
                           reference.width, reference.height))
    return cams


def orbit_lights(n: int, radius: float = 2.5, elevation_deg: float = 45.0) -> list[Light]:
    """n point lights circling the scene (a full turn: both training and unseen sides)."""
    el = math.radians(elevation_deg)
    return [Light((radius * math.cos(el) * math.cos(2 * math.pi * i / n),
                   radius * math.cos(el) * math.sin(2 * math.pi * i / n), radius * math.sin(el))) for i in range(n)]


def write_video(path: Path, frames: list[np.ndarray], fps: int = 12) -> None:
    """An MP4 (mp4v) of RGB frames in [0, 1], written through a temporary name."""
    import cv2

    from metatune import MetatuneError
    from metatune.atomic import atomic_path
    h, w = frames[0].shape[:2]
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise MetatuneError(f"OpenCV cannot write video {path}")
        for f in frames:
            writer.write((np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1])
        writer.release()
