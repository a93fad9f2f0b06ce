"""Relighting benchmarks: rasterizer speed (CPU; GPU via gsplat when there is one) and OOD-light quality.

Quality: on generated scenes (glossy MuJoCo scene with cast shadows, matte MuJoCo scene, PyTorch3D scene,
PyTorch3D scene with one bounce of coloured interreflection, which the model's local shading cannot explain)
the meta-learned Gaussian-Phong model against the same model trained jointly without meta-learning and
against plain Gaussians without shading: PSNR/SSIM on the test lights (other side of the hemisphere),
zero-shot and after adapting on 1 view per test light, and training time.
Writes a table to stdout and JSON to benchmarks/results/relight.json and to --out.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metatune.atomic import write_text  # noqa: E402
from relight.camera import Camera, look_at  # noqa: E402
from relight.evaluation import adapt, evaluate  # noqa: E402
from relight.generate import generate_scene  # noqa: E402
from relight.rasterize import rasterize  # noqa: E402
from relight.rasterize_reference import rasterize_reference  # noqa: E402
from relight.scene import group_by_light, load_scene  # noqa: E402
from relight.scene_layout import LayoutConfig  # noqa: E402
from relight.training import STAGE1, TrainConfig, fork_stage1, train  # noqa: E402
from relight.transfer import transfer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PRESETS = ("glossy", "matte", "p3d", "bleed")
METHODS = ("joint", "meta", "plain")  # joint first: meta starts from its stage-1 checkpoint


def random_gaussians(n: int, device: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=gen) * 0.4
    quats = torch.randn(n, 4, generator=gen)
    scales = torch.rand(n, 3, generator=gen) * 0.02 + 0.005
    opac = torch.rand(n, generator=gen) * 0.8 + 0.1
    colors = torch.rand(n, 3, generator=gen)
    return [t.to(device).requires_grad_() for t in (means, quats, scales, opac, colors)]


def time_render(n: int, res: int, device: str, repeats: int) -> tuple[float, float]:
    """Median seconds of one forward and one backward pass."""
    cam = Camera.from_fov(look_at(torch.tensor([2.0, 1.0, 1.5]), torch.zeros(3)).to(device), 0.8, res, res)
    params = random_gaussians(n, device)
    fwd, bwd = [], []
    for _ in range(repeats + 1):
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        img, _ = rasterize(*params, cam)
        sync()
        t1 = time.perf_counter()
        img.sum().backward()
        sync()
        fwd.append(t1 - t0)
        bwd.append(time.perf_counter() - t1)
    return sorted(fwd[1:])[len(fwd[1:]) // 2], sorted(bwd[1:])[len(bwd[1:]) // 2]


def speed(quick: bool) -> list[dict]:
    rows = []
    counts = [1000, 10000] if quick else [1000, 5000, 10000, 50000]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for res in (128, 256):
            for n in counts:
                try:
                    f, b = time_render(n, res, device, 2 if quick else 3)
                    rows.append({"device": device, "resolution": res, "gaussians": n, "forward_s": round(f, 4),
                                 "backward_s": round(b, 4)})
                except Exception as err:  # noqa: BLE001 - e.g. gsplat missing on a CUDA machine: report it
                    rows.append({"device": device, "resolution": res, "gaussians": n, "error": str(err)[:200]})
    # peers at a size the slow reference can do: tiled fast path, reference, and the frozen-geometry transfer
    cam = Camera.from_fov(look_at(torch.tensor([2.0, 1.0, 1.5]), torch.zeros(3)), 0.8, 24, 24)
    params = [t.detach() for t in random_gaussians(100, "cpu")]
    t0 = time.perf_counter()
    rasterize(*params, cam)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    rasterize_reference(*params, cam)
    t_ref = time.perf_counter() - t0
    rows.append({"device": "cpu", "resolution": 24, "gaussians": 100, "forward_s": round(t_fast, 4),
                 "reference_forward_s": round(t_ref, 3), "speedup_vs_reference": round(t_ref / t_fast, 1)})
    cam = Camera.from_fov(look_at(torch.tensor([2.0, 1.0, 1.5]), torch.zeros(3)), 0.8, 128, 128)
    params = random_gaussians(5000, "cpu")
    tr = transfer(*[p.detach() for p in params[:4]], cam)
    t0 = time.perf_counter()
    for _ in range(5):
        tr.apply(params[4]).sum().backward()
    t_lin = (time.perf_counter() - t0) / 5
    f, b = time_render(5000, 128, "cpu", 2)
    rows.append({"device": "cpu", "resolution": 128, "gaussians": 5000, "transfer_fwd_bwd_s": round(t_lin, 4),
                 "full_fwd_bwd_s": round(f + b, 4), "inner_step_speedup": round((f + b) / t_lin, 1)})
    return rows


def adapted(run: Path, scene: Path, views: int) -> dict:
    """Query PSNR/SSIM after adapting to each test light on `views` of its images, mean over lights."""
    n_lights = len(group_by_light(load_scene(scene, "test").frames))
    res = [adapt(run, scene, i, views) for i in range(n_lights)]
    return {"psnr": round(sum(r.after["psnr"] for r in res) / n_lights, 3),
            "ssim": round(sum(r.after["ssim"] for r in res) / n_lights, 4),
            "psnr_before": round(sum(r.before["psnr"] for r in res) / n_lights, 3)}


# Bump when training changes, so that cached runs of older code are not reused.
RUN_VERSION = "v2"


def quality(quick: bool, resolution: int, work: Path, presets: list[str], methods: list[str]) -> list[dict]:
    rows = []
    layout = LayoutConfig(resolution=resolution, train_lights=16, test_lights=4, views_per_light=4)
    steps = (80, 15) if quick else (300, 60)
    for preset in presets:
        scene = work / f"scene_{preset}_{resolution}"
        if not (scene / "transforms_test.json").is_file():
            generate_scene(scene, preset, layout=layout)
        for method in methods:
            run = work / f"run_{preset}_{method}_{resolution}_{steps[0]}_{steps[1]}_{RUN_VERSION}"
            cfg = TrainConfig(method=method, resolution=resolution, fit_steps=steps[0], meta_steps=steps[1],
                              max_points=2000)
            joint = run.with_name(run.name.replace(f"_{method}_", "_joint_"))
            if method == "meta" and (joint / STAGE1).is_file():
                fork_stage1(joint, run, "meta")  # stage 1 is the same computation for both: train it once
            summary = train(scene, run, cfg)
            ev = evaluate(run, scene)
            seen = evaluate(run, scene, split="train")  # the training lights: the in-distribution ceiling
            row = {"scene": preset, "method": method, "ood_psnr": ev["psnr"], "ood_ssim": ev["ssim"],
                   "train_light_psnr": seen["psnr"], "train_seconds": summary["train_seconds"],
                   "gaussians": summary["gaussians"], "resolution": resolution}
            if method != "plain":
                ad = adapted(run, scene, 1)
                row |= {"adapted1_psnr": ad["psnr"], "adapted1_ssim": ad["ssim"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def merge_results(old: dict, new: dict) -> dict:
    """New results over old ones: the speed table if measured, quality rows by (scene, method, resolution)."""
    key = lambda r: (r["scene"], r["method"], r.get("resolution"))  # noqa: E731
    rows = {key(r): r for r in old.get("quality", [])} | {key(r): r for r in new.get("quality", [])}
    merged = {k: v for k, v in old.items() if k == "speed"} | new
    if rows:
        merged["quality"] = list(rows.values())
    return merged


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer sizes and steps")
    ap.add_argument("--only", choices=["speed", "quality"], default=None)
    ap.add_argument("--resolution", type=int, default=128, help="training resolution of the quality runs")
    ap.add_argument("--scenes", nargs="+", default=list(PRESETS), choices=PRESETS)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "quick": args.quick}
    if args.only in (None, "speed"):
        result["speed"] = speed(args.quick)
        print(f"{'device':6} {'res':>4} {'N':>6} {'fwd s':>8} {'bwd s':>8}")
        for r in result["speed"]:
            if "backward_s" in r:
                print(f"{r['device']:6} {r['resolution']:4d} {r['gaussians']:6d} {r['forward_s']:8.4f} {r['backward_s']:8.4f}")
            else:
                print(json.dumps(r))
    if args.only in (None, "quality"):
        result["quality"] = quality(args.quick, args.resolution, RESULTS / "relight_work", args.scenes, args.methods)
        print(f"{'scene':7} {'method':6} {'OOD PSNR':>9} {'SSIM':>6} {'train-light':>11} {'1-shot PSNR':>11} "
              f"{'train s':>8}")
        for r in result["quality"]:
            print(f"{r['scene']:7} {r['method']:6} {r['ood_psnr']:9.2f} {r['ood_ssim']:6.3f} "
                  f"{r['train_light_psnr']:11.2f} {r.get('adapted1_psnr', float('nan')):11.2f} "
                  f"{r['train_seconds']:8.1f}")
        for preset in args.scenes:
            by = {r["method"]: r["ood_psnr"] for r in result["quality"] if r["scene"] == preset}
            if "meta" in by:
                print(f"{preset}: " + ", ".join(f"meta - {m} = {by['meta'] - v:+.2f} dB" for m, v in by.items()
                                                if m != "meta"))
    saved = RESULTS / "relight.json"
    text = json.dumps(merge_results(json.loads(saved.read_text()) if saved.is_file() else {}, result), indent=2)
    for path in [saved] + ([args.out] if args.out else []):
        write_text(path, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
