"""Fitting the people of one image: the meta-learned fit with its refinement and depth-flip hypotheses (what
`hmr infer` and `hmr adapt` run), or the SMPLify-style baseline."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hmr.body_model import BodyModel
from hmr.depth_flips import fit_flips
from hmr.joint_uncertainty import joint_std_mm
from hmr.meta_fit import MetaFitter
from hmr.objective import FitProblem, FitWeights, fit_loss, laplace_std
from hmr.robust_schedule import coarse_to_fine
from hmr.smplify import SmplifyConfig, smplify

# The meta-learned fit shipped with the package: the fit.pt of the run folder hmr/trained (docs/hmr.md has the
# command that trained it; its config.json, log.jsonl, metrics.json and training.png are committed beside it).
SHIPPED_CHECKPOINT = Path(__file__).parent / "trained" / "fit.pt"


@dataclass
class PeopleFit:
    params: torch.Tensor        # [P, 85]
    param_std: torch.Tensor     # [P, 85]
    joint_std_mm: torch.Tensor  # [P, 24]
    loss: torch.Tensor          # [P]
    method: str
    seconds: dict[str, float]   # "fit" (fit and refinement) and "uncertainty" (hypotheses, std), wall clock


@dataclass
class PipelineConfig:
    refine_steps: int = 30   # Adam steps per robust scale after the meta-learned fit (hmr.robust_schedule)
    flip_steps: int = 20     # refinement steps of each depth-flip hypothesis (0: no hypotheses)


def fit_people(body: BodyModel, prob: FitProblem, checkpoint: str | Path | MetaFitter | None = None,
               baseline: bool = False, smplify_cfg: SmplifyConfig | None = None, steps: int | None = None,
               cfg: PipelineConfig | None = None) -> PeopleFit:
    """The meta-learned fit (the shipped checkpoint unless another is given), refined coarse to fine, then its
    depth-flip hypotheses: the most probable one, its calibrated std widened by their spread. With `baseline`,
    SMPLify-style with a diagonal Laplace std (not calibrated)."""
    cfg = cfg or PipelineConfig()
    t0 = time.perf_counter()
    if baseline:
        weights = FitWeights()
        params = smplify(body, prob, weights, smplify_cfg).detach()
        t1 = time.perf_counter()
        std = laplace_std(body, params, prob, weights)
        jstd, method = joint_std_mm(body, params, std), "smplify"
    else:
        fitter = checkpoint if isinstance(checkpoint, MetaFitter) else MetaFitter.load(
            body, SHIPPED_CHECKPOINT if checkpoint is None else checkpoint)
        weights = fitter.weights
        res = fitter.fit(prob, steps)
        params, std, method = res.params.detach(), res.param_std.detach(), "meta"
        if cfg.refine_steps > 0:
            params = coarse_to_fine(body, params, prob, weights, steps_per_stage=cfg.refine_steps, lr=0.02)
        t1 = time.perf_counter()
        spread = torch.zeros(len(prob), 24, device=params.device)
        if cfg.flip_steps > 0:
            flips = fit_flips(body, params, prob, weights, refine_steps=cfg.flip_steps)
            params, spread = flips.params, flips.spread_var_mm2
        jstd = ((joint_std_mm(body, params, std) * fitter.calibration).pow(2) + spread).sqrt()
    with torch.no_grad():
        loss = fit_loss(body, params, prob, weights)
    seconds = {"fit": t1 - t0, "uncertainty": time.perf_counter() - t1}
    return PeopleFit(params, std, jstd.detach(), loss, method, seconds)
