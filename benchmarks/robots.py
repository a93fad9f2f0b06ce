"""Robot benchmarks: gradient cost of controller tuning, few-step adaptation, and MuJoCo flight under gusts.

1. Gradient of a quadrotor figure-eight tracking cost w.r.t. its controller gains: wall time and graph
   memory (bytes saved for backward) for adjoint, autograd, forward sensitivity and MuJoCo central
   finite differences, over horizons and gain counts (4 gains per schedule knot).
2. Adaptation: on unseen robots, adjoint steps needed to come within 5% of each robot's own optimum
   (found by a long Adam run), meta-tuned (Meta-SGD) start versus untuned hand-set gains.
3. Figure-eight under wind gusts simulated in MuJoCo: tracking RMSE of meta-tuned vs hand-set gains.

    .venv/bin/python benchmarks/robots.py --quick [--out results.json]
Prints tables and writes JSON to benchmarks/results/robots.json (and --out). A measurement whose
predicted time is over the budget is extrapolated (linear in horizon / in finite-difference count) and
marked "~" in the table and `*_estimated: true` in the JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from envs.meta_tuning import RobotMetaConfig, gradient_descent, learned_step_sizes, make_tuner
from envs.quadrotor_tracking import QuadrotorTracking
from envs.workflows import evaluate

MODES = ("adjoint", "autograd", "forward")


class SavedBytes:
    """Counts the bytes autograd saves for backward (the graph memory of a gradient computation)."""

    def __init__(self):
        self.total = 0

    def pack(self, t: torch.Tensor):
        self.total += t.numel() * t.element_size()
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def mujoco_cost(problem: QuadrotorTracking, params: torch.Tensor, tasks) -> float:
    """The tracking cost of the closed loop flown in MuJoCo (same cost as the torch rollouts)."""
    traj = problem.simulate_mujoco(params, tasks)
    _, _, _, cost = problem.closed_loop(tasks)
    states = traj.states[:-1]
    return float(sum(cost(states[t], None, t) for t in range(problem.horizon)).sum() / problem.horizon)


def gradient_benchmark(horizons: list[int], knots: list[int], fd_budget_s: float) -> list[dict]:
    rows = []
    seen: dict[tuple[str, int], tuple[int, float]] = {}  # (mode, gains) -> (horizon, seconds) measured
    for horizon in horizons:
        for k in knots:
            problem = QuadrotorTracking(horizon=horizon, dt=0.01, knots=k, observer=False)
            tasks = problem.sample_tasks(1, seed=3)
            params = problem.batch_params(1)
            row = {"horizon": horizon, "gains": params.numel()}
            grads = {}
            for mode in tqdm(MODES, desc=f"gradients H={horizon} gains={params.numel()}", leave=False):
                prev = seen.get((mode, params.numel()))
                if mode == "forward" and horizon > 1000 and prev is not None and prev[1] * horizon / prev[0] > fd_budget_s:
                    # forward sensitivity past 1,000 steps: linear in the horizon, extrapolate the last measurement
                    row[f"{mode}_s"] = prev[1] * horizon / prev[0]
                    row[f"{mode}_saved_MB"] = float("nan")
                    row[f"{mode}_estimated"] = True
                    continue
                leaf = params.clone().requires_grad_()
                t0 = time.perf_counter()
                with SavedBytes() as saved:  # the mean tracking cost itself (what mujoco_cost measures)
                    loss = problem.robot_losses(leaf, tasks, grad=mode).sum()
                (grads[mode],) = torch.autograd.grad(loss, leaf)
                row[f"{mode}_s"] = time.perf_counter() - t0
                row[f"{mode}_saved_MB"] = saved.total / 2 ** 20
                row[f"{mode}_estimated"] = False
                seen[(mode, params.numel())] = (horizon, row[f"{mode}_s"])
            t0 = time.perf_counter()
            base = mujoco_cost(problem, params, tasks)
            one = time.perf_counter() - t0
            n = params.numel()
            if 2 * n * one <= fd_budget_s and "adjoint" in grads:
                h, fd = 1e-5, torch.zeros(n, dtype=params.dtype)
                t0 = time.perf_counter()
                for i in range(n):
                    e = torch.zeros(n, dtype=params.dtype)
                    e[i] = h
                    fd[i] = (mujoco_cost(problem, params + e.reshape(params.shape), tasks)
                             - mujoco_cost(problem, params - e.reshape(params.shape), tasks)) / (2 * h)
                row["mujoco_fd_s"] = time.perf_counter() - t0
                row["mujoco_fd_estimated"] = False
                row["mujoco_fd_vs_adjoint_max_rel_err"] = float(
                    (fd - grads["adjoint"].reshape(-1)).abs().max() / grads["adjoint"].abs().max())
            else:  # 2n rollouts of `one` seconds each, over the budget: extrapolate, and say so
                row["mujoco_fd_s"] = 2 * n * one
                row["mujoco_fd_estimated"] = True
            row["mujoco_cost_minus_torch_cost"] = base - float(problem.robot_losses(params, tasks, grad="autograd").sum())
            if "adjoint" in grads and "forward" in grads:
                row["adjoint_vs_forward_max_abs_diff"] = float((grads["adjoint"] - grads["forward"]).abs().max())
            row["speedup_adjoint_vs_forward"] = row["forward_s"] / row["adjoint_s"]
            row["speedup_adjoint_vs_autograd"] = row["autograd_s"] / row["adjoint_s"]
            row["speedup_adjoint_vs_mujoco_fd"] = row["mujoco_fd_s"] / row["adjoint_s"]
            rows.append(row)
            print_row(row)
    return rows


def print_row(r: dict) -> None:
    est = "~" if r["mujoco_fd_estimated"] else " "
    fwd = "~" if r["forward_estimated"] else " "
    print(f"H={r['horizon']:5d} gains={r['gains']:3d} | time s: adjoint {r['adjoint_s']:7.2f} autograd "
          f"{r['autograd_s']:7.2f} forward {fwd}{r['forward_s']:7.2f} mujoco-FD {est}{r['mujoco_fd_s']:8.1f} | "
          f"saved MB: adjoint {r['adjoint_saved_MB']:7.2f} autograd {r['autograd_saved_MB']:8.2f} forward "
          f"{r['forward_saved_MB']:8.2f} | fwd/adj {r['speedup_adjoint_vs_forward']:5.2f}x", flush=True)


def steps_to_within(losses: torch.Tensor, optimum: torch.Tensor, tol: float = 0.05) -> list[int | None]:
    """First step at which each robot's cost is within tol of its optimum (None: never)."""
    ok = losses <= (1 + tol) * optimum
    return [int(ok[:, b].nonzero()[0]) if ok[:, b].any() else None for b in range(losses.shape[1])]


