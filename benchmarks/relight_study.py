"""Does meta-learning help relighting? A paired study on a scene whose lights hide a power and a tint.

Scene: the glossy MuJoCo scene (OLAT layout: 16 training and 4 test lights, 4 views each) where every light
carries a hidden RGB power factor: power log-uniform in [0.25, 4], each channel times 1 +- 20% (written to
hidden_lights.json for the analysis only; no loader reads it). A per-light nuisance is what adaptation can
absorb and a shared model cannot.

Methods, each trained for 3 seeds from the same stage 1 (joint fitting) of that seed:
- `meta`: Meta-SGD over lights (the default), adapting at test time with its learned step sizes;
- `joint`: no meta-learning (the fitting continues for as many images), and at test time its
  light-dependent parameters (the per-light latents: intensity, shadow and indirect corrections) fitted
  freely on the support views by plain gradient steps (`inner_lr`);
- `meta_no_inner`: the meta stage with the inner loop switched off (0 inner steps: the outer loss on the
  start itself), adapting at test time like `meta` (the control: what the outer optimiser alone does).

Protocol: for every test light, the query views are its last 2 views; adaptation uses its first k views,
k in {0, 1, 2} (k = 0: no adaptation), for 1, 2, 5 and 50 steps. The table gives the mean query PSNR per
cell and the paired difference meta - joint and meta - meta_no_inner over the 12 (seed, light) pairs, with
a 95% bootstrap interval (10,000 resamples of the pairs).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metatune.atomic import write_text  # noqa: E402
from relight import training  # noqa: E402
from relight.evaluation import frame_metrics  # noqa: E402
from relight.generate_mujoco import MujocoSceneConfig, generate_mujoco_scene  # noqa: E402
from relight.scene import group_by_light, load_scene  # noqa: E402
from relight.scene_layout import LayoutConfig  # noqa: E402
from relight.tasks import LightTask  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("meta", "joint", "meta_no_inner")
VIEWS = (0, 1, 2)
STEPS = (1, 2, 5, 50)


def make_scene(root: Path, resolution: int) -> Path:
    if (root / "transforms_test.json").is_file():
        return root
    layout = LayoutConfig(resolution=resolution)
    return generate_mujoco_scene(root, MujocoSceneConfig("glossy", layout, n_points=2000, hidden_power=(0.25, 4.0),
                                                         hidden_tint=0.2))


def train_runs(scene: Path, work: Path, seed: int, cfg: training.TrainConfig) -> dict[str, Path]:
    """joint, then meta and meta_no_inner forked from joint's stage 1 (the same fitted start)."""
    runs = {m: work / f"{m}_s{seed}" for m in METHODS}
    base = training.TrainConfig(**{**cfg.__dict__, "seed": seed})
    training.train(scene, runs["joint"], training.TrainConfig(**{**base.__dict__, "method": "joint"}))
    for method, inner in (("meta", base.inner_steps), ("meta_no_inner", 0)):
        training.fork_stage1(runs["joint"], runs[method], "meta")
        training.train(scene, runs[method], training.TrainConfig(**{**base.__dict__, "method": "meta",
                                                                    "inner_steps": inner}))
    return runs


def adapted_psnr(run: Path, method: str, scene: Path) -> list[dict]:
    """Query PSNR of every test light for every (views, steps) cell (views 0: the start, no adaptation)."""
    cfg, module, _ = training.load_checkpoint(run)
    test = load_scene(scene, "test")
    tuner = training.make_tuner(module, cfg, None, None, method="maml" if method == "joint" else "metasgd")
    if method != "joint" and (run / training.TUNER).is_file():
        tuner.load(run / training.TUNER, "relight", "meta_tuner")
    rows = []
    for li, group in enumerate(group_by_light(test.frames)):
        query = group[-2:]
        with torch.no_grad():
            zero = [frame_metrics(training.render(module, f).clamp(0, 1), f)["psnr"] for f in query]
        rows.append({"light": li, "views": 0, "steps": 0, "psnr": sum(zero) / len(zero)})
        for k in VIEWS[1:]:
            task = LightTask(group[0].light, group[:k], query)
            for steps in STEPS:
                res = tuner.adapt(task, steps)
                with torch.no_grad():
                    vals = [frame_metrics(module.model.render(f.camera, task.light, res.params).clamp(0, 1), f)["psnr"]
                            for f in query]
                rows.append({"light": li, "views": k, "steps": steps, "psnr": sum(vals) / len(vals)})
    return rows


