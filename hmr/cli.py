"""The `metatune hmr` subcommand: train | adapt | evaluate | infer, and the domain's demo."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _train(args: argparse.Namespace) -> int:
    from hmr.body_model import BodyModel
    from hmr.meta_fit import MetaFitConfig, MetaFitter
    from hmr.synthetic import make_split
    from hmr.training_plot import plot_training

    cfg = MetaFitConfig(pretrain_steps=args.pretrain_steps, meta_steps=args.meta_steps,
                        inner_steps=args.inner_steps, people_per_task=args.people, train_pool=args.train_pool)
    body = BodyModel.load(args.model)
    out = Path(args.out)
    fitter = MetaFitter(body, cfg, log_path=out.with_name(out.name + ".log.jsonl"))
    pre = fitter.pretrain()
    hist = fitter.train()
    calib = fitter.calibrate(make_split(body, "train", args.calibration_people))
    fitter.save(out)
    plot_training(pre, hist, out.with_name(out.name + ".png"))
    print(json.dumps({"checkpoint": str(out), "pretrain_final": pre[-1] if pre else None,
                      "meta_final": hist[-1] if hist else None, "calibration": calib}, indent=2))
    return 0


def _adapt(args: argparse.Namespace) -> int:
    import torch

    from hmr.body_model import BodyModel
    from hmr.infer import fit_people
    from hmr.keypoints import read_keypoints, select_people
    from hmr.synthetic import fit_problem

    kp, kept = select_people(read_keypoints(args.keypoints), args.width, args.height)
    body = BodyModel.load(args.model)
    n = len(kept)
    prob = fit_problem(body, kp.xy, kp.conf, kp.joint_map, torch.full((n,), float(args.width)),
                       torch.full((n,), float(args.height)))
    fit = fit_people(body, prob, kp.fmt, args.checkpoint)
    result = {"method": fit.method, "people": [
        {"index_in_keypoints": kept[i], "params": fit.params[i].tolist(), "param_std": fit.param_std[i].tolist(),
         "joint_std_mm": fit.joint_std_mm[i].tolist(), "fit_loss": float(fit.loss[i])} for i in range(n)]}
    _write_json(Path(args.out), result)
    print(f"fitted {n} people ({fit.method}) -> {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from hmr.evaluation import evaluate_methods, write_report

    report = evaluate_methods(args.checkpoint, people=args.people, model=args.model)
    write_report(report, Path(args.out))
    print(json.dumps(report["summary"], indent=2))
    return 0


def _infer(args: argparse.Namespace) -> int:
    from hmr.infer import infer

    result = infer(args.image, args.keypoints, args.out, model=args.model, checkpoint=args.checkpoint)
    print(f"fitted {len(result['people'])} people ({result['method']}) -> {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("hmr", help="human mesh recovery: meta-learned fitting of SMPL bodies to 2D keypoints")
    verbs = parser.add_subparsers(dest="verb", required=True)
    model_help = "SMPL .pkl/.npz body model (default: the generated model)"

    p = verbs.add_parser("train", help="meta-train the keypoint regressor, step sizes and prior variances")
    p.add_argument("--out", type=Path, default=Path("runs/hmr/meta.pt"), help="checkpoint path")
    p.add_argument("--model", type=Path, default=None, help=model_help)
    p.add_argument("--pretrain-steps", type=_positive(int), default=3000)
    p.add_argument("--meta-steps", type=_positive(int), default=150)
    p.add_argument("--train-pool", type=_positive(int), default=65536, help="synthetic training people")
    p.add_argument("--inner-steps", type=_positive(int), default=10)
    p.add_argument("--people", type=_positive(int), default=32, help="people per meta-training task")
    p.add_argument("--calibration-people", type=_positive(int), default=128)
    p.set_defaults(func=_train)

    p = verbs.add_parser("adapt", help="fit the people of a keypoint JSON (no image needed)")
    p.add_argument("--keypoints", type=Path, required=True, help="OpenPose BODY_25 or COCO-17 JSON")
    p.add_argument("--width", type=_positive(int), required=True)
    p.add_argument("--height", type=_positive(int), required=True)
    p.add_argument("--checkpoint", type=Path, default=None, help="meta-learned fit (default: SMPLify-style)")
    p.add_argument("--model", type=Path, default=None, help=model_help)
    p.add_argument("--out", type=Path, default=Path("runs/hmr/adapt.json"))
    p.set_defaults(func=_adapt)

    p = verbs.add_parser("evaluate", help="meta-learned fit vs SMPLify-style baseline on the held-out split")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--people", type=_positive(int), default=64)
    p.add_argument("--model", type=Path, default=None, help=model_help)
    p.add_argument("--out", type=Path, default=Path("runs/hmr/evaluate"))
    p.set_defaults(func=_evaluate)

    p = verbs.add_parser("infer", help="fit every person in an image: meshes, overlay and result.json")
    p.add_argument("image", type=Path)
    p.add_argument("--keypoints", type=Path, required=True, help="OpenPose BODY_25 or COCO-17 JSON")
    p.add_argument("--model", type=Path, default=None, help=model_help)
    p.add_argument("--checkpoint", type=Path, default=None, help="meta-learned fit (default: SMPLify-style)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_infer)


def demo(out_dir: Path) -> dict:
    from hmr.demo import run_demo

    return run_demo(Path(out_dir))
