"""The `metatune robot` subcommand: train | adapt | evaluate controllers, and the robot part of the demo."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from metatune.errors import MetatuneError
from metatune.paths import existing_file
from metatune.verb_args import (
    add_checkpoint,
    add_force,
    add_out,
    add_seed_device,
    nonnegative_int,
    positive_float,
    positive_int,
)

VERBS = ("train", "adapt", "evaluate")
TASKS = ("cartpole", "pendulum", "quadrotor")  # envs.problems.PROBLEMS, named here so --help imports no torch


def _parse_params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise MetatuneError(f"--param takes key=value, got {item!r}")
        try:
            parts = [float(v) for v in value.split(",")]
        except ValueError as err:
            raise MetatuneError(f"--param {key}: {value!r} is not a number (or comma-separated numbers)") from err
        out[key] = tuple(parts) if len(parts) > 1 else parts[0]
    return out


def _mjcf_spec(args: argparse.Namespace) -> dict[str, Any] | None:
    """The user's MJCF task (envs.mjcf_problem.MjcfSpec as a dict) from the --mjcf options, or None."""
    if args.mjcf is None:
        for flag in ("reference", "actuators", "setpoint", "randomise"):
            if getattr(args, flag):
                raise MetatuneError(f"--{flag} needs --mjcf (the built-in tasks have their own references)")
        if args.grad != "auto":
            raise MetatuneError("--grad needs --mjcf (the built-in tasks' physics is torch)")
        return None
    from envs.mjcf_problem import MjcfSpec, parse_ranges, parse_setpoint

    spec = MjcfSpec(mjcf=str(Path(args.mjcf).resolve()), controller=args.controller,
                    actuators=[a for a in (args.actuators or "").split(",") if a],
                    reference=str(Path(args.reference).resolve()) if args.reference else None,
                    setpoint=parse_setpoint(args.setpoint), grad=args.grad)
    if args.randomise:
        spec.randomise = parse_ranges(args.randomise)
    return asdict(spec)