def bootstrap(diffs: list[float], n: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile interval of the mean of paired differences (resampling the pairs)."""
    d = torch.tensor(diffs, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    means = d[torch.randint(len(d), (n, len(d)), generator=gen)].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return float(d.mean()), lo, hi


def summarise(per_run: dict[tuple[str, int], list[dict]], seeds: list[int]) -> list[dict]:
    cells = [(0, 0)] + [(k, s) for k in VIEWS[1:] for s in STEPS]
    table = []
    for views, steps in cells:
        row: dict = {"views": views, "steps": steps}
        vals: dict[str, list[float]] = {}
        for method in METHODS:
            vals[method] = [r["psnr"] for seed in seeds for r in per_run[(method, seed)]
                            if r["views"] == views and r["steps"] == steps]
            row[method] = round(sum(vals[method]) / len(vals[method]), 3)
        for other in ("joint", "meta_no_inner"):
            mean, lo, hi = bootstrap([a - b for a, b in zip(vals["meta"], vals[other])])
            row[f"meta_minus_{other}"] = [round(mean, 3), round(lo, 3), round(hi, 3)]
        table.append(row)
    return table


def study(work: Path, seeds: list[int], resolution: int, fit_steps: int, meta_steps: int) -> dict:
    t0 = time.perf_counter()
    scene = make_scene(work / f"scene_hidden_{resolution}", resolution)
    cfg = training.TrainConfig(resolution=resolution, fit_steps=fit_steps, meta_steps=meta_steps, max_points=2000,
                               max_gaussians=4000)
    per_run: dict[tuple[str, int], list[dict]] = {}
    for seed in seeds:
        runs = train_runs(scene, work / f"runs_{resolution}_{fit_steps}_{meta_steps}", seed, cfg)
        for method, run in runs.items():
            per_run[(method, seed)] = adapted_psnr(run, method, scene)
    table = summarise(per_run, seeds)
    return {"seeds": seeds, "resolution": resolution, "fit_steps": fit_steps, "meta_steps": meta_steps,
            "pairs_per_cell": len(seeds) * 4, "seconds": round(time.perf_counter() - t0, 1), "table": table,
            "per_run": {f"{m}_s{s}": rows for (m, s), rows in per_run.items()}}


def print_table(result: dict) -> None:
    print(f"\nmeta-learning study: {result['resolution']} px, {len(result['seeds'])} seeds x 4 test lights, "
          f"query PSNR (dB) of the last 2 views; meta - other: mean [95% bootstrap interval]")
    print(f"{'views':>5} {'steps':>5} {'meta':>7} {'joint':>7} {'no-inner':>8}  {'meta-joint':>24}  {'meta-no_inner':>24}")
    for r in result["table"]:
        fmt = lambda v: f"{v[0]:+.2f} [{v[1]:+.2f}, {v[2]:+.2f}]"  # noqa: E731
        print(f"{r['views']:5d} {r['steps']:5d} {r['meta']:7.2f} {r['joint']:7.2f} {r['meta_no_inner']:8.2f}  "
              f"{fmt(r['meta_minus_joint']):>24}  {fmt(r['meta_minus_meta_no_inner']):>24}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--fit-steps", type=int, default=300)
    ap.add_argument("--meta-steps", type=int, default=60)
    ap.add_argument("--out", type=Path, default=RESULTS / "relight_study.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = study(RESULTS / "relight_study_work", args.seeds, args.resolution, args.fit_steps, args.meta_steps)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
