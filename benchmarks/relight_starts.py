"""Relighting from scratch against a start on surface points, on a moving-light capture (one view per light).

The glossy MuJoCo scene (cast shadows, 64 training lights and 8 test lights on the other side of the hemisphere,
one view each) generated twice at --resolution, with and without `points3d.ply`. Rows, each `metatune relight
train` then `evaluate` with the defaults in a subprocess of its own (CPU seconds and peak resident memory from
wait4): from scratch (the hull phase, the restart on its fitted surfaces, the run proper), from scratch without
the restart (`--reseed-steps 0`), and from the surface points. Prints PSNR, SSIM, PSNR inside the ground
truth's cast shadows and on the lit object, the Gaussian counts, seconds and memory, and the differences the
targets are about (scratch - surface; lit - shadow); writes JSON to benchmarks/results/relight_starts.json and
to --out. --quick: 64 px and a tenth of the steps (checks that it runs, not the targets).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metatune.atomic import write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CLI = [sys.executable, "-m", "metatune", "relight"]


def timed(cmd: list[str], env: dict) -> dict:
    """Run a command; wall seconds, CPU seconds (user + system) and peak RSS (GB) of its process tree's root."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: progress bars would fill a pipe and stall the run
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        err = log.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_gb": round(usage.ru_maxrss / 1e6, 2)}


def row(name: str, scene: Path, run: Path, extra: list[str], env: dict) -> dict:
    """Train (defaults plus `extra`) and evaluate one start from nothing; its metrics, counts, seconds, memory."""
    shutil.rmtree(run, ignore_errors=True)  # a run left from before would resume, and be timed from where it stopped
    train = timed(CLI + ["train", "--scene", str(scene), "--out", str(run), *extra], env)
    ev = timed(CLI + ["evaluate", "--checkpoint", str(run), "--scene", str(scene), "--out", str(run / "eval")], env)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    out = {"start": name, "ood_psnr": metrics["psnr"], "ood_ssim": metrics["ssim"],
           "psnr_shadow": metrics.get("psnr_shadow"), "psnr_lit": metrics.get("psnr_lit"),
           "gaussians": summary["gaussians"], "train": train, "evaluate": ev}
    if "hull" in summary:
        out["hull_gaussians"] = summary["hull"]["gaussians"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    res = 64 if args.quick else args.resolution
    work = RESULTS / "relight_starts_work" / f"{res}{'_quick' if args.quick else ''}"
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa"),
                        "PYOPENGL_PLATFORM": os.environ.get("PYOPENGL_PLATFORM", "osmesa")}
    scenes = {}
    for name, flag in (("points", []), ("no_points", ["--no-points"])):
        scenes[name] = work / f"scene_{name}"
        if not (scenes[name] / "transforms_test.json").is_file():
            timed(CLI + ["generate", "--out", str(scenes[name]), "--layout", "moving", "--resolution", str(res),
                         *flag], env)
    def flags(steps: int, reseed: int | None = None) -> list[str]:  # the defaults' values; a tenth with --quick
        scale = 10 if args.quick else 1
        out = ["--threads", str(args.threads), "--steps", str(steps // scale), "--meta-steps", str(60 // scale)]
        return out + ([] if reseed is None else ["--reseed-steps", str(reseed // scale)])

    load = os.getloadavg()
    rows = [row("scratch (restart)", scenes["no_points"], work / "scratch", flags(1800, 600), env),
            row("scratch, no restart", scenes["no_points"], work / "scratch_no_restart", flags(1800, 0), env),
            row("surface points", scenes["points"], work / "surface", flags(300), env)]
    result = {"resolution": res, "threads": args.threads, "quick": args.quick,
              "load_before": [round(x, 2) for x in load], "load_after": [round(x, 2) for x in os.getloadavg()],
              "rows": rows}
    surface = rows[-1]["ood_psnr"]
    result["scratch_minus_surface_db"] = {r["start"]: round(r["ood_psnr"] - surface, 2) for r in rows[:2]}
    print(f"{'start':22} {'OOD PSNR':>8} {'SSIM':>6} {'shadow':>7} {'lit':>6} {'lit-sh':>6} {'Gaussians':>10} "
          f"{'train s':>8} {'CPU s':>7} {'peak GB':>7} {'eval s':>6}")
    for r in rows:
        gap = (r["psnr_lit"] - r["psnr_shadow"]) if r["psnr_shadow"] is not None else float("nan")
        print(f"{r['start']:22} {r['ood_psnr']:8.2f} {r['ood_ssim']:6.3f} {r['psnr_shadow'] or 0:7.2f} "
              f"{r['psnr_lit'] or 0:6.2f} {gap:6.2f} {r['gaussians']:10d} {r['train']['wall_s']:8.1f} "
              f"{r['train']['cpu_s']:7.1f} {r['train']['peak_gb']:7.2f} {r['evaluate']['wall_s']:6.1f}")
    for name, d in result["scratch_minus_surface_db"].items():
        print(f"{name} - surface points: {d:+.2f} dB (target: within 1 dB)")
    print(f"load average before {result['load_before']}, after {result['load_after']}; {res} px, "
          f"{args.threads} thread(s)")
    text = json.dumps(result, indent=2)
    for path in [RESULTS / f"relight_starts{'_quick' if args.quick else ''}.json"] + ([args.out] if args.out else []):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
