"""Mesh-recovery metrics in millimetres (MPJPE, PA-MPJPE, PVE) and uncertainty calibration."""
from __future__ import annotations

import math

import torch
from torch import Tensor

CHI3_90 = math.sqrt(6.251388631170325)  # 90% quantile of |e|/sigma for an isotropic 3D Gaussian error


def _root_aligned(x: Tensor, root: Tensor) -> Tensor:
    return x - root[:, None]


def mpjpe(pred: Tensor,  # [B, J, 3] metres
          gt: Tensor,  # [B, J, 3]
          root: int = 0) -> Tensor:  # [B] mm
    """Mean per-joint position error after aligning the root joints."""
    return 1000 * (_root_aligned(pred, pred[:, root]) - _root_aligned(gt, gt[:, root])).norm(dim=-1).mean(1)


def procrustes_align(pred: Tensor,  # [B, N, 3]
                     gt: Tensor,  # [B, N, 3]
                     ) -> Tensor:  # [B, N, 3] pred mapped by the best similarity transform onto gt
    """Similarity Procrustes (scale, rotation, translation) in closed form (Umeyama)."""
    mp, mg = pred.mean(1, keepdim=True), gt.mean(1, keepdim=True)
    p, q = pred - mp, gt - mg
    cov = q.transpose(1, 2) @ p                                  # [B, 3, 3]
    u, s, vh = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(u @ vh))
    e = torch.ones_like(s)
    e[:, 2] = d
    rot = u @ torch.diag_embed(e) @ vh
    scale = (s * e).sum(1) / p.pow(2).sum((1, 2))
    return scale[:, None, None] * p @ rot.transpose(1, 2) + mg


def pa_mpjpe(pred: Tensor, gt: Tensor) -> Tensor:  # [B] mm
    """MPJPE after similarity Procrustes alignment."""
    return 1000 * (procrustes_align(pred, gt) - gt).norm(dim=-1).mean(1)


def pve(pred_verts: Tensor,  # [B, V, 3]
        gt_verts: Tensor,  # [B, V, 3]
        pred_root: Tensor,  # [B, 3] root joint
        gt_root: Tensor) -> Tensor:  # [B] mm
    """Per-vertex error after aligning the root joints."""
    return 1000 * ((pred_verts - pred_root[:, None]) - (gt_verts - gt_root[:, None])).norm(dim=-1).mean(1)


def rank(x: Tensor) -> Tensor:  # [N] average ranks (ties share their mean rank)
    order = torch.argsort(x)
    r = torch.empty_like(x, dtype=torch.float64)
    r[order] = torch.arange(len(x), dtype=torch.float64, device=x.device)
    values, inverse = torch.unique(x, return_inverse=True)
    sums = torch.zeros(len(values), dtype=torch.float64, device=x.device).index_add_(0, inverse, r)
    counts = torch.zeros(len(values), dtype=torch.float64, device=x.device).index_add_(0, inverse, torch.ones_like(r))
    return (sums / counts)[inverse]


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two flat samples."""
    ra, rb = rank(a.flatten()), rank(b.flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))


def coverage(error_mm: Tensor,  # [...] norm of each joint's 3D error
             std_mm: Tensor,  # [...] predicted per-axis std of that joint
             ) -> float:
    """Fraction of joints inside their 90% interval (isotropic Gaussian: |e| <= 2.5 sigma)."""
    return float((error_mm <= CHI3_90 * std_mm).float().mean())


def calibration_scale(error_mm: Tensor, std_mm: Tensor, target: float = 0.9) -> float:
    """The factor on std that puts `target` of the joints inside their interval (fit on training data)."""
    ratio = (error_mm / (CHI3_90 * std_mm.clamp_min(1e-9))).flatten()
    return float(torch.quantile(ratio, target))
