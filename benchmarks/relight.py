"""Relighting benchmarks: rasterizer speed (CPU; GPU via gsplat when there is one), shadows, and OOD-light quality.

Shadows: one light's visibility (`light_visibility`, the deep opacity map) at 2k-100k Gaussians against the
exact pairwise reference up to 50k, CPU seconds (process_time) on 1 and 2 threads (2 also with idle OpenMP
threads sleeping) and peak memory, each size in a subprocess of its own (peak resident memory from
/proc/self/status VmHWM, reset before the call). Scenes: Gaussians on surfaces (a sphere over a floor) and a
volume of `random_gaussians`.

Kernel: forward + backward seconds of one render (sum of the image) at 10k/50k/100k Gaussians and 256/512
px on 2 threads (torch.set_num_threads(2), OMP_NUM_THREADS=2): our PyTorch path, the fused C++ kernel
(relight/kernel.py) and PyTorch3D's pulsar (spheres: the same centres, radius = the Gaussian's cut-off reach
along its largest axis, its opacity and colour), with ratios, and the peak resident memory of each row,
each row in a subprocess of its own.

Quality: on generated scenes (glossy MuJoCo scene with cast shadows, matte MuJoCo scene, PyTorch3D scene,
PyTorch3D scene with one bounce of coloured interreflection, which the model's local shading cannot explain)
the meta-learned Gaussian-Phong model against the same model trained jointly without meta-learning and
against plain Gaussians without shading: PSNR/SSIM on the test lights (other side of the hemisphere),
zero-shot and after adapting on 1 view per test light, and per row the training's wall and CPU seconds
(process_time), threads (--threads) and peak resident memory (VmHWM, reset before the row's training).
Writes a table to stdout and JSON to benchmarks/results/relight.json and to --out.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metatune.atomic import write_text  # noqa: E402
from relight.camera import Camera, look_at  # noqa: E402
from relight.evaluation import adapt, evaluate  # noqa: E402
from relight.gaussians import covariance_3d  # noqa: E402
from relight.generate import generate_scene  # noqa: E402
from relight.kernel import rasterize_fused  # noqa: E402
from relight.light import Light  # noqa: E402
from relight.model import RelightModel  # noqa: E402
from relight.projection import ALPHA_MIN  # noqa: E402
from relight.rasterize import rasterize  # noqa: E402
from relight.rasterize_reference import rasterize_reference  # noqa: E402
from relight.scene import group_by_light, load_scene  # noqa: E402
from relight.scene_layout import LayoutConfig  # noqa: E402
from relight.training import STAGE1, TrainConfig, fork_stage1, train  # noqa: E402
from relight.transfer import transfer  # noqa: E402
from relight.visibility import light_visibility, splat_count  # noqa: E402
from relight.visibility_exact import light_visibility_exact  # noqa: E402

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


SHADOW_LIGHT = Light((2.0, 1.5, 3.0))
SHADOW_SCENES = ("surface", "volume")


def shadow_scene(kind: str, n: int, seed: int = 0) -> tuple:
    """Means, covariances, opacities and the model's bias (2 x largest scale) of n Gaussians.

    surface: a sphere (radius 0.5, centre 0.8 above) over a 3 x 3 floor, points uniform on the surfaces,
    the model's own Gaussians (flat, tangent scale = point spacing, opacity 0.8); volume: `random_gaussians`
    (a cloud of std 0.4, scales 0.005-0.025 whatever n: footprints that do not shrink as n grows).
    """
    if kind == "volume":
        means, quats, scales, opac, _ = [t.detach() for t in random_gaussians(n, "cpu", seed)]
        return means, covariance_3d(quats, scales), opac, 2.0 * scales.max(-1).values
    gen = torch.Generator().manual_seed(seed)
    floor_area, sphere_area = 9.0, math.pi  # 4 pi 0.5^2
    n_sphere = round(n * sphere_area / (floor_area + sphere_area))
    floor = torch.cat([torch.rand(n - n_sphere, 2, generator=gen) * 3 - 1.5, torch.zeros(n - n_sphere, 1)], 1)
    out = torch.randn(n_sphere, 3, generator=gen)
    out = out / out.norm(dim=1, keepdim=True)
    points = torch.cat([floor, 0.5 * out + torch.tensor([0.0, 0.0, 0.8])])
    normals = torch.cat([torch.tensor([[0.0, 0.0, 1.0]]).expand(n - n_sphere, 3), out])
    g = RelightModel(points, normals, torch.full((n,), math.sqrt((floor_area + sphere_area) / n))).gaussians
    with torch.no_grad():
        return g.means.clone(), g.covariances(), g.opacities, 2.0 * g.scales.max(-1).values


def _memory_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def shadow_worker(kind: str, method: str, n: int, threads: int, repeats: int) -> dict:
    """One light's visibility of one scene in this process: CPU and wall seconds (median of `repeats`) and the
    peak resident memory above the resident memory just before the call (the largest over the repeats)."""
    torch.set_num_threads(threads)
    fn = light_visibility if method == "new" else light_visibility_exact
    with torch.no_grad():
        means, covs, opac, bias = shadow_scene(kind, 500)
        fn(means, covs, opac, SHADOW_LIGHT, bias=bias)  # one-time costs (lazy kernels, allocator) out of the timing
        means, covs, opac, bias = shadow_scene(kind, n)
        cpu, wall, above, peak = [], [], [], 0
        for _ in range(repeats):
            vis = None
            gc.collect()
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            rss = _memory_kb("VmRSS")
            c0, w0 = time.process_time(), time.perf_counter()
            vis = fn(means, covs, opac, SHADOW_LIGHT, bias=bias)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
            above.append(_memory_kb("VmHWM") - rss)
            peak = max(peak, _memory_kb("VmHWM"))
        row = {"scene": kind, "method": method, "gaussians": n, "threads": threads, "repeats": repeats,
               "cpu_s": round(sorted(cpu)[len(cpu) // 2], 3), "cpu_min_s": round(min(cpu), 3),
               "wall_s": round(sorted(wall)[len(wall) // 2], 3), "peak_above_start_mb": round(max(above) / 1024, 1),
               "peak_process_mb": round(peak / 1024, 1)}
        if method == "new":
            pairs = splat_count(means, covs, opac, SHADOW_LIGHT)
            row |= {"pairs": pairs, "pairs_per_gaussian": round(pairs / n, 1)}
        else:  # agreement with the deep opacity map
            diff = (light_visibility(means, covs, opac, SHADOW_LIGHT, bias=bias) - vis).abs()
            row |= {"mean_abs_diff": round(float(diff.mean()), 4), "max_abs_diff": round(float(diff.max()), 4),
                    "mean_visibility": round(float(vis.mean()), 4)}
    return row


# (threads, OMP_WAIT_POLICY): torch's default lets idle OpenMP threads spin, which process_time counts as CPU;
# PASSIVE puts them to sleep, so on a shared machine its CPU seconds are the work, not the wait for a core.
SHADOW_THREADS = ((1, None), (2, None), (2, "PASSIVE"))


def shadows(quick: bool) -> list[dict]:
    """Every (scene, size, threads, method) in a subprocess of its own, so that peak memory is per call."""
    sizes = [2000, 10000, 50000, 100000]
    exact_max = {"surface": 10000 if quick else 50000, "volume": 10000}
    rows = []
    for kind in SHADOW_SCENES:
        for n in sizes:
            for threads, wait in SHADOW_THREADS:
                for method in ("new", "exact"):
                    if method == "exact" and n > exact_max[kind]:
                        continue
                    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
                    if wait:
                        env["OMP_WAIT_POLICY"] = wait
                    else:
                        env.pop("OMP_WAIT_POLICY", None)
                    repeats = 1 if method == "exact" and n > 10000 else 3
                    cmd = [sys.executable, __file__, "--shadow-worker", kind, method, str(n), str(threads), str(repeats)]
                    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                    if done.returncode != 0:
                        rows.append({"scene": kind, "method": method, "gaussians": n, "threads": threads,
                                     "error": done.stderr.strip()[-300:]})
                    else:
                        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                    rows[-1]["omp_wait"] = wait or "default"
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def print_shadows(rows: list[dict]) -> None:
    by = {(r["scene"], r["gaussians"], r["threads"], r["omp_wait"], r["method"]): r for r in rows if "error" not in r}
    print(f"{'scene':7} {'N':>7} {'thr':>3} {'wait':>7} {'new CPU s':>9} {'wall s':>7} {'+MB':>6} {'peak MB':>7} "
          f"{'pairs/N':>7} {'exact CPU s':>11} {'+MB':>7} {'exact/new':>9} {'mean|d|':>7} {'max|d|':>6}")
    for (kind, n, threads, wait, method), r in by.items():
        if method != "new":
            continue
        e = by.get((kind, n, threads, wait, "exact"))
        ex = (f"{e['cpu_s']:11.3f} {e['peak_above_start_mb']:7.1f} {e['cpu_s'] / max(r['cpu_s'], 1e-9):9.1f} "
              f"{e['mean_abs_diff']:7.4f} {e['max_abs_diff']:6.3f}") if e else f"{'-':>11} {'-':>7} {'-':>9}"
        print(f"{kind:7} {n:7d} {threads:3d} {wait:>7} {r['cpu_s']:9.3f} {r['wall_s']:7.3f} "
              f"{r['peak_above_start_mb']:6.1f} {r['peak_process_mb']:7.1f} {r['pairs_per_gaussian']:7.1f} {ex}")


KERNEL_SIZES = ((256, 10000), (256, 50000), (256, 100000), (512, 10000), (512, 50000), (512, 100000))
KERNEL_METHODS = ("torch", "fused", "pulsar")
KERNEL_THREADS = 2


def kernel_renderer(method: str, n: int, res: int):
    """render(params, camera) -> image [H, W, 3] with gradients to params, for one of KERNEL_METHODS."""
    if method == "torch":
        return lambda params, cam: rasterize(*params, cam, backend="torch")[0]
    if method == "fused":
        return lambda params, cam: rasterize_fused(*params, cam)[0]
    from pytorch3d.renderer.points.pulsar import Renderer
    renderer = Renderer(res, res, n, right_handed_system=False)

    def pulsar(params, cam):
        means, _, scales, opac, colors = params
        view = cam.viewmat()
        # pulsar's camera at the origin looks down +z with y up; ours (OpenCV axes) down +z with y down
        pos = (means @ view[:3, :3].T + view[:3, 3]) * torch.tensor([1.0, -1.0, 1.0])
        reach = torch.sqrt(2 * torch.log((opac / ALPHA_MIN).clamp_min(1.0)))
        rad = reach * scales.max(-1).values  # where our Gaussian's alpha falls below ALPHA_MIN
        focal = 0.05  # world units; the sensor's width then makes the focal length cam.fx pixels
        cam_params = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, focal, focal * res / cam.fx])
        return renderer(pos, colors, rad, cam_params, 1e-3, 10.0, opacity=opac, bg_col=torch.zeros(3))
    return pulsar


def kernel_worker(method: str, n: int, res: int, repeats: int) -> dict:
    """One (method, size) in this process: median wall seconds of forward and backward over `repeats`, CPU
    seconds, and peak resident memory (whole process, and above the resident memory before the renders)."""
    torch.set_num_threads(KERNEL_THREADS)
    cam = Camera.from_fov(look_at(torch.tensor([2.0, 1.0, 1.5]), torch.zeros(3)), 0.8, res, res)
    render = kernel_renderer(method, n, res)
    render(random_gaussians(1000, "cpu", seed=1), cam).sum().backward()  # one-time costs out of the timing
    params = random_gaussians(n, "cpu")
    fwd, bwd = [], []
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    rss = _memory_kb("VmRSS")
    c0 = time.process_time()
    for _ in range(repeats):
        for p in params:
            p.grad = None
        t0 = time.perf_counter()
        img = render(params, cam)
        t1 = time.perf_counter()
        img.sum().backward()
        fwd.append(t1 - t0)
        bwd.append(time.perf_counter() - t1)
        del img
    cpu = (time.process_time() - c0) / repeats
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {"method": method, "gaussians": n, "resolution": res, "threads": KERNEL_THREADS, "repeats": repeats,
            "forward_s": round(med(fwd), 4), "backward_s": round(med(bwd), 4),
            "total_s": round(med([f + b for f, b in zip(fwd, bwd)]), 4), "cpu_s": round(cpu, 3),
            "peak_process_mb": round(_memory_kb("VmHWM") / 1024, 1),
            "peak_above_start_mb": round((_memory_kb("VmHWM") - rss) / 1024, 1)}


def kernel(quick: bool) -> list[dict]:
    """Every (size, method) in a subprocess of its own (peak memory per row), 2 OpenMP threads."""
    rows = []
    sizes = KERNEL_SIZES[:1] + KERNEL_SIZES[3:4] if quick else KERNEL_SIZES
    for res, n in sizes:
        for method in KERNEL_METHODS:
            slow = method != "fused" and n * res > 10000 * 256
            repeats = 1 if slow else 5 if method == "fused" else 3
            env = os.environ | {"OMP_NUM_THREADS": str(KERNEL_THREADS)}
            cmd = [sys.executable, __file__, "--kernel-worker", method, str(n), str(res), str(repeats)]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                rows.append({"method": method, "gaussians": n, "resolution": res, "error": done.stderr.strip()[-300:]})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def print_kernel(rows: list[dict]) -> None:
    by = {(r["resolution"], r["gaussians"], r["method"]): r for r in rows if "error" not in r}
    print(f"{'res':>4} {'N':>7} {'torch s':>8} {'fused s':>8} {'pulsar s':>8} {'torch/fused':>11} {'pulsar/fused':>12} "
          f"{'torch MB':>8} {'fused MB':>8} {'pulsar MB':>9}")
    for res, n in sorted({(r, g) for r, g, _ in by}):
        t, f, p = (by.get((res, n, m)) for m in KERNEL_METHODS)
        sec = lambda r: f"{r['total_s']:8.3f}" if r else f"{'-':>8}"  # noqa: E731
        mb = lambda r, w: f"{r['peak_process_mb']:{w}.0f}" if r else f"{'-':>{w}}"  # noqa: E731
        ratio = lambda r, w: f"{r['total_s'] / f['total_s']:{w}.1f}" if r and f else f"{'-':>{w}}"  # noqa: E731
        print(f"{res:4d} {n:7d} {sec(t)} {sec(f)} {sec(p)} {ratio(t, 11)} {ratio(p, 12)} {mb(t, 8)} {mb(f, 8)} "
              f"{mb(p, 9)}")


def adapted(run: Path, scene: Path, views: int) -> dict:
    """Query PSNR/SSIM after adapting to each test light on `views` of its images, mean over lights."""
    n_lights = len(group_by_light(load_scene(scene, "test").frames))
    res = [adapt(run, scene, i, views) for i in range(n_lights)]
    return {"psnr": round(sum(r.after["psnr"] for r in res) / n_lights, 3),
            "ssim": round(sum(r.after["ssim"] for r in res) / n_lights, 4),
            "psnr_before": round(sum(r.before["psnr"] for r in res) / n_lights, 3)}


# Bump when training changes, so that cached runs of older code are not reused.
RUN_VERSION = "v2"


def quality_worker(preset: str, method: str, resolution: int, quick: bool, work: Path) -> dict:
    """One (scene, method) row in this process: train (meta forks joint's stage 1 when it is there), evaluate on
    the test and training lights, adapt on 1 view; CPU seconds and peak resident memory of the training."""
    layout = LayoutConfig(resolution=resolution, train_lights=16, test_lights=4, views_per_light=4)
    steps = (80, 15) if quick else (300, 60)
    scene = work / f"scene_{preset}_{resolution}"
    if not (scene / "transforms_test.json").is_file():
        generate_scene(scene, preset, layout=layout)
    run = work / f"run_{preset}_{method}_{resolution}_{steps[0]}_{steps[1]}_{RUN_VERSION}"
    cfg = TrainConfig(method=method, resolution=resolution, fit_steps=steps[0], meta_steps=steps[1], max_points=2000)
    joint = run.with_name(run.name.replace(f"_{method}_", "_joint_"))
    forked = method == "meta" and (joint / STAGE1).is_file()
    if forked:
        fork_stage1(joint, run, "meta")  # stage 1 is the same computation for both: train it once
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the training's peak from here
    rss, c0 = _memory_kb("VmRSS"), time.process_time()
    summary = train(scene, run, cfg)
    cpu, peak = time.process_time() - c0, _memory_kb("VmHWM")
    ev = evaluate(run, scene)
    seen = evaluate(run, scene, split="train")  # the training lights: the in-distribution ceiling
    row = {"scene": preset, "method": method, "ood_psnr": ev["psnr"], "ood_ssim": ev["ssim"],
           "train_light_psnr": seen["psnr"], "train_seconds": summary["train_seconds"],
           "gaussians": summary["gaussians"], "resolution": resolution, "threads": torch.get_num_threads(),
           "train_cpu_seconds": round(cpu, 1), "train_peak_mb": round(peak / 1024),
           "train_peak_above_start_mb": round((peak - rss) / 1024), "stage1_forked": forked}
    if method != "plain":
        ad = adapted(run, scene, 1)
        row |= {"adapted1_psnr": ad["psnr"], "adapted1_ssim": ad["ssim"]}
    return row


def quality(quick: bool, resolution: int, work: Path, presets: list[str], methods: list[str],
            threads: int | None) -> list[dict]:
    """Every (scene, method) row, each in a subprocess of its own (so that its peak memory is its own)."""
    rows = []
    for preset in presets:
        for method in methods:
            cmd = [sys.executable, __file__, "--quality-worker", preset, method, str(resolution), str(int(quick)),
                   str(work)] + (["--threads", str(threads)] if threads else [])
            with open(work.parent / "relight_quality_worker.err", "w") as err:  # a file: tqdm fills a pipe
                out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
            if out.returncode != 0:
                raise SystemExit(f"quality row {preset}/{method} failed; see {err.name}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def merge_results(old: dict, new: dict) -> dict:
    """New results over old ones: the speed and shadow tables if measured, quality rows by (scene, method,
    resolution)."""
    key = lambda r: (r["scene"], r["method"], r.get("resolution"))  # noqa: E731
    rows = {key(r): r for r in old.get("quality", [])} | {key(r): r for r in new.get("quality", [])}
    merged = {k: v for k, v in old.items() if k in ("speed", "shadows", "shadows_load", "kernel", "kernel_load")} | new
    if rows:
        merged["quality"] = list(rows.values())
    return merged


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer sizes and steps")
    ap.add_argument("--only", choices=["speed", "shadows", "kernel", "quality"], default=None)
    ap.add_argument("--resolution", type=int, default=128, help="training resolution of the quality runs")
    ap.add_argument("--scenes", nargs="+", default=list(PRESETS), choices=PRESETS)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--shadow-worker", nargs=5, default=None, help=argparse.SUPPRESS)  # scene method n threads reps
    ap.add_argument("--kernel-worker", nargs=4, default=None, help=argparse.SUPPRESS)  # method n res repeats
    ap.add_argument("--quality-worker", nargs=5, default=None, help=argparse.SUPPRESS)  # scene method res quick work
    args = ap.parse_args()
    if args.kernel_worker:
        method, n, res, repeats = args.kernel_worker
        print(json.dumps(kernel_worker(method, int(n), int(res), int(repeats))))
        return 0
    if args.shadow_worker:
        kind, method, n, threads, repeats = args.shadow_worker
        print(json.dumps(shadow_worker(kind, method, int(n), int(threads), int(repeats))))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quality_worker:
        preset, method, res, quick, work = args.quality_worker
        print(json.dumps(quality_worker(preset, method, int(res), quick == "1", Path(work))))
        return 0
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
    if args.only in (None, "shadows"):
        load = os.getloadavg()
        result["shadows"] = shadows(args.quick)
        result["shadows_load"] = {"before": [round(x, 2) for x in load],
                                  "after": [round(x, 2) for x in os.getloadavg()]}
        print_shadows(result["shadows"])
        print(f"load average (1, 5, 15 min) before {result['shadows_load']['before']}, "
              f"after {result['shadows_load']['after']}")
    if args.only in (None, "kernel"):
        load, up = os.getloadavg(), subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        result["kernel"] = kernel(args.quick)
        result["kernel_load"] = {"before": [round(x, 2) for x in load], "uptime_before": up,
                                 "after": [round(x, 2) for x in os.getloadavg()]}
        print_kernel(result["kernel"])
        print(f"load average (1, 5, 15 min) before {result['kernel_load']['before']}, "
              f"after {result['kernel_load']['after']}")
    if args.only in (None, "quality"):
        load = os.getloadavg()
        (RESULTS / "relight_work").mkdir(exist_ok=True)
        result["quality"] = quality(args.quick, args.resolution, RESULTS / "relight_work", args.scenes, args.methods,
                                    args.threads)
        print(f"{'scene':7} {'res':>4} {'method':6} {'OOD PSNR':>9} {'SSIM':>6} {'train-light':>11} "
              f"{'1-shot PSNR':>11} {'Gaussians':>9} {'train s':>8} {'CPU s':>7} {'peak MB':>8}")
        for r in result["quality"]:
            print(f"{r['scene']:7} {r['resolution']:4d} {r['method']:6} {r['ood_psnr']:9.2f} {r['ood_ssim']:6.3f} "
                  f"{r['train_light_psnr']:11.2f} {r.get('adapted1_psnr', float('nan')):11.2f} "
                  f"{r['gaussians']:9d} {r['train_seconds']:8.1f} {r['train_cpu_seconds']:7.1f} {r['train_peak_mb']:8d}")
        print(f"threads {result['quality'][0]['threads']}; load average before {[round(x, 2) for x in load]}, "
              f"after {[round(x, 2) for x in os.getloadavg()]}")
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
