"""The `metatune relight` subcommand: generate, train, evaluate, adapt, render, export; and the demo."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from metatune.errors import MetatuneError
from metatune.paths import existing_dir, existing_file, out_dir, out_file
from metatune.verb_args import (
    add_checkpoint,
    add_force,
    add_out,
    add_seed_device,
    add_threads,
    finite_float,
    nonnegative_int,
    positive_int,
)

if TYPE_CHECKING:  # torch is imported only when a verb runs (--help stays fast)
    import torch

VERBS = ("generate", "train", "evaluate", "adapt", "render", "export")


def _generate(args: argparse.Namespace) -> int:
    from relight.generate import generate_scene
    generate_scene(args.out, args.preset, resolution=args.resolution, seed=args.seed, layout_name=args.layout,
                   points=not args.no_points)
    print(f"wrote scene {args.out}")
    return 0


def _device(args: argparse.Namespace) -> torch.device:
    """--device as a torch.device (a CUDA device that is not here is an error before anything runs), and
    --threads applied. On CUDA the full renders go through gsplat (relight.rasterize says so if it is
    missing); the rest is device-agnostic."""
    from metatune.threads import apply_threads
    from metatune.verb_args import torch_device
    device = torch_device(args.device)
    apply_threads(args.threads)
    return device


def _run_folder(path: Path) -> Path:
    from metatune.run_folder import CHECKPOINT
    if path.is_file() and path.name != CHECKPOINT:  # the run's tuner.pt and stage1.pt live beside it
        raise MetatuneError(f"--checkpoint {path}: a relight run is a folder; give it (or its {CHECKPOINT})")
    return path.parent if path.is_file() else path


def _train(args: argparse.Namespace) -> int:
    from relight.training import TrainConfig, train
    device = _device(args)
    cfg = TrainConfig(method=args.method, resolution=args.resolution, fit_steps=args.steps,
                      meta_steps=args.meta_steps, seed=args.seed, reseed_steps=args.reseed_steps,
                      init_ply=str(args.init_ply.resolve()) if args.init_ply else None)
    summary = train(args.scene, args.out, cfg, force=args.force, device=device)
    print(json.dumps(summary, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from relight.evaluation import evaluate
    device = _device(args)
    res = evaluate(_run_folder(args.checkpoint), args.scene, args.out / "metrics.json",
                   args.out / "predictions" if args.save_images else None, device=device)
    for f in res["per_frame"]:
        print(f"{f['file_path']}: PSNR {f['psnr']:.2f} dB  SSIM {f['ssim']:.4f}")
    print(f"mean over {res['frames']} test frames: PSNR {res['psnr']:.2f} dB  SSIM {res['ssim']:.4f}")
    return 0


def _adapt(args: argparse.Namespace) -> int:
    from metatune.checkpoint import save as save_checkpoint
    from relight.evaluation import _write_json, adapt, prediction_paths
    from relight.scene import save_image
    device = _device(args)
    res = adapt(_run_folder(args.checkpoint), args.scene, args.light_index, args.views, args.steps, device=device)
    out: Path = args.out
    for pred, path in zip(res.predictions, prediction_paths(out, res.query)):  # all checked before writing
        save_image(path, pred)
    save_checkpoint(out / "light_params.pt", {"light": list(res.query[0].light.position), "params": list(res.params)},
                    "relight", "light_params")
    report = {"light_index": args.light_index, "views": args.views, "inner_losses": res.losses,
              "before": res.before, "after": res.after}
    _write_json(out / "adapt.json", report)
    print(f"query PSNR {res.before['psnr']:.2f} -> {res.after['psnr']:.2f} dB, "
          f"SSIM {res.before['ssim']:.4f} -> {res.after['ssim']:.4f} after adapting on {args.views} view(s)")
    return 0


def _render(args: argparse.Namespace) -> int:
    import torch

    from relight.light import Light
    from relight.scene import resized_size, save_image
    from relight.training import load_checkpoint, unpack_cameras
    device = _device(args)
    cfg, module, state = load_checkpoint(_run_folder(args.checkpoint), device=device)
    cams = [c.to(device) for c in unpack_cameras(state["cameras"])]
    if not 0 <= args.view < len(cams):
        raise MetatuneError(f"view {args.view} out of range: the run has {len(cams)} training cameras")
    light = Light(tuple(args.light), directional=args.directional)
    cam = cams[args.view]
    if args.resolution is not None:  # the longer side; the aspect ratio stays the training camera's
        cam = cam.resized(*resized_size(cam.width, cam.height, args.resolution))
    with torch.no_grad():
        if hasattr(module, "model"):
            module.model.check_light(light)
            img = module.model.render(cam, light, module())
        else:
            img = module.render(cam, light)
    save_image(args.out, img.clamp(0, 1))
    print(f"wrote {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    import torch

    from relight.ply import export_ply
    from relight.training import load_checkpoint, unpack_cameras
    cfg, module, state = load_checkpoint(_run_folder(args.checkpoint))
    if not hasattr(module, "model"):
        raise MetatuneError(f"a '{cfg.method}' run has no Phong model to export")
    model = module.model
    if args.light is None:
        if args.directional:
            raise MetatuneError("--directional says how to read --light X Y Z; give --light too")
        export_ply(model, args.out)
        print(f"wrote {args.out} ({len(model)} Gaussians, colour = diffuse albedo)")
        return 0
    from relight.bake import bake_sh, facing
    from relight.light import Light
    light = Light(tuple(args.light), directional=args.directional)
    model.check_light(light)
    t0 = time.perf_counter()
    cams = unpack_cameras(state["cameras"]) if "cameras" in state else []
    with torch.no_grad():  # the light-dependent parameters: the prior's start, as `relight render` uses them
        sh = bake_sh(model, light, module(), facing(model, cams))
    kind = "directional" if light.directional else "point"
    export_ply(model, args.out, sh, comments=["baked_light " + " ".join(f"{v:.9g}" for v in light.position)
                                              + f" {kind}"])
    print(f"wrote {args.out} ({len(model)} Gaussians, SH degree 3 baked under the {kind} light "
          f"{list(light.position)} in {time.perf_counter() - t0:.1f} s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `metatune relight <verb>`."""
    parser = sub.add_parser("relight", help="meta-learned Gaussian-Phong relighting (OLAT scenes)")
    verbs = parser.add_subparsers(dest="verb", required=True)
    scene_help = "scene folder (transforms_train.json / transforms_test.json and images)"
    p = verbs.add_parser("generate", help="render an OLAT scene (MuJoCo or PyTorch3D)")
    p.add_argument("--out", type=out_dir, required=True, help="scene folder to write")
    p.add_argument("--preset", choices=("glossy", "matte", "p3d", "bleed"), default="glossy",
                   help="glossy | matte (MuJoCo) | p3d | bleed (PyTorch3D; bleed: coloured walls, one bounce of "
                   "interreflection)")
    p.add_argument("--resolution", type=resolution, default=64)
    p.add_argument("--layout", choices=("olat", "moving"), default="olat",
                   help="olat: 16 training lights x 4 views; moving: one view per light (64 train, 8 test), as "
                   "MetaGS's and NRHints' captures")
    p.add_argument("--no-points", action="store_true", help="write no points3d.ply (training starts from random "
                   "points)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_generate)
    p = verbs.add_parser("train", help="train on the train split of a scene (resumes from RUN/checkpoint.pt)")
    p.add_argument("--scene", type=existing_dir, required=True, help=scene_help)
    add_out(p, None)
    p.add_argument("--steps", type=positive_int, default=None,
                   help="fitting steps, all methods (default: 300 from points3d.ply or --init-ply, 1800 from scratch)")
    p.add_argument("--reseed-steps", type=nonnegative_int, default=None,
                   help="from scratch: after --steps, start again from points sampled on the fitted surfaces and fit "
                        "this many steps more, as from a points3d.ply (default 600; 0: no restart)")
    p.add_argument("--meta-steps", type=nonnegative_int, default=60,
                   help="meta-learning steps (meta); joint and plain fit meta-steps x meta-batch (2) more steps")
    p.add_argument("--method", choices=("meta", "joint", "plain"), default="meta")
    p.add_argument("--resolution", type=resolution, default=None,
                   help="longer image side to train at, aspect ratio kept (default: the scene's own images)")
    p.add_argument("--init-ply", type=existing_file, default=None,
                   help="start from a 3D Gaussian splatting .ply (graphdeco's layout) instead of points3d.ply")
    add_seed_device(p)
    add_threads(p)
    add_force(p)
    p.set_defaults(func=_train)
    p = verbs.add_parser("evaluate", help="PSNR/SSIM on the test split (unseen lights)")
    add_checkpoint(p, required=True, what="trained model")
    p.add_argument("--scene", type=existing_dir, required=True, help=scene_help)
    add_out(p, None)
    p.add_argument("--save-images", action="store_true", help="also save predictions under OUT/predictions/")
    add_seed_device(p)
    add_threads(p)
    p.set_defaults(func=_evaluate)
    p = verbs.add_parser("adapt", help="few-shot adaptation to one test light from k of its images")
    add_checkpoint(p, required=True, what="trained model")
    p.add_argument("--scene", type=existing_dir, required=True, help=scene_help)
    p.add_argument("--light-index", type=nonnegative_int, default=0)
    p.add_argument("--views", type=positive_int, default=1)
    p.add_argument("--steps", type=nonnegative_int, default=None, help="adaptation steps (default: the training's)")
    add_out(p, None)
    add_seed_device(p)
    add_threads(p)
    p.set_defaults(func=_adapt)
    p = verbs.add_parser("render", help="render a training camera under a new light (one image: --out FILE.png)")
    add_checkpoint(p, required=True, what="trained model")
    p.add_argument("--light", type=finite_float, nargs=3, required=True, metavar=("X", "Y", "Z"))
    p.add_argument("--directional", action="store_true", help="light from direction X Y Z instead of a point")
    p.add_argument("--view", type=nonnegative_int, default=0)
    p.add_argument("--resolution", type=resolution, default=None, help="longer image side (default: the training's)")
    p.add_argument("--out", type=png_file, required=True, help="image file to write (.png)")
    add_seed_device(p)
    add_threads(p)
    p.set_defaults(func=_render)
    p = verbs.add_parser("export", help="write the Gaussians as a 3DGS .ply with Phong attributes (--out FILE.ply); "
                         "--light bakes the relit look into the SH colours any 3DGS viewer shows")
    add_checkpoint(p, required=True, what="trained model")
    p.add_argument("--out", type=out_file, required=True, help=".ply file to write")
    p.add_argument("--light", type=finite_float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="bake the appearance under this light into f_dc/f_rest (SH degree 3, fitted over view "
                   "directions); without it the colour is the diffuse albedo")
    p.add_argument("--directional", action="store_true", help="light from direction X Y Z instead of a point")
    p.set_defaults(func=_export)


def resolution(text: str) -> int:
    """Image size in pixels: 8 to 4096 (larger needs more memory than a CPU run has)."""
    value = nonnegative_int(text)
    if not 8 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"must be in [8, 4096] pixels, got {value}")
    return value


def png_file(text: str) -> Path:
    path = out_file(text)
    if path.suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"{path}: renders are written as PNG; give a .png name")
    return path


def demo(out_dir: Path, device: str = "cpu") -> dict:
    """Generate a small glossy scene, train the meta-learned model and the plain baseline, evaluate, write images."""
    from relight.demo import run_demo
    t0 = time.perf_counter()
    result = run_demo(Path(out_dir), device=device)
    result["relight_seconds"] = round(time.perf_counter() - t0, 1)
    return result
