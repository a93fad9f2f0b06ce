"""Initial point clouds: normals and spacing from nearest neighbours, and the sparse `points3d.ply` of a scene."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from metatune.atomic import write_text


def estimate_normals(points: Tensor,  # [N, 3]
                     k: int = 10) -> tuple[Tensor, Tensor]:  # normals [N, 3], spacing [N]
    """Per-point unit normal (least-variance axis of the k nearest neighbours) and mean distance to its 3 nearest neighbours."""
    k = min(k, points.shape[0] - 1)
    normals, spacing = [], []
    for s in range(0, points.shape[0], 1024):
        d = torch.cdist(points[s:s + 1024], points)
        dist, idx = d.topk(k + 1, largest=False)
        nb = points[idx[:, 1:]]  # [B, k, 3]
        centred = nb - nb.mean(1, keepdim=True)
        _, vecs = torch.linalg.eigh(centred.transpose(1, 2) @ centred)
        normals.append(vecs[..., 0])
        spacing.append(dist[:, 1:4].mean(-1))
    return torch.cat(normals), torch.cat(spacing)


def write_points_ply(path: Path, points: np.ndarray,  # [N, 3]
                     ) -> None:
    """An ASCII PLY of x, y, z vertices (the sparse cloud a reconstruction starts from)."""
    header = f"ply\nformat ascii 1.0\nelement vertex {len(points)}\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    body = "\n".join(f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in points)
    write_text(path, header + body + "\n")


def read_points_ply(path: Path) -> np.ndarray:  # [N, 3]
    """x, y, z of the vertices of any PLY (ASCII or binary, float or double: what COLMAP and 3DGS write)."""
    from metatune import MetatuneError
    from relight.ply_format import read_elements

    vertex = read_elements(path)
    if not {"x", "y", "z"} <= set(vertex):
        raise MetatuneError(f"{path}: its vertices have no x, y, z (properties: {sorted(vertex)})")
    pts = np.stack([vertex[a] for a in "xyz"], 1).astype(np.float32)
    if not np.isfinite(pts).all():
        raise MetatuneError(f"{path}: non-finite vertex coordinates")
    return pts
