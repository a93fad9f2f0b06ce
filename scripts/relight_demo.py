"""Generate a scene, train the meta-learned relighting model, and write a relit turntable video plus a
side-by-side image (ground truth | prediction | error) of the unseen test lights.

    .venv/bin/python scripts/relight_demo.py --out runs/relight_demo [--preset glossy|matte|p3d] [--steps 300]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metatune import MetatuneError  # noqa: E402
from relight.evaluation import evaluate  # noqa: E402
from relight.figures import comparison, orbit_cameras, orbit_lights, write_video  # noqa: E402
from relight.generate import generate_scene  # noqa: E402
from relight.scene import load_scene, save_image  # noqa: E402
from relight.training import TrainConfig, load_checkpoint, render, train, unpack_cameras  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/relight_demo"))
    ap.add_argument("--preset", default="glossy")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--meta-steps", type=int, default=60)
    ap.add_argument("--frames", type=int, default=48, help="turntable frames")
    args = ap.parse_args(argv)
    try:
        out: Path = args.out
        scene = out / "scene"
        if not (scene / "transforms_test.json").is_file():
            generate_scene(scene, args.preset, resolution=args.resolution)
        run = out / "run"
        train(scene, run, TrainConfig(resolution=args.resolution, fit_steps=args.steps, meta_steps=args.meta_steps))
        metrics = evaluate(run, scene, out / "test_metrics.json", out / "test_pred")
        _, module, state = load_checkpoint(run)
        test = load_scene(scene, "test", args.resolution)
        with torch.no_grad():
            rows = [(f.image, render(module, f)) for f in test.frames]
        save_image(out / "side_by_side.png", comparison(rows))
        cams = orbit_cameras(unpack_cameras(state["cameras"])[0], args.frames)
        lights = orbit_lights(args.frames)
        frames = []
        with torch.no_grad():
            for cam, light in tqdm(list(zip(cams, lights)), desc="turntable"):
                img = module.model.render(cam, light, module()).clamp(0, 1).numpy()
                frames.append(img.repeat(4, 0).repeat(4, 1))
        write_video(out / "turntable.mp4", frames)
        save_image(out / "turntable_strip.png", np.concatenate(frames[:: max(1, args.frames // 8)], 1))
        print(json.dumps({"ood_psnr": metrics["psnr"], "ood_ssim": metrics["ssim"], "out": str(out)}, indent=2))
        return 0
    except MetatuneError as err:
        print(f"relight_demo: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
