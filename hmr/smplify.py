"""The baseline: SMPLify-style fitting from the mean pose (camera stage, then pose and shape through
coarse-to-fine robust scales), with Adam."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

import metatune as mt
from hmr.body_model import BodyModel
from hmr.camera import TORSO_PAIRS
from hmr.objective import ORIENT, TRANSL, FitProblem, FitWeights, fit_loss_terms
from hmr.robust_schedule import ROBUST_SCHEDULE, coarse_to_fine
from hmr.synthetic import mean_start


@dataclass
class SmplifyConfig:
    camera_steps: int = 100
    body_steps: int = 120    # split evenly over the robust scales of hmr.robust_schedule, widest first
    lr: float = 0.05


def _torso_only(prob: FitProblem) -> FitProblem:
    torso = {j for pair in TORSO_PAIRS for j in pair}
    keep = torch.tensor([j in torso for j in prob.joint_map], device=prob.kp_conf.device)
    return replace(prob, kp_conf=prob.kp_conf * keep)


def smplify(body: BodyModel, prob: FitProblem, weights: FitWeights | None = None,
            cfg: SmplifyConfig | None = None) -> Tensor:  # [B, 85]
    """Fit B people: orientation and translation on the torso keypoints, then everything on all keypoints."""
    weights, cfg = weights or FitWeights(), cfg or SmplifyConfig()
    start = mean_start(body, prob)
    cam_mask = torch.zeros(start.shape[1], dtype=torch.bool, device=start.device)
    cam_mask[ORIENT], cam_mask[TRANSL] = True, True
    torso = _torso_only(prob)

    def camera_loss(cam: Tensor, _h) -> Tensor:
        full = torch.where(cam_mask, cam, start)
        terms = fit_loss_terms(body, full, torso, weights)
        return (terms["reprojection"] + terms["depth_prior"]).sum()

    none = torch.zeros((), device=start.device)  # mt.solve needs some hparams; the baseline has none to differentiate
    cam = mt.solve(camera_loss, start, none, solver="adam", steps=cfg.camera_steps, lr=cfg.lr, hypergrad="none")
    body_start = torch.where(cam_mask, cam, start)
    return coarse_to_fine(body, body_start, prob, weights, steps_per_stage=max(1, cfg.body_steps // len(
        ROBUST_SCHEDULE)), lr=cfg.lr)
