"""A start without a point cloud: random points carved to the visual hull of the images' foreground.

Where the images separate the object from an empty background (an alpha channel, or a background of exact
black as renders and masked captures have), a point that projects onto background in any view it falls
in cannot be on a surface, so it is dropped (Laurentini's visual hull). What is left bounds the object;
fitting and densification find the surfaces inside it. Without a separable background, points are drawn
in a box around the cameras' focus.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from relight.scene import Frame

BLACK_FRACTION = 0.05  # an image whose pixels are exactly black at least this often has a black background
MISSES = 0.05  # a point may land on background in this fraction of the views that see it (mask noise)


def foreground(frame: Frame) -> Tensor | None:  # [H, W] bool
    """The frame's object pixels: alpha > 0.5, or not exactly black; None when neither separates anything."""
    if frame.alpha is not None:
        return frame.alpha > 0.5
    black = frame.image.max(-1).values == 0
    return ~black if float(black.float().mean()) >= BLACK_FRACTION else None


def box_points(frames: list[Frame], n: int, gen: torch.Generator) -> Tensor:  # [n, 3]
    """Uniform points in a cube around the origin of half-size 0.3 x the cameras' mean distance."""
    dist = torch.stack([f.camera.position.norm() for f in frames]).mean()
    return (torch.rand(n, 3, generator=gen) * 2 - 1) * 0.3 * dist


def carved_points(frames: list[Frame], n: int, gen: torch.Generator, candidates: int = 50) -> Tensor:  # [<= n, 3]
    """`n` points of the visual hull (drawn from `candidates` x n box points), or box points without masks."""
    masks = [foreground(f) for f in frames]
    if any(m is None for m in masks):
        return box_points(frames, n, gen)
    pts = box_points(frames, n * candidates, gen)
    seen = torch.zeros(len(pts))
    missed = torch.zeros(len(pts))
    for f, m in zip(frames, masks):
        cam = f.camera
        view = replace(cam, c2w=cam.c2w.double()).viewmat()  # world to OpenCV camera axes, in double
        local = (pts.double() @ view[:3, :3].T + view[:3, 3]).float()
        z = local[:, 2]
        front = z > 1e-6
        u = cam.fx * local[:, 0] / z.clamp_min(1e-6) + cam.cx
        v = cam.fy * local[:, 1] / z.clamp_min(1e-6) + cam.cy
        inside = front & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
        ui, vi = u.long().clamp(0, cam.width - 1), v.long().clamp(0, cam.height - 1)
        hit = m.cpu()[vi, ui]
        seen += inside.float()
        missed += (inside & ~hit).float()
    keep = (seen > 0) & (missed <= MISSES * seen)
    hull = pts[keep]
    if len(hull) == 0:
        return box_points(frames, n, gen)
    return hull[torch.randperm(len(hull), generator=gen)[:n]]
