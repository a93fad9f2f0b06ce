"""HMR benchmark: meta-learned fit vs SMPLify-style baseline on the held-out synthetic split, and `hmr infer`
end to end on real photos.

Held-out people: 2 px noise, 20% missing joints, 5% outliers (hmr.synthetic defaults); the hard split
perturbs every joint angle by up to 0.4 rad more. Reports PA-MPJPE, MPJPE, PVE (mm), iterations, ms per
person (batches of 64, CPU), uncertainty Spearman and 90% coverage, and the ratios against the baseline; with
--checkpoint (e.g. hmr/trained/fit.pt, the shipped fit) nothing is trained. End to end: seconds per photo
(detector, fit, uncertainty, overlay) in a warm process, and the cold command's wall time.
Writes JSON to benchmarks/results/hmr.json and --out.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hmr.body_model import BodyModel  # noqa: E402
from hmr.evaluation import evaluate_fits  # noqa: E402
from hmr.meta_fit import MetaFitConfig, MetaFitter  # noqa: E402
from hmr.synthetic import make_split  # noqa: E402
from metatune.atomic import write_text  # noqa: E402

TARGETS = {"pa_mpjpe_ratio_max": 0.8, "iteration_ratio_min": 10, "ms_per_person_max": 50,
           "spearman_min": 0.6, "coverage90": (0.85, 0.95)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small training and 64 held-out people")
    ap.add_argument("--people", type=int, default=None)
    ap.add_argument("--pretrain-steps", type=int, default=None)
    ap.add_argument("--meta-steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoint", type=Path, default=None, help="evaluate this fit instead of training one")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    people = args.people or (64 if args.quick else 256)
    default = MetaFitConfig()
    cfg = MetaFitConfig(pretrain_steps=args.pretrain_steps or (200 if args.quick else default.pretrain_steps),
                        meta_steps=args.meta_steps or (10 if args.quick else 100),
                        train_pool=4096 if args.quick else default.train_pool)
    body = BodyModel.load()
    t0 = time.perf_counter()
    if args.checkpoint is not None:
        fitter = MetaFitter.load(body, args.checkpoint)
        cfg, calibration = fitter.cfg, fitter.calibration
    else:
        fitter = MetaFitter(body, cfg)
        fitter.pretrain()
        fitter.train()
        calibration = fitter.calibrate(make_split(body, "train", 128))
        fitter.save(Path(__file__).parent / "results" / "hmr_meta.pt")   # reusable: metatune hmr evaluate/infer
    train_s = time.perf_counter() - t0
    heldout = make_split(body, "heldout", people)
    res = evaluate_fits(body, fitter, heldout, batch=64)
    res.pop("_scatter")
    hard = evaluate_fits(body, fitter, make_split(body, "hard", people), batch=64,
                         methods=("meta_fit", "pipeline", "smplify"))
    hard.pop("_scatter")
    # Ablation: the same trained fit with freezing switched off (does freezing cost accuracy?)
    fitter.tuner.config.freeze_ratio = 0.0
    res["meta_fit_no_freezing"] = evaluate_fits(body, fitter, heldout, batch=64, methods=("meta_fit",))["meta_fit"]
    fitter.tuner.config.freeze_ratio = cfg.freeze_ratio

    cols = ["pa_mpjpe_mm", "mpjpe_mm", "pve_mm", "iterations", "ms_per_person", "spearman", "coverage90",
            "frozen_fraction"]
    print(f"\nheld-out synthetic split, {people} people (batches of 64, {args.threads} CPU thread(s))")
    print(f"{'method':<22}" + "".join(f"{c:>16}" for c in cols))
    for name in ("regressor_only", "meta_fit", "meta_fit_no_freezing", "pipeline", "smplify"):
        row = res[name]
        print(f"{name:<22}" + "".join(f"{'-' if row[c] is None else format(row[c], '.3g'):>16}" for c in cols))
    print(f"\nhard split, {people} people")
    for name in ("meta_fit", "pipeline", "smplify"):
        row = hard[name]
        print(f"{name:<22}" + "".join(f"{'-' if row[c] is None else format(row[c], '.3g'):>16}" for c in cols))
    r = res["ratios"]
    print(f"\nPA-MPJPE meta/smplify = {r['pa_mpjpe_meta_over_smplify']:.3f}, pipeline/smplify = "
          f"{r['pa_mpjpe_pipeline_over_smplify']:.3f} (target <= 0.8); "
          f"iterations smplify/meta = {r['iterations_smplify_over_meta']:.0f}x (target >= 10x); hard-split "
          f"coverage of the pipeline {hard['pipeline']['coverage90']:.3f} (target 0.80-0.95)")
    photos = end_to_end()
    report = {"benchmark": "hmr", "people": people, "quick": args.quick, "config": asdict(cfg),
              "checkpoint": str(args.checkpoint) if args.checkpoint else None,
              "train_seconds": train_s, "calibration": calibration, "results": res, "hard": hard,
              "end_to_end": photos, "targets": TARGETS, "threads": args.threads}
    for path in [Path(__file__).parent / "results" / "hmr.json"] + ([args.out] if args.out else []):
        write_text(path, json.dumps(report, indent=2))
    return 0


PHOTOS = [Path("/usr/share/doc/opencv-doc/examples/data") / n for n in ("messi5.jpg", "basketball1.png")]


def end_to_end() -> dict:
    """`hmr infer PHOTO` on real photos: per-stage seconds in this process (a first call pays the detector's
    and the checkpoint's loading, a second does not) and the cold command's wall time (Python and torch start
    included)."""
    import tempfile

    import cv2
    from skimage import data

    from hmr.infer import infer

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        astronaut = Path(tmp) / "astronaut.png"
        cv2.imwrite(str(astronaut), data.astronaut()[..., ::-1])
        for photo in [p for p in PHOTOS if p.is_file()] + [astronaut]:
            runs = []
            for _ in range(2):
                t0 = time.perf_counter()
                res = infer(photo, None, Path(tmp) / "fit")
                runs.append({"total": time.perf_counter() - t0, **res["seconds"]})
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "metatune", "hmr", "infer", str(photo), "--out",
                            str(Path(tmp) / "cold")], check=True, capture_output=True)
            quality = [p["quality"] for p in res["people"]]
            out[photo.name] = {"people": len(res["people"]), "first": runs[0], "warm": runs[1],
                               "cold_command_s": time.perf_counter() - t0,
                               "median_px": [q["median_px"] for q in quality], "max_px": [q["max_px"] for q in quality],
                               "median_of_height": [q["median_of_height"] for q in quality],
                               "max_of_height": [q["max_of_height"] for q in quality]}
            w = out[photo.name]["warm"]
            print(f"{photo.name}: {out[photo.name]['people']} people, warm {w['total']:.2f} s (keypoints "
                  f"{w['keypoints']:.2f}, fit {w['fit']:.2f}, uncertainty {w['uncertainty']:.2f}, overlay "
                  f"{w['overlay']:.2f}), first call {runs[0]['total']:.2f} s, cold command "
                  f"{out[photo.name]['cold_command_s']:.2f} s; reprojection median/max of height "
                  f"{out[photo.name]['median_of_height']} / {out[photo.name]['max_of_height']}")
    return out


if __name__ == "__main__":
    sys.exit(main())
