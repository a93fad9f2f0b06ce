"""How well each fitted body explains its keypoints: reprojection error per keypoint in pixels, its median and
max as a fraction of the person's height in the image, the fit loss and the keypoints used."""
from __future__ import annotations

import torch
from torch import Tensor

from hmr.body_model import BodyModel
from hmr.camera import project
from hmr.layouts import BODY25_NAMES
from hmr.objective import FitProblem, posed_joints

POOR_MEDIAN = 0.03   # a fit is poor when the median reprojection error exceeds this fraction of the height ...
POOR_MAX = 0.10      # ... or its largest error this fraction


def fit_quality(body: BodyModel, params: Tensor,  # [P, 85]
                prob: FitProblem, verts: Tensor,  # [P, V, 3] camera coordinates
                loss: Tensor,  # [P] fit loss
                ) -> list[dict]:
    """One report per person (BODY_25 keypoints). Height: the longer side of the projected mesh's box (px)."""
    with torch.no_grad():
        uv = project(posed_joints(body, params)[:, prob.joint_map], prob.focal, prob.centre)   # [P, K, 2]
        err = (uv - prob.kp_xy).norm(dim=-1)                                                  # [P, K]
        mesh_uv = project(verts, prob.focal, prob.centre)
        extent = (mesh_uv.amax(1) - mesh_uv.amin(1)).amax(-1).clamp_min(1.0)                 # [P]
    reports = []
    for p in range(params.shape[0]):
        used = prob.kp_conf[p] > 0
        e = err[p][used]
        med, worst = float(e.median()), float(e.max())
        h = float(extent[p])
        worst_name = BODY25_NAMES[int(torch.where(used, err[p], -1.0).argmax())]
        reports.append({
            "reprojection_px": {name: round(float(err[p, k]), 2) if used[k] else None
                                for k, name in enumerate(BODY25_NAMES)},
            "median_px": round(med, 2), "max_px": round(worst, 2), "worst_keypoint": worst_name,
            "height_px": round(h, 1), "median_of_height": round(med / h, 4), "max_of_height": round(worst / h, 4),
            "fit_loss": float(loss[p]), "keypoints_used": int(used.sum()),
            "poor": bool(med > POOR_MEDIAN * h or worst > POOR_MAX * h),
        })
    return reports
