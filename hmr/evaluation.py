"""Held-out evaluation: the meta-learned fit against the SMPLify-style baseline, side by side."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from matplotlib.figure import Figure

from hmr.body_model import BodyModel
from hmr.joint_uncertainty import joint_std_mm, root_relative_joints
from hmr.meta_fit import MetaFitter
from hmr.metrics import coverage, mpjpe, pa_mpjpe, pve, spearman
from hmr.objective import global_rotation, laplace_std, unpack
from hmr.people_fit import PipelineConfig, fit_people
from hmr.smplify import SmplifyConfig, smplify
from hmr.synthetic import People, make_split, mean_start, people_problem
from metatune.atomic import save_figure, write_json


def _untranslated(body: BodyModel, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    o, p, b, _ = unpack(params)
    return body(b, global_rotation(o), p)


def _mesh_metrics(body: BodyModel, params: torch.Tensor, people: People) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        pv, pj = _untranslated(body, params)
        gv, gj = _untranslated(body, people.params)
    return {"mpjpe_mm": mpjpe(pj[:, :24], gj[:, :24]), "pa_mpjpe_mm": pa_mpjpe(pj[:, :24], gj[:, :24]),
            "pve_mm": pve(pv, gv, pj[:, 0], gj[:, 0])}


def _uncertainty_metrics(body: BodyModel, params: torch.Tensor, jstd: torch.Tensor, people: People) -> dict:
    err = 1000 * (root_relative_joints(body, params) - root_relative_joints(body, people.params)).norm(dim=-1)
    err, jstd = err[:, 1:].detach(), jstd[:, 1:]            # the root joint is exact by construction
    return {"spearman": spearman(jstd, err), "coverage90": coverage(err, jstd)}, err, jstd


METHODS = ("regressor_only", "meta_fit", "pipeline", "smplify")


def evaluate_fits(body: BodyModel, fitter: MetaFitter, people: People, batch: int = 64,
                  smplify_cfg: SmplifyConfig | None = None, methods: tuple[str, ...] = METHODS) -> dict:
    """Metrics (mm), iterations and seconds per person for: regressor only, meta-learned fit, the pipeline
    `hmr infer` runs (meta-learned fit, refinement, depth-flip hypotheses), SMPLify."""
    smplify_cfg = smplify_cfg or SmplifyConfig()
    out: dict[str, dict] = {}
    scatter = {}
    for name in methods:
        params, jstd, frozen, seconds = [], [], [], 0.0
        for s in range(0, len(people), batch):
            part = people.subset(slice(s, s + batch))
            prob = people_problem(body, part)
            t0 = time.perf_counter()
            if name == "smplify":
                x = smplify(body, prob, fitter.weights, smplify_cfg).detach()
                std = joint_std_mm(body, x, laplace_std(body, x, prob, fitter.weights))
            elif name == "pipeline":
                fit = fit_people(body, prob, fitter)
                x, std = fit.params, fit.joint_std_mm
            else:
                res = fitter.fit(prob, steps=0 if name == "regressor_only" else None)
                x, std = res.params, res.joint_std_mm
                frozen.append(res.frozen.float())
            seconds += time.perf_counter() - t0
            params.append(x)
            jstd.append(std)
        x, std = torch.cat(params), torch.cat(jstd)
        m = {k: float(v.mean()) for k, v in _mesh_metrics(body, x, people).items()}
        unc, err, std_flat = _uncertainty_metrics(body, x, std, people)
        m.update(unc)
        pipe = PipelineConfig()
        m["iterations"] = {"regressor_only": 0, "meta_fit": fitter.cfg.inner_steps,
                           "pipeline": fitter.cfg.inner_steps + 3 * pipe.refine_steps + pipe.flip_steps,
                           "smplify": smplify_cfg.camera_steps + smplify_cfg.body_steps}[name]
        m["ms_per_person"] = 1000 * seconds / len(people)
        m["frozen_fraction"] = float(torch.cat(frozen).mean()) if frozen else None
        out[name] = m
        scatter[name] = (std_flat.flatten(), err.flatten())
    with torch.no_grad():
        start = mean_start(body, people_problem(body, people))
    out["mean_start"] = {k: float(v.mean()) for k, v in _mesh_metrics(body, start, people).items()}
    if "meta_fit" in out and "smplify" in out:
        out["ratios"] = {
            "pa_mpjpe_meta_over_smplify": out["meta_fit"]["pa_mpjpe_mm"] / out["smplify"]["pa_mpjpe_mm"],
            "iterations_smplify_over_meta": out["smplify"]["iterations"] / max(out["meta_fit"]["iterations"], 1)}
        if "pipeline" in out:
            out["ratios"]["pa_mpjpe_pipeline_over_smplify"] = (out["pipeline"]["pa_mpjpe_mm"]
                                                              / out["smplify"]["pa_mpjpe_mm"])
    out["_scatter"] = scatter
    return out


def evaluate_methods(checkpoint: str | Path, people: int = 64, model: str | Path | None = None,
                     smplify_cfg: SmplifyConfig | None = None, split: str = "heldout",
                     device: torch.device | str = "cpu") -> dict:
    """Every method on `people` of the held-out (or the hard) split, fitted on `device`."""
    body = BodyModel.load(model).to(device)
    fitter = MetaFitter.load(body, checkpoint)
    res = evaluate_fits(body, fitter, make_split(body, split, people, fitter.data), smplify_cfg=smplify_cfg)
    scatter = res.pop("_scatter")
    return {"summary": res, "scatter": scatter, "people": people, "split": split, "checkpoint": str(checkpoint)}


def write_report(report: dict, out_dir: Path) -> None:
    """metrics.json and uncertainty.png (predicted std against actual error per joint)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, name in zip(axes, ("pipeline", "smplify")):
        std, err = report["scatter"][name]
        ax.scatter(std.cpu().numpy(), err.cpu().numpy(), s=3, alpha=0.4)
        lo, hi = float(min(std.min(), err.min() / 2.5).clamp_min(1e-2)), float(max(std.max(), err.max() / 2.5))
        ax.plot([lo, hi], [2.5 * lo, 2.5 * hi], "r--", label="90% interval edge")
        ax.set(xscale="log", yscale="log")
        s = report["summary"][name]
        ax.set(title=f"{name}: Spearman {s['spearman']:.2f}, coverage {s['coverage90']:.2f}",
               xlabel="predicted per-axis std (mm)", ylabel="actual joint error (mm)")
        ax.legend()
    fig.tight_layout()
    save_figure(fig, out_dir / "uncertainty.png", dpi=90)
    write_json(out_dir / "metrics.json", {k: v for k, v in report.items() if k != "scatter"})