def _add_mjcf(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("a user's MJCF model (instead of --task)")
    g.add_argument("--mjcf", type=existing_file, default=None, help="the robot's MJCF file")
    g.add_argument("--controller", choices=("pd", "linear"), default="pd",
                   help="PD on the actuated joints, or linear state feedback on top of the hand-set PD")
    g.add_argument("--actuators", default=None, help="comma-separated actuators to control (default: every joint motor)")
    g.add_argument("--reference", type=existing_file, default=None,
                   help="CSV of joint targets over time: a header of [time,] joint names, one row per sample")
    g.add_argument("--setpoint", action="append", default=[], help="joint=target (default: hold the start pose)")
    g.add_argument("--randomise", action="append", default=[],
                   help="name=lo:hi factor range of mass, inertia, friction, damping or gear (default mass=0.7:1.3)")
    g.add_argument("--grad", choices=("auto", "forward", "adjoint"), default="auto",
                   help="gradients through MuJoCo: the closed loop in C with forward sensitivities (cheaper for few "
                        "gains), the adjoint (for many), or auto: forward while gains <= 2 nv + na + nu")


def _robots(args: argparse.Namespace, problem) -> list:
    from envs.tasks import RobotTask

    tasks = problem.sample_tasks(args.robots, seed=args.seed)
    if args.param and args.mjcf is not None:
        raise MetatuneError("--param overrides a built-in robot's parameters; with --mjcf use --randomise")
    if args.param:
        from envs.catalog import make

        params = _parse_params(args.param)
        make(problem.distribution.robot, **params)  # names the unknown parameter, if any
        tasks = [RobotTask(t.robot, {**t.params, **params}, t.gust, t.gust_hz, t.phase, t.seed) for t in tasks]
    return tasks


def _train(args: argparse.Namespace) -> int:
    from envs.meta_tuning import RobotMetaConfig
    from envs.problems import PROBLEMS
    from envs.tuning_problem import FD_HESSIAN, TuningProblem
    from envs.workflows import train
    from metatune.verb_args import torch_device

    device = torch_device(args.device)
    mjcf = _mjcf_spec(args)
    task = "mjcf" if mjcf is not None else args.task
    defaults = PROBLEMS.get(task, TuningProblem)
    cfg = RobotMetaConfig(method=args.method, init=args.init, inner_steps=args.inner_steps, inner_lr=args.inner_lr,
                          outer_lr=args.outer_lr or defaults.outer_lr, robots_per_task=args.robots_per_task,
                          seed=args.seed, fd_hessian={None: defaults.fd_hessian, "first-order": None,
                                                      "second-order": FD_HESSIAN}[args.meta_gradient])
    if cfg.method not in ("metasgd", "fomaml"):
        raise MetatuneError(f"--method {cfg.method!r}: adjoint rollouts support first-order 'metasgd' or 'fomaml'")
    print(json.dumps(train(task, args.out, args.steps, cfg, args.horizon, args.dt, force=args.force, mjcf=mjcf,
                           device=device, validation_robots=args.validation_robots), indent=2))
    return 0


def _adapt_or_evaluate(args: argparse.Namespace) -> int:
    from envs.problems import make_problem
    from envs.workflows import adapt, evaluate, load_tuner
    from metatune.verb_args import torch_device

    device = torch_device(args.device)
    mjcf = _mjcf_spec(args)
    if args.checkpoint is not None:
        if mjcf is not None:
            raise MetatuneError("--checkpoint's run folder names its MJCF model; leave out --mjcf")
        problem, tuner = load_tuner(args.checkpoint, device)
        if args.task is not None and args.task != problem.name:
            raise MetatuneError(f"checkpoint {args.checkpoint} was trained for {problem.name!r}, not {args.task!r}")
    else:
        if args.task is None and mjcf is None:
            raise MetatuneError("give --task or --mjcf (and --checkpoint for the meta-tuned start)")
        problem, tuner = make_problem(args.task or "mjcf", args.horizon, None, mjcf, device), None
    tasks = _robots(args, problem)
    if args.verb == "adapt":
        result = adapt(problem, tuner, tasks, args.steps, args.out, args.backend, args.physics)
        keys = [k for k in ("untuned", "meta-tuned") if k in result]
        print(json.dumps({k: {"rmse_start": result[k]["rmse_start"], "rmse_adapted": result[k]["rmse_adapted"]}
                          for k in keys}, indent=2))
    else:
        result = evaluate(problem, tuner, tasks, args.steps, args.backend, args.out, args.physics)
        print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.out}/tracking.png, adaptation.png, metrics.json")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("robot", help="meta-tune robot controllers (quadrotor, pendulum, cart-pole)")
    verbs = parser.add_subparsers(dest="verb", required=True)
    tr = verbs.add_parser("train", help="meta-train a controller on robots sampled from a task distribution")
    tr.add_argument("--task", choices=TASKS, default="quadrotor")
    add_out(tr, "runs/robot/train")
    tr.add_argument("--steps", type=positive_int, default=20, help="meta-training steps")
    tr.add_argument("--method", default="metasgd", help="metasgd (learned step sizes) or fomaml")
    tr.add_argument("--init", choices=("shared", "neural"), default="shared",
                    help="one meta-learned gain set, or a neural policy from task features to gains")
    tr.add_argument("--inner-steps", type=nonnegative_int, default=2)
    tr.add_argument("--inner-lr", type=positive_float, default=0.3)
    tr.add_argument("--outer-lr", type=positive_float, default=None,
                    help="meta-training step (default: the task's, 0.05; cartpole 0.02)")
    tr.add_argument("--robots-per-task", type=positive_int, default=4)
    tr.add_argument("--meta-gradient", choices=("first-order", "second-order"), default=None,
                    help="second-order: Hessian-vector products by finite differences of the adjoint gradient "
                         "(default: the task's; cartpole second-order, the others first-order)")
    tr.add_argument("--validation-robots", type=nonnegative_int, default=8,
                    help="held-out robots scored before and after training (metrics.json 'validation'; 0: none)")
    tr.add_argument("--horizon", type=positive_int, default=None)
    tr.add_argument("--dt", type=positive_float, default=None)
    _add_mjcf(tr)
    add_seed_device(tr)
    add_force(tr)
    tr.set_defaults(func=_train)
    for verb, text in (("adapt", "adapt to unseen robots in a few adjoint steps; plot and JSON"),
                       ("evaluate", "tracking RMSE over unseen robots, untuned vs meta-tuned")):
        p = verbs.add_parser(verb, help=text)
        p.add_argument("--task", choices=TASKS, default=None)
        add_checkpoint(p, required=False)
        p.add_argument("--robots", type=positive_int, default=1 if verb == "adapt" else 8)
        p.add_argument("--param", action="append", default=[], help="override a physical parameter, key=value")
        p.add_argument("--steps", type=nonnegative_int, default=3, help="adaptation steps")
        p.add_argument("--backend", choices=("torch", "mujoco"), default="torch",
                       help="physics that the reported trajectories are simulated with")
        p.add_argument("--physics", choices=("torch", "mujoco"), default="torch",
                       help="physics the adaptation gradients go through (mujoco: mj_step + transitionFD)")
        p.add_argument("--horizon", type=positive_int, default=None, help="steps (without --checkpoint)")
        _add_mjcf(p)
        add_out(p, f"runs/robot/{verb}")
        add_seed_device(p, seed=12345)
        p.set_defaults(func=_adapt_or_evaluate)


def demo(out_dir: Path, device: str = "cpu") -> dict:
    from envs.demo import run_demo

    return run_demo(Path(out_dir), device=device)
