"""Robot benchmarks: gradient cost of controller tuning, few-step adaptation, and MuJoCo flight under gusts.

1. Gradient of a quadrotor figure-eight tracking cost w.r.t. its controller gains: wall time and graph
   memory (bytes saved for backward) for adjoint, autograd, forward sensitivity and MuJoCo central
   finite differences, over horizons and gain counts (4 gains per schedule knot).
   Memory vs horizon: peak resident memory growth of one 64-gain gradient, adjoint vs autograd, each
   measured in a fresh process (`--skip` it with "memory").
2. Adaptation: on unseen robots, adjoint steps needed to come within 5% of each robot's own optimum
   (long Adam runs from several starts), meta-tuned start (neural gain policy, Meta-SGD step sizes)
   versus untuned hand-set gains (default and meta-learned step sizes).
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
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from envs.meta_tuning import RobotMetaConfig, adapt_robots, fixed_start_tuner, learned_step_sizes, make_tuner
from envs.quadrotor_tracking import QuadrotorTracking
from envs.workflows import evaluate
from metatune.atomic import write_text

MODES = ("adjoint", "autograd", "forward")


class GraphMemory:
    """Peak bytes held for backward by autograd graphs (forward and the adjoint's rebuilt segments alike).

    Every tensor autograd saves is packed into a holder that only the graph references; the holder counts
    its bytes while alive, so freeing a graph (e.g. an adjoint segment after its backward) releases them.
    A tensor saved by several nodes counts once per node: an upper bound, the same for every method.
    """

    class _Held:
        def __init__(self, t: torch.Tensor, owner: "GraphMemory"):
            self.t, self.owner, self.nbytes = t, owner, t.numel() * t.element_size()
            owner.live += self.nbytes
            owner.peak = max(owner.peak, owner.live)

        def __del__(self):
            self.owner.live -= self.nbytes

    def __init__(self):
        self.live = self.peak = 0

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(lambda t: GraphMemory._Held(t, self), lambda h: h.t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def rss_probe(horizon: int, knots: int, mode: str) -> float:
    """Peak resident memory growth (MB) of one gradient, in this fresh process, after a warm-up rollout."""
    import resource

    problem = QuadrotorTracking(horizon=horizon, dt=0.01, knots=knots, observer=False)
    tasks = problem.sample_tasks(1, seed=3)
    leaf = problem.batch_params(1).requires_grad_()
    with torch.no_grad():  # imports, allocator pools and the first-call work happen here, not in the measurement
        problem.robot_losses(leaf, tasks, grad="adjoint")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.autograd.grad(problem.robot_losses(leaf, tasks, grad=mode).sum(), leaf)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # kB on Linux


def memory_benchmark(horizons: list[int], knots: int) -> list[dict]:
    """Peak RSS growth of one gradient vs horizon, adjoint and autograd, each in its own process."""
    import subprocess

    rows = []
    for horizon in tqdm(horizons, desc="memory vs horizon", leave=False):
        row = {"horizon": horizon, "gains": 4 * knots}
        for mode in ("adjoint", "autograd"):
            out = subprocess.run([sys.executable, __file__, "--rss-probe", str(horizon), str(knots), mode],
                                 capture_output=True, text=True, check=True)
            row[f"{mode}_peak_rss_growth_MB"] = float(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"H={horizon:5d} gains={4 * knots} | peak RSS growth of one gradient: adjoint "
              f"{row['adjoint_peak_rss_growth_MB']:7.1f} MB, autograd {row['autograd_peak_rss_growth_MB']:7.1f} MB",
              flush=True)
    return rows


def mujoco_cost(problem: QuadrotorTracking, params: torch.Tensor, tasks) -> float:
    """The tracking cost of the closed loop flown in MuJoCo (same cost as the torch rollouts)."""
    traj = problem.simulate_mujoco(params, tasks)
    _, _, _, cost = problem.closed_loop(tasks)
    states = traj.states[:-1]
    return float(sum(cost(states[t], None, t) for t in range(problem.horizon)).sum() / problem.horizon)


def gradient_benchmark(horizons: list[int], knots: list[int], fd_budget_s: float, repeats: int) -> list[dict]:
    """Gradient time (median of `repeats` interleaved runs) and peak graph memory per mode, with MuJoCo FD."""
    rows = []
    seen: dict[tuple[str, int], tuple[int, float]] = {}  # (mode, gains) -> (horizon, seconds) measured
    for horizon in horizons:
        for k in knots:
            problem = QuadrotorTracking(horizon=horizon, dt=0.01, knots=k, observer=False)
            tasks = problem.sample_tasks(1, seed=3)
            params = problem.batch_params(1)
            row = {"horizon": horizon, "gains": params.numel()}
            grads, times, peaks, run = {}, {m: [] for m in MODES}, {m: [] for m in MODES}, []
            for mode in MODES:
                prev = seen.get((mode, params.numel()))
                if mode == "forward" and horizon > 1000 and prev is not None and prev[1] * horizon / prev[0] > fd_budget_s:
                    # forward sensitivity past 1,000 steps: linear in the horizon, extrapolate the last measurement
                    row[f"{mode}_s"] = prev[1] * horizon / prev[0]
                    row[f"{mode}_saved_MB"] = float("nan")
                    row[f"{mode}_estimated"] = True
                else:
                    run.append(mode)
            # the modes take turns, `repeats` rounds: load on the shared machine hits them alike; medians
            for _ in tqdm(range(repeats), desc=f"gradients H={horizon} gains={params.numel()}", leave=False):
                for mode in run:
                    leaf = params.clone().requires_grad_()
                    t0 = time.perf_counter()
                    with GraphMemory() as mem:  # the mean tracking cost itself (what mujoco_cost measures)
                        loss = problem.robot_losses(leaf, tasks, grad=mode).sum()
                        (grads[mode],) = torch.autograd.grad(loss, leaf)
                        del loss
                    times[mode].append(time.perf_counter() - t0)
                    peaks[mode].append(mem.peak)
            for mode in run:
                row[f"{mode}_s"] = statistics.median(times[mode])
                row[f"{mode}_s_all"] = times[mode]
                row[f"{mode}_saved_MB"] = max(peaks[mode]) / 2 ** 20
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
    """First step at which each robot's cost (losses [steps+1, B]) is within tol of its optimum [B] (None: never)."""
    ok = losses <= (1 + tol) * optimum
    return [int(ok[:, b].nonzero()[0]) if ok[:, b].any() else None for b in range(losses.shape[1])]


def own_optimum(problem: QuadrotorTracking, tasks: list, starts: dict[str, torch.Tensor], steps: int,
                lr: float = 0.05) -> dict[str, torch.Tensor]:
    """Each robot's lowest cost [B] over a long Adam run on its own log cost from each start (log-gains [B, ...]).

    All starts run as one batch of robots; Adam is per coordinate, so each robot's run is its own. The step
    size decays (cosine, to lr / 20) so the runs settle into their minima.
    """
    b = len(tasks)
    x = torch.cat(list(starts.values())).clone().requires_grad_()
    adam = torch.optim.Adam([x], lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(adam, steps, eta_min=lr / 20)
    best = torch.full((x.shape[0],), float("inf"), dtype=x.dtype)
    for k in tqdm(range(steps + 1), desc="own optimum (Adam, several starts)", leave=False):
        per = problem.robot_losses(x, tasks * len(starts), grad="autograd")  # same gradient as adjoint, faster on CPU
        best = torch.minimum(best, per.detach())
        if k == steps:
            break
        adam.zero_grad()
        per.log().sum().backward()
        adam.step()
        decay.step()
    return dict(zip(starts, best.reshape(len(starts), b)))


def adaptation_benchmark(problem: QuadrotorTracking, tuner, robots: int, opt_steps: int, max_steps: int) -> dict:
    """Steps each start needs to come within 5% of each unseen robot's own optimum.

    Starts: meta-tuned (neural gain policy from task features + learned per-gain step sizes), and the
    untuned hand-set gains with the default step and with the meta-learned step sizes (the better of the two
    is the untuned result; the step sizes alone are not what the start is being credited for).
    """
    tasks = problem.sample_tasks(robots, seed=2024)  # never seen in meta-training
    hand = problem.batch_params(robots)
    learned = learned_step_sizes(tuner)
    with torch.no_grad():
        meta_start = tuner.init(tasks).detach().clone()
    runs = {"meta_tuned": (meta_start, learned), "untuned": (hand, tuner.config.inner_lr),
            "untuned_learned_steps": (hand, learned)}
    # all three runs as one batch of 3B robots (one rollout per step), each with its own step sizes
    lrs = torch.cat([torch.as_tensor(lr, dtype=hand.dtype).expand_as(hand) for _, lr in runs.values()])
    start = torch.cat([s for s, _ in runs.values()])
    _, curves = adapt_robots(problem, fixed_start_tuner(start, lrs, problem), tasks * len(runs), max_steps)
    curves = dict(zip(runs, curves.split(robots, dim=1)))  # name -> [max_steps+1, B]
    stiff = hand + 0.7  # every gain x2: a third, independent start for the optimum
    optima = own_optimum(problem, tasks, {"hand_set": hand, "meta_start": meta_start, "stiff": stiff}, opt_steps)
    optimum = torch.stack([*optima.values(), *(c.min(0).values for c in curves.values())]).min(0).values

    def summary(losses: torch.Tensor) -> dict:
        steps = steps_to_within(losses, optimum)
        reached = [s for s in steps if s is not None]
        return {"steps_per_robot": steps, "reached": len(reached), "of": robots,
                "median_steps": float(torch.tensor(reached, dtype=torch.float).median()) if reached else None,
                "max_steps_if_all_reached": max(reached) if len(reached) == robots else None,
                "cost_by_step": losses.mean(1).tolist()}

    out = {"robots": robots, "tolerance": 0.05, "optimum_adam_steps": opt_steps, "max_adapt_steps": max_steps,
           "untuned_default_step": tuner.config.inner_lr, "learned_step_sizes": learned.reshape(-1).tolist(),
           **{name: summary(c) for name, c in curves.items()},
           "optimum_mean_cost": float(optimum.mean()),
           # how far each Adam start's best is from the optimum (worst robot): small = the runs agree
           "optimum_start_gap": {k: float((v / optimum - 1).max()) for k, v in optima.items()}}
    print(f"adaptation ({robots} unseen robots, within 5% of own optimum, steps to get there):")
    for name in runs:
        r = out[name]
        print(f"  {name:22s} reached {r['reached']:2d}/{robots} in <= {max_steps} steps, median {r['median_steps']}, "
              f"max {r['max_steps_if_all_reached']}", flush=True)
    print(f"  own optimum: Adam {opt_steps} steps from 3 starts; worst-robot gap of each start to the best: "
          + ", ".join(f"{k} {100 * v:.1f}%" for k, v in out["optimum_start_gap"].items()), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes on 2 cores)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=("gradients", "memory", "adaptation", "mujoco", "mujoco_gradients"))
    parser.add_argument("--no-mjx", action="store_true", help="leave MJX out of the MuJoCo gradient rows")
    parser.add_argument("--horizons", type=int, nargs="*", default=None, help="override the horizons")
    parser.add_argument("--robots", type=int, default=None, help="unseen robots (adaptation and MuJoCo parts)")
    parser.add_argument("--train-steps", type=int, default=None, help="meta-training steps")
    parser.add_argument("--opt-steps", type=int, default=None, help="Adam steps for each robot's own optimum")
    parser.add_argument("--max-steps", type=int, default=None, help="adaptation steps allowed")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds per gradient row (median)")
    parser.add_argument("--knots", type=int, nargs="*", default=[1, 16], help="schedule knots (4 gains each)")
    parser.add_argument("--rss-probe", nargs=3, default=None, help=argparse.SUPPRESS)  # H knots mode (internal)
    args = parser.parse_args(argv)
    if args.rss_probe is not None:
        torch.set_num_threads(1)
        print(rss_probe(int(args.rss_probe[0]), int(args.rss_probe[1]), args.rss_probe[2]))
        return 0
    q = args.quick
    horizons = args.horizons or ([100, 1000] if q else [100, 1000, 5000])
    knots = args.knots  # 1, 16: 4 and 64 gains
    torch.set_num_threads(1)  # timings on a shared machine: one thread each, compared side by side
    results: dict = {"quick": q, "machine": platform.processor() or platform.machine(),
                     "threads": torch.get_num_threads()}
    if "gradients" not in args.skip:
        results["gradients"] = gradient_benchmark(horizons, knots, fd_budget_s=60 if q else 300, repeats=args.repeats)
    if "mujoco_gradients" not in args.skip:  # dm_control models: ours vs plain-MuJoCo FD vs MJX (module doc)
        from mujoco_gradients import MODELS, benchmark

        models = MODELS[:2] if q else MODELS
        mjx_rows = set() if args.no_mjx else ({("reacher", 100, 4)} if q else
                                              {("reacher", 100, 4), ("reacher", 100, 64), ("cheetah", 100, 4),
                                               ("cheetah", 100, 64), ("walker", 100, 4), ("humanoid", 100, 4)})
        results["mujoco_gradients"] = benchmark(models, [100] if q else [100, 1000],
                                                [4, 64] if q else [4, 16, 64, 256, 1000], 5 if q else 20, mjx_rows)
    if "memory" not in args.skip:
        results["memory"] = memory_benchmark([500, 2000] if q else [500, 2000, 5000], knots=16)
    if not {"adaptation", "mujoco"} <= set(args.skip):
        problem = QuadrotorTracking(horizon=100 if q else 150, dt=0.02)
        # the portable neural gain policy (task features -> log-gains) as the start, Meta-SGD step sizes per gain
        cfg = RobotMetaConfig(init="neural", inner_steps=1, robots_per_task=4, outer_lr=0.03)
        tuner = make_tuner(problem, cfg)
        t0 = time.perf_counter()
        history = tuner.train(args.train_steps or (20 if q else 60))
        results["meta_training"] = {"steps": len(history), "seconds": time.perf_counter() - t0, "config": vars(cfg),
                                    "first_outer_loss": history[0]["outer_loss"],
                                    "last_outer_loss": history[-1]["outer_loss"]}
        if "adaptation" not in args.skip:
            results["adaptation"] = adaptation_benchmark(
                problem, tuner, args.robots or (6 if q else 20), args.opt_steps or (60 if q else 150),
                args.max_steps or (30 if q else 100))
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
        if path is not None:  # parts not run this time (--skip) keep their previous results
            merged = json.loads(path.read_text()) if path.is_file() else {}
            rows = {(r["horizon"], r["gains"]): r for r in merged.get("gradients", []) + results.get("gradients", [])}
            merged.update(results)
            if rows:  # gradient rows are kept per (horizon, gains): a later run replaces only the rows it measured
                merged["gradients"] = sorted(rows.values(), key=lambda r: (r["horizon"], r["gains"]))
            write_text(path, json.dumps(merged, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
