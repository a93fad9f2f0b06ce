"""The `metatune hmr` subcommand: train | adapt | evaluate | infer, and the domain's demo."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from metatune.paths import existing_file
from metatune.verb_args import add_checkpoint, add_force, add_out, add_seed_device, float_in, positive_int

if TYPE_CHECKING:  # torch is imported only when a verb runs (--help stays fast)
    import torch

# The frames a mesh can be written in (hmr.infer.FRAMES; named here so --help imports no torch)
FRAMES = ("camera", "y-up")
# infer reads an image, detects keypoints and writes meshes and overlays on the CPU, and does not move its fit
INFER_CPU_ONLY = ("hmr infer runs on the CPU (its image pipeline: keypoint detection, fit, meshes and overlay, "
                  "is not wired to a device); hmr adapt fits given keypoints on the GPU")


def _device(args: argparse.Namespace, cpu_only: str | None = None) -> torch.device:
    """--device as a torch.device; a CUDA device that is not here is an error before anything runs."""
    from metatune.verb_args import torch_device
    return torch_device(args.device, cpu_only)


def _train(args: argparse.Namespace) -> int:
    from hmr.meta_fit import MetaFitConfig, train_run

    device = _device(args)
    cfg = MetaFitConfig(pretrain_steps=args.pretrain_steps, meta_steps=args.steps, inner_steps=args.inner_steps,
                        people_per_task=args.people, train_pool=args.train_pool, seed=args.seed,
                        other_layouts=args.other_layouts,
                        pretrain_checkpoint_every=args.pretrain_checkpoint_every,
                        checkpoint_every=args.checkpoint_every)
    metrics, trained = train_run(args.out, cfg, args.model, args.calibration_people, force=args.force, device=device)
    if not trained:
        print(f"{args.out}: this run is already complete ({metrics.get('meta_steps', cfg.meta_steps)} meta-training "
              "steps, calibrated); nothing was trained (--force trains it again)")
    print(json.dumps(metrics, indent=2))
    return 0


def _adapt(args: argparse.Namespace) -> int:
    import torch

    from hmr.body_model import BodyModel
    from hmr.infer import warn
    from hmr.keypoints import read_keypoints, select_people
    from hmr.people_fit import fit_people
    from hmr.synthetic import fit_problem
    from metatune.atomic import write_json

    device = _device(args)
    kp, kept, notes = select_people(read_keypoints(args.keypoints), args.width, args.height)
    for note in notes:
        warn(note)
    body = BodyModel.load(args.model).to(device)
    n = len(kept)
    prob = fit_problem(body, kp.xy.to(device), kp.conf.to(device), kp.joint_map,
                       torch.full((n,), float(args.width), device=device),
                       torch.full((n,), float(args.height), device=device))
    fit = fit_people(body, prob, args.checkpoint, args.baseline, steps=args.steps)
    result = {"method": fit.method, "people": [
        {"index_in_keypoints": kept[i], "params": fit.params[i].tolist(), "param_std": fit.param_std[i].tolist(),
         "joint_std_mm": fit.joint_std_mm[i].tolist(), "fit_loss": float(fit.loss[i])} for i in range(n)]}
    write_json(args.out / "result.json", result)
    print(f"fitted {n} people ({fit.method}) -> {args.out / 'result.json'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from hmr.evaluation import evaluate_methods, write_report

    device = _device(args)
    report = evaluate_methods(args.checkpoint, people=args.people, model=args.model, split=args.split, device=device)
    write_report(report, Path(args.out))
    print(json.dumps(report["summary"], indent=2))
    return 0


EXIT_POOR_FIT = 3   # --strict: the outputs are written, but a fit misses its keypoints


def _infer(args: argparse.Namespace) -> int:
    from hmr.infer import infer, warn

    _device(args, INFER_CPU_ONLY)
    _one_thread()
    result = infer(args.image, args.keypoints, args.out, model=args.model, checkpoint=args.checkpoint,
                   baseline=args.baseline, steps=args.steps, focal=args.focal, fov=args.fov, frame=args.frame,
                   boxes=args.boxes, max_people=args.max_people)
    poor = [i for i, p in enumerate(result["people"]) if p["quality"]["poor"]]
    for i in poor:
        q = result["people"][i]["quality"]
        warn(f"person {i} fits poorly: reprojection median {q['median_px']:.1f} px, max {q['max_px']:.1f} px "
             f"({q['worst_keypoint']}) for a {q['height_px']:.0f} px tall person (poor beyond 3% / 10%)")
    print(f"fitted {len(result['people'])} people ({result['method']}) -> {args.out}")
    return EXIT_POOR_FIT if poor and args.strict else 0


def _one_thread() -> None:
    """A few people fit faster on one thread: each op is small, and on the shared 2 cores two threads made
    `infer` 2-3x slower (messi5.jpg: fit 5.4 s on 2 threads, 1.8 s on one)."""
    import torch

    torch.set_num_threads(1)


def _boxes(text: str) -> list[tuple[float, float, float, float]]:
    """x0,y0,x1,y1[;x0,y0,x1,y1...] in pixels."""
    boxes = []
    for part in text.split(";"):
        try:
            box = tuple(float(v) for v in part.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not x0,y0,x1,y1") from None
        if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
            raise argparse.ArgumentTypeError(f"{part!r} is not a box x0,y0,x1,y1 with x1 > x0 and y1 > y0")
        boxes.append(box)
    return boxes


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("hmr", help="human mesh recovery: meta-learned fitting of SMPL bodies to 2D keypoints")
    verbs = parser.add_subparsers(dest="verb", required=True)
    model_help = "SMPL .pkl/.npz body model (default: the generated model)"
    kp_help = "OpenPose BODY_25 / COCO-18, COCO-17 or MediaPipe-33 JSON (pixels or normalised)"
    steps_help = "adaptation steps of the meta-learned fit (default: the checkpoint's)"

    p = verbs.add_parser("train", help="meta-train the keypoint regressor, step sizes and prior variances")
    add_out(p, "runs/hmr/train")
    p.add_argument("--model", type=existing_file, default=None, help=model_help)
    p.add_argument("--steps", "--meta-steps", dest="steps", type=positive_int, default=150, help="meta-training steps")
    p.add_argument("--pretrain-steps", type=positive_int, default=3000, help="keypoint-regressor steps before them")
    p.add_argument("--train-pool", type=positive_int, default=65536, help="synthetic training people")
    p.add_argument("--inner-steps", type=positive_int, default=10)
    p.add_argument("--people", type=positive_int, default=32, help="people per meta-training task")
    p.add_argument("--calibration-people", type=positive_int, default=128)
    p.add_argument("--other-layouts", type=float_in(0.0, 1.0), default=0.0, metavar="F",
                   help="fraction of training people seen with COCO-17 / MediaPipe-33's keypoints (default 0)")
    p.add_argument("--pretrain-checkpoint-every", type=positive_int, default=100, metavar="N",
                   help="write a resumable checkpoint every N pretraining steps")
    p.add_argument("--checkpoint-every", type=positive_int, default=5, metavar="N",
                   help="... and every N meta-training steps (the same command again resumes from the last)")
    add_seed_device(p)
    add_force(p)
    p.set_defaults(func=_train)

    p = verbs.add_parser("adapt", help="fit the people of a keypoint JSON (no image needed): OUT/result.json")
    p.add_argument("--keypoints", type=existing_file, required=True, help=kp_help)
    p.add_argument("--width", type=positive_int, required=True)
    p.add_argument("--height", type=positive_int, required=True)
    add_checkpoint(p, required=False, what="meta-learned fit (default: the one shipped in hmr/trained)")
    p.add_argument("--baseline", action="store_true", help="fit SMPLify-style instead of the meta-learned fit")
    p.add_argument("--model", type=existing_file, default=None, help=model_help)
    p.add_argument("--steps", type=positive_int, default=None, help=steps_help)
    add_out(p, "runs/hmr/adapt")
    add_seed_device(p)
    p.set_defaults(func=_adapt)

    p = verbs.add_parser("evaluate", help="meta-learned fit vs SMPLify-style baseline on the held-out split")
    add_checkpoint(p, required=True, what="meta-learned fit")
    p.add_argument("--people", type=positive_int, default=64)
    p.add_argument("--split", choices=("heldout", "hard"), default="heldout",
                   help="held-out people, or the hard split (every joint angle up to 0.4 rad further)")
    p.add_argument("--model", type=existing_file, default=None, help=model_help)
    add_out(p, "runs/hmr/evaluate")
    add_seed_device(p)
    p.set_defaults(func=_evaluate)

    p = verbs.add_parser("infer", help="fit every person in a photo: meshes, overlay, keypoints and result.json")
    p.add_argument("image", type=existing_file)
    p.add_argument("--keypoints", type=existing_file, default=None,
                   help=kp_help + " (default: the built-in BlazePose detector)")
    p.add_argument("--boxes", type=_boxes, default=None, metavar="X0,Y0,X1,Y1[;...]",
                   help="detect one person in each box (pixels) instead of searching the whole image")
    p.add_argument("--max-people", type=positive_int, default=4, help="people the detector looks for (default 4)")
    p.add_argument("--model", type=existing_file, default=None, help=model_help)
    add_checkpoint(p, required=False, what="meta-learned fit (default: the one shipped in hmr/trained)")
    p.add_argument("--baseline", action="store_true", help="fit SMPLify-style instead of the meta-learned fit")
    p.add_argument("--steps", type=positive_int, default=None, help=steps_help)
    cam = p.add_mutually_exclusive_group()
    cam.add_argument("--focal", type=float_in(1.0, 1e6), default=None, help="focal length in pixels")
    cam.add_argument("--fov", type=float_in(1.0, 179.0), default=None,
                     help="field of view across the longer side, degrees (default: EXIF, else 1.2 x the side)")
    p.add_argument("--frame", choices=sorted(FRAMES), default="camera",
                   help="frame of the meshes and joints3d: camera (OpenCV: y down, z forward) or y-up (viewers)")
    p.add_argument("--strict", action="store_true",
                   help=f"exit {EXIT_POOR_FIT} when a fit is poor (reprojection median > 3%% or max > 10%% of the "
                        "person's height); the outputs are still written")
    add_out(p, None)
    add_seed_device(p)
    p.set_defaults(func=_infer)


def demo(out_dir: Path, device: str = "cpu") -> dict:
    from hmr.demo import run_demo

    return run_demo(Path(out_dir), device=device)