def adaptation_benchmark(problem: QuadrotorTracking, tuner, robots: int, opt_steps: int, max_steps: int) -> dict:
    tasks = problem.sample_tasks(robots, seed=2024)  # never seen in meta-training
    # each robot's own optimum: a long Adam run on its own cost from the hand-set gains
    x = problem.batch_params(robots).clone().requires_grad_()
    adam = torch.optim.Adam([x], lr=0.1)
    best = torch.full((robots,), float("inf"), dtype=x.dtype)
    for _ in tqdm(range(opt_steps), desc="own optimum (Adam)", leave=False):
        per = problem.robot_losses(x, tasks)
        best = torch.minimum(best, per.detach())
        adam.zero_grad()
        (per.log() if problem.log_loss else per).sum().backward()
        adam.step()
    with torch.no_grad():
        meta_start = tuner.init(tasks).detach().clone()
    _, untuned = gradient_descent(problem, problem.batch_params(robots), tasks, max_steps, tuner.config.inner_lr)
    _, meta = gradient_descent(problem, meta_start, tasks, max_steps, learned_step_sizes(tuner))
    optimum = torch.minimum(best, torch.minimum(untuned.min(0).values, meta.min(0).values))
    s_untuned, s_meta = steps_to_within(untuned, optimum), steps_to_within(meta, optimum)

    def summary(steps: list[int | None]) -> dict:
        reached = [s for s in steps if s is not None]
        return {"steps_per_robot": steps, "reached": len(reached), "of": robots,
                "median_steps": float(torch.tensor(reached, dtype=torch.float).median()) if reached else None,
                "max_steps_if_all_reached": max(reached) if len(reached) == robots else None}

    out = {"robots": robots, "tolerance": 0.05, "optimum_adam_steps": opt_steps, "max_adapt_steps": max_steps,
           "untuned": summary(s_untuned), "meta_tuned": summary(s_meta),
           "untuned_cost_by_step": untuned.mean(1).tolist(), "meta_cost_by_step": meta.mean(1).tolist(),
           "optimum_mean_cost": float(optimum.mean())}
    print(f"adaptation ({robots} unseen robots, within 5% of own optimum, at most {max_steps} steps): "
          f"meta-tuned reached {out['meta_tuned']['reached']}/{robots}, median {out['meta_tuned']['median_steps']} "
          f"steps | untuned reached {out['untuned']['reached']}/{robots}, median {out['untuned']['median_steps']}",
          flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes on 2 cores)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip", nargs="*", default=[], choices=("gradients", "adaptation", "mujoco"))
    parser.add_argument("--horizons", type=int, nargs="*", default=None, help="override the horizons")
    parser.add_argument("--robots", type=int, default=None, help="unseen robots (adaptation and MuJoCo parts)")
    parser.add_argument("--train-steps", type=int, default=None, help="meta-training steps")
    parser.add_argument("--opt-steps", type=int, default=None, help="Adam steps for each robot's own optimum")
    parser.add_argument("--max-steps", type=int, default=None, help="adaptation steps allowed")
    args = parser.parse_args(argv)
    q = args.quick
    horizons = args.horizons or ([100, 1000] if q else [100, 1000, 5000])
    knots = [1, 16]  # 4 and 64 gains
    results: dict = {"quick": q, "machine": platform.processor() or platform.machine(),
                     "threads": torch.get_num_threads()}
    if "gradients" not in args.skip:
        results["gradients"] = gradient_benchmark(horizons, knots, fd_budget_s=60 if q else 300)
    if not {"adaptation", "mujoco"} <= set(args.skip):
        problem = QuadrotorTracking(horizon=100 if q else 150, dt=0.02)
        cfg = RobotMetaConfig(inner_steps=1, robots_per_task=3)
        tuner = make_tuner(problem, cfg)
        t0 = time.perf_counter()
        history = tuner.train(args.train_steps or (8 if q else 20))
        results["meta_training"] = {"steps": len(history), "seconds": time.perf_counter() - t0,
                                    "first_outer_loss": history[0]["outer_loss"],
                                    "last_outer_loss": history[-1]["outer_loss"]}
        if "adaptation" not in args.skip:
            results["adaptation"] = adaptation_benchmark(
                problem, tuner, args.robots or (6 if q else 20), args.opt_steps or (40 if q else 100),
                args.max_steps or (10 if q else 30))
        if "mujoco" not in args.skip:
            tasks = problem.sample_tasks(args.robots or (4 if q else 20), seed=99)
            out_dir = Path("benchmarks/results/robots_mujoco")
            metrics = evaluate(problem, tuner, tasks, 3, "mujoco", out_dir)
            s = metrics["summary"]
            results["mujoco_figure8"] = {
                "robots": len(tasks), "rmse_hand_set_m": s["untuned"]["rmse_start"],
                "rmse_meta_tuned_m": s["meta-tuned"]["rmse_start"],
                "rmse_meta_tuned_adapted3_m": s["meta-tuned"]["rmse_adapted"],
                "reduction_vs_hand_set": 1 - s["meta-tuned"]["rmse_start"] / s["untuned"]["rmse_start"],
                "reduction_after_adaptation": 1 - s["meta-tuned"]["rmse_adapted"] / s["untuned"]["rmse_start"],
                "plots": str(out_dir)}
            r = results["mujoco_figure8"]
            print(f"MuJoCo figure-eight under gusts ({r['robots']} robots): RMSE hand-set {r['rmse_hand_set_m']:.3f} m, "
                  f"meta-tuned {r['rmse_meta_tuned_m']:.3f} m ({100 * r['reduction_vs_hand_set']:.0f}% lower), "
                  f"+3 adjoint steps {r['rmse_meta_tuned_adapted3_m']:.3f} m", flush=True)
    for path in [Path("benchmarks/results/robots.json"), args.out]:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(results, indent=2))
            tmp.replace(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
