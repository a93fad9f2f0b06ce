"""Coarse-to-fine robust fitting: the Geman-McClure scale starts wide and narrows stage by stage.

At the final scale (10% of the torso) a limb whose keypoint is far from it (an arm 100+ px off) gets almost
no gradient, so it is abandoned where it started. With a scale of the torso's length first, every residual
still pulls (the kernel is nearly quadratic there); narrowing it afterwards lets true outliers go.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

import metatune as mt
from hmr.body_model import BodyModel
from hmr.objective import FitProblem, FitWeights, fit_loss

# Geman-McClure scales of the stages, in percent of the 2D torso length; the last is FitWeights' own.
ROBUST_SCHEDULE = (100.0, 30.0, 10.0)


def coarse_to_fine(body: BodyModel, start: Tensor,  # [B, 85]
                   prob: FitProblem, weights: FitWeights, steps_per_stage: int = 40, lr: float = 0.05,
                   schedule: tuple[float, ...] = ROBUST_SCHEDULE) -> Tensor:  # [B, 85]
    """Adam on the objective through the robust scales of `schedule`, widest first."""
    none = torch.zeros(())   # mt.solve needs some hparams; nothing here is differentiated
    x = start.detach()
    for sigma in schedule:
        w = replace(weights, robust_sigma=sigma)
        x = mt.solve(lambda p, _h, w=w: fit_loss(body, p, prob, w).sum(), x, none, solver="adam",
                     steps=steps_per_stage, lr=lr, hypergrad="none").detach()
    return x
