"""Engine benchmarks: hypergradients against torchopt and theseus, and rollout gradients by mode.

    python benchmarks/engine.py [--quick] [--out benchmarks/results/engine.json]

Part 1, hypergradients of ridge regression with a sparse-plus-low-rank design
(Hessian diag(a) + lambda I + U^T U, U of rank 20), dimension 10 to 10,000: the exact reference comes
from the Woodbury identity. Each tool differentiates the same solution: time of the hypergradient
(backward) and its relative error, side by side; theseus also solves (dense Gauss-Newton), timed apart.
Part 2, `rollout` on a batch of damped pendulums with a radial-basis-feature policy: time of one
forward rollout, gradient time per mode and its ratio to the forward, and peak memory versus horizon
100 to 10,000 and versus parameter count 4 to 256. Memory three ways, each in a fresh process: resident-set
growth under glibc's defaults, the same with glibc returning freed memory at once, and peak live tensor
memory (allocator-independent). theseus runs in its own process under an address-space cap.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import metatune as mt  # noqa: E402
from metatune.atomic import write_text  # noqa: E402

RANK = 20
PARAM_SWEEP_HORIZON = 200


# ---------------------------------------------------------------------------------------------- part 1
def ridge_problem(d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64)
    a = torch.rand(d, generator=g, **f64) + 0.5
    b = torch.randn(d, generator=g, **f64)
    U = torch.randn(RANK, d, generator=g, **f64) / d**0.5
    c = torch.randn(RANK, generator=g, **f64)
    target = torch.randn(d, generator=g, **f64)

    def inner(w, lam):
        return 0.5 * (a * (w - b) ** 2).sum() + 0.5 * ((U @ w - c) ** 2).sum() + 0.5 * lam * (w * w).sum()

    def residuals(w, lam):
        return torch.cat([a.sqrt() * (w - b), U @ w - c, lam.sqrt() * w])

    def outer(w):
        return 0.5 * ((w - target) ** 2).sum()

    def reference(lam: float):
        """w* and d outer/d lam by Woodbury: (D + U^T U)^-1 = D^-1 - D^-1 U^T (I + U D^-1 U^T)^-1 U D^-1."""
        Dinv = 1.0 / (a + lam)
        K = torch.eye(RANK, **f64) + (U * Dinv) @ U.T

        def apply_inv(v):
            return Dinv * v - Dinv * (U.T @ torch.linalg.solve(K, U @ (Dinv * v)))

        w = apply_inv(a * b + U.T @ c)
        return w, -(w - target) @ apply_inv(w)

    return inner, residuals, outer, reference, a, U


def timed(fn, repeat: int = 3):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def hypergrad_rows(dims: list[int], theseus_max: int) -> list[dict]:
    import torchopt

    rows = []
    lam0 = 0.7
    for d in dims:
        inner, _, outer, reference, a, U = ridge_problem(d)
        w_ref, g_ref = reference(lam0)
        lam = torch.tensor(lam0, dtype=torch.float64, requires_grad=True)
        t_solve, w_star = timed(lambda: mt.solve(inner, torch.zeros(d, dtype=torch.float64), lam, solver="lbfgs",
                                                 lr=1.0, steps=500, tol=1e-11, hypergrad="none"), 1)
        sol_err = float((w_star - w_ref).norm() / w_ref.norm())

        def ours():
            w = mt.solve(inner, w_star, lam, solver="gd", steps=1, lr=0.0, hypergrad="implicit")
            return torch.autograd.grad(outer(w), lam)[0]

        lipschitz = float(a.max()) + lam0 + float(torch.linalg.matrix_norm(U, 2)) ** 2

        def ours_unroll():  # the same hypergradient by backprop through 300 GD steps from the solution
            w = mt.solve(inner, w_star, lam, solver="gd", steps=300, lr=1.0 / lipschitz, hypergrad="truncated",
                         truncate=300)
            return torch.autograd.grad(outer(w), lam)[0]

        def torchopt_implicit():
            def stationarity(w, l):  # torchopt differentiates this with functorch: write it functionally
                return torch.func.grad(inner, argnums=0)(w, l)

            @torchopt.diff.implicit.custom_root(stationarity, argnums=1,
                                                solve=torchopt.linear_solve.solve_cg(maxiter=200, rtol=1e-12))
            def solve_fn(w0, l):
                return w_star.clone()

            return torch.autograd.grad(outer(solve_fn(w_star, lam)), lam)[0]

        row = {"dim": d, "inner_solve_s": t_solve, "solution_rel_err": sol_err}
        for name, fn in [("metatune_implicit", ours), ("metatune_truncated300", ours_unroll),
                         ("torchopt_implicit", torchopt_implicit)]:
            t, g = timed(fn)
            row[f"{name}_s"] = t
            row[f"{name}_rel_err"] = abs(float(g) - float(g_ref)) / abs(float(g_ref))
        if d <= theseus_max:
            row.update(theseus_in_subprocess(d, lam0, float(g_ref)))
        row["torchopt_over_metatune_time"] = row["torchopt_implicit_s"] / row["metatune_implicit_s"]
        rows.append(row)
        print_row(row)
    return rows


THESEUS_MEMORY_CAP_GB = 20.0  # address-space cap for the theseus process: a failed allocation, not the OOM killer


def theseus_row(d: int, lam0: float, g_ref: float) -> dict:
    """theseus on the same ridge problem: dense Gauss-Newton solve (timed) then its implicit backward (timed
    apart, comparable with the other tools' backward), error and peak resident memory."""
    import resource

    import theseus  # noqa: F401  (its import, seconds, is not part of the timing)

    _, residuals, outer, _, _, _ = ridge_problem(d)
    lam = torch.tensor(lam0, dtype=torch.float64, requires_grad=True)
    t0 = time.perf_counter()
    w = mt.solve_least_squares(residuals, torch.zeros(d, dtype=torch.float64), lam.reshape(1),
                               backward="implicit", steps=3)
    t1 = time.perf_counter()
    g = torch.autograd.grad(outer(w), lam)[0]
    t2 = time.perf_counter()
    return {"theseus_solve_s": t1 - t0, "theseus_implicit_s": t2 - t1,
            "theseus_implicit_rel_err": abs(float(g) - g_ref) / abs(g_ref),
            "theseus_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def theseus_in_subprocess(d: int, lam0: float, g_ref: float) -> dict:
    """Run `theseus_row` in a fresh process under an address-space cap; a failure is reported, not raised."""
    import resource

    def cap():
        limit = int(THESEUS_MEMORY_CAP_GB * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    cmd = [sys.executable, __file__, "--theseus", str(d), str(lam0), repr(g_ref)]
    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=cap)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"theseus_failed": f"exit {out.returncode} under a {THESEUS_MEMORY_CAP_GB:g} GB cap: {last[:160]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_row(row: dict) -> None:
    if "theseus_implicit_rel_err" in row:
        th = (f"{row['theseus_implicit_s']:8.4f}s {row['theseus_implicit_rel_err']:8.1e} "
              f"{row['theseus_solve_s']:8.2f}s {row['theseus_peak_rss_gb']:5.1f}GB")
    else:
        th = f"{'failed (see JSON)' if 'theseus_failed' in row else 'not run':>36}"
    print(f"{row['dim']:>6} | {row['metatune_implicit_s']:8.4f}s {row['metatune_implicit_rel_err']:8.1e} | "
          f"{row['torchopt_implicit_s']:8.4f}s {row['torchopt_implicit_rel_err']:8.1e} | "
          f"{row['metatune_truncated300_s']:8.4f}s {row['metatune_truncated300_rel_err']:8.1e} | {th} | "
          f"{row['torchopt_over_metatune_time']:5.2f}x", flush=True)


# ---------------------------------------------------------------------------------------------- part 2
DT = 0.01


def pendulum(x, u):
    th, om = x[..., 0], x[..., 1]
    om = om + DT * (-9.81 * torch.sin(th) - 0.2 * om + u[..., 0])
    return torch.stack([th + DT * om, om], dim=-1)


def rbf_policy(n_params: int):
    centers = torch.linspace(-3, 3, n_params, dtype=torch.float64)

    def policy(x, t, theta):
        feats = torch.exp(-((x[..., :1] - centers) ** 2))  # [B, P]
        return (feats * theta).sum(-1, keepdim=True) - 2.0 * x[..., 1:2]

    return policy


def cost(x, u, t):
    return (x[..., 0] - 1.0) ** 2 + 1e-3 * u[..., 0] ** 2


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


class PeakRSS:
    """Peak resident-set growth over a block, exact: the kernel's high-water mark (VmHWM), reset on entry
    through /proc/self/clear_refs, after malloc_trim so that freed heap pages do not count as the base."""

    def __enter__(self):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
        self.base = _status_kb("VmRSS")
        return self

    def __exit__(self, *exc):
        self.peak = _status_kb("VmHWM")

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 1024


class PeakTensorMemory:
    """Peak growth of live tensor memory over a block, whatever the allocator keeps (the CPU counterpart of
    torch.cuda.max_memory_allocated): the running sum of the profiler's allocation and free events."""

    def __enter__(self):
        from torch.profiler import ProfilerActivity, profile

        self.prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self.prof.__enter__()
        return self

    def __exit__(self, *exc):
        self.prof.__exit__(*exc)
        events = sorted((e for e in self.prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                        key=lambda e: e.start_ns())
        live = peak = 0
        for e in events:
            live += e.nbytes()
            peak = max(peak, live)
        self.growth_mb = peak / 2**20


ROLLOUT_MODES = {  # benchmark label -> rollout options
    "adjoint": dict(grad="adjoint"),  # the default: vectorized over time when a step is small
    "adj-vec": dict(grad="adjoint", vectorize=True),
    "adj-step": dict(grad="adjoint", vectorize=False),
    "autograd": dict(grad="autograd"),
    "forward": dict(grad="forward"),
}


def measure_rollout(mode: str, horizon: int, n_params: int, batch: int, timing: bool = True,
                    tensor_memory: bool = False) -> dict:
    """Run in a fresh process: one gradient of the summed cost; its wall and CPU time and peak RSS growth.

    One thread, so CPU time is the work done, whatever else the machine runs; wall time is what a user waits.
    """
    torch.set_num_threads(1)
    policy = rbf_policy(n_params)
    x0 = torch.zeros(batch, 2, dtype=torch.float64)
    x0[:, 0] = torch.linspace(-1, 1, batch, dtype=torch.float64)
    theta = torch.zeros(n_params, dtype=torch.float64, requires_grad=True)
    kw = dict(ROLLOUT_MODES[mode], cost=cost, store_states=False)  # a tuner needs the cost's gradient only
    warm = mt.rollout(pendulum, x0, policy, theta, 10, **kw)  # allocator and thread-pool warm-up
    torch.autograd.grad(warm.cost.sum(), theta)
    t_fwd = c_fwd = t_grad = c_grad = float("inf")
    for _ in range(3 if timing else 0):  # best of three, forward and gradient interleaved: both see the same load
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            mt.rollout(pendulum, x0, policy, theta.detach(), horizon, grad="autograd", cost=cost)
        t1, c1 = time.perf_counter(), time.process_time()
        out = mt.rollout(pendulum, x0, policy, theta, horizon, **kw)
        torch.autograd.grad(out.cost.sum(), theta)
        t2, c2 = time.perf_counter(), time.process_time()
        t_fwd, c_fwd = min(t_fwd, t1 - t0), min(c_fwd, c1 - c0)
        t_grad, c_grad = min(t_grad, t2 - t1), min(c_grad, c2 - c1)
        del out
        if t_grad > 20.0:  # minutes-long rows (forward sensitivity at 256 parameters): one round is enough
            break
    with (PeakTensorMemory() if tensor_memory else PeakRSS()) as mem:
        out = mt.rollout(pendulum, x0, policy, theta, horizon, **kw)
        torch.autograd.grad(out.cost.sum(), theta)
    states_bytes = (horizon + 1) * x0.numel() * x0.element_size()
    nan = float("nan")
    return {"mode": mode, "horizon": horizon, "params": n_params, "batch": batch,
            "forward_s": t_fwd if timing else nan, "grad_s": t_grad if timing else nan,
            "grad_over_forward": t_grad / t_fwd if timing else nan, "forward_cpu_s": c_fwd if timing else nan,
            "grad_cpu_s": c_grad if timing else nan, "grad_over_forward_cpu": c_grad / c_fwd if timing else nan,
            "peak_mem_mb": mem.growth_mb, "trajectory_mb": states_bytes / 2**20}


# glibc keeps freed small blocks in its heap, so the resident set of a long computation that allocates the
# same sizes over and over can creep up with its length. With these settings blocks over 16 KB are mapped
# and unmapped one by one and free heap is trimmed at once: the resident set then follows the live memory.
RETURNING_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "16384", "MALLOC_TRIM_THRESHOLD_": "0"}


def in_subprocess(mode: str, horizon: int, n_params: int, batch: int, returning_malloc: bool = False,
                  tensor_memory: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--measure", mode, str(horizon), str(n_params), str(batch)]
    env = dict(os.environ, **RETURNING_MALLOC) if returning_malloc else None
    if returning_malloc or tensor_memory:
        cmd.append("--memory-only")
    if tensor_memory:
        cmd.append("--tensor-memory")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rollout_rows(horizons: list[int], param_counts: list[int], big_batch: int) -> list[dict]:
    """Four sweeps: horizon (batch 16, overhead-bound), batch size (where the vectorized adjoint stops paying),
    a large batch (compute-bound), parameter count."""
    rows = []
    print("\nRollout gradient of a summed cost (pendulum batch, RBF policy): forward = one no-grad rollout;")
    print("ratio = gradient / forward time (wall; cpu = process CPU time, one thread, immune to other load);")
    print("peak MB = resident memory growth while computing the gradient (exact high-water mark); live MB = the")
    print("same with glibc set to return freed memory (RETURNING_MALLOC); tensor MB = peak live tensor memory, the")
    print("allocator-independent measure (what torch.cuda.max_memory_allocated gives on a GPU); traj MB = size of")
    print("the full trajectory")
    print("adjoint = default (vectorized over time when one step saves <= 16k numbers); adj-vec / adj-step = forced")
    print(f"{'mode':>8} {'T':>6} {'P':>4} {'batch':>6} | {'forward':>9} {'gradient':>9} {'ratio':>6} {'cpu':>6} | "
          f"{'peak MB':>8} {'live MB':>8} {'tensor MB':>9} {'traj MB':>8}")
    # forward sensitivity (vmap over one tangent per parameter) runs ~40x a rollout here: it is left out of
    # the 10,000-step and large-batch rows, which would take minutes each
    configs = [(m, h, 8, 16) for h in horizons for m in ("adjoint", "adj-step", "autograd", "forward")
               if not (m == "forward" and h > 1000)]
    configs += [(m, 500, 8, b) for b in (64, 256, 512, 1024, 2048) for m in ("adj-vec", "adj-step")]
    configs += [(m, 1000, 8, big_batch) for m in ("adjoint", "autograd")]
    configs += [(m, PARAM_SWEEP_HORIZON, p, 256) for p in param_counts for m in ("adjoint", "forward")]
    for mode, horizon, p, batch in configs:
        r = in_subprocess(mode, horizon, p, batch)
        if batch == 16 and mode != "forward":  # the horizon sweep: memory once more with a returning allocator
            r["peak_mem_mb_returning_malloc"] = in_subprocess(mode, horizon, p, batch, True)["peak_mem_mb"]
            r["peak_tensor_mb"] = in_subprocess(mode, horizon, p, batch, tensor_memory=True)["peak_mem_mb"]
        rows.append(r)
        print(f"{mode:>8} {horizon:>6} {p:>4} {batch:>6} | {r['forward_s']:8.3f}s {r['grad_s']:8.3f}s "
              f"{r['grad_over_forward']:6.2f} {r['grad_over_forward_cpu']:6.2f} | {r['peak_mem_mb']:8.2f} "
              f"{r.get('peak_mem_mb_returning_malloc', float('nan')):8.2f} {r.get('peak_tensor_mb', float('nan')):9.3f} "
              f"{r['trajectory_mb']:8.3f}", flush=True)
    return rows


def summarize(hyper: list[dict], roll: list[dict], big_batch: int) -> dict:
    def get(mode, h, p, batch):
        return next((r for r in roll if (r["mode"], r["horizon"], r["params"], r["batch"]) == (mode, h, p, batch)), None)

    hs = sorted({r["horizon"] for r in roll if r["batch"] == 16})
    ps = sorted({r["params"] for r in roll if r["horizon"] == PARAM_SWEEP_HORIZON and r["batch"] == 256})
    s = {
        "adjoint_grad_over_forward_batch16": {h: get("adjoint", h, 8, 16)["grad_over_forward"] for h in hs},
        "adjoint_grad_over_forward_cpu_batch16": {h: get("adjoint", h, 8, 16)["grad_over_forward_cpu"] for h in hs},
        "stepwise_adjoint_grad_over_forward_batch16": {h: get("adj-step", h, 8, 16)["grad_over_forward"] for h in hs},
        "vectorized_over_stepwise_time_by_batch": {
            b: get("adj-vec", 500, 8, b)["grad_cpu_s"] / get("adj-step", 500, 8, b)["grad_cpu_s"]
            for b in (64, 256, 512, 1024, 2048)},
        "autograd_grad_over_forward_batch16": {h: get("autograd", h, 8, 16)["grad_over_forward"] for h in hs},
        f"adjoint_grad_over_forward_batch{big_batch}": get("adjoint", 1000, 8, big_batch)["grad_over_forward"],
        f"adjoint_peak_mb_batch{big_batch}": get("adjoint", 1000, 8, big_batch)["peak_mem_mb"],
        f"autograd_peak_mb_batch{big_batch}": get("autograd", 1000, 8, big_batch)["peak_mem_mb"],
        f"autograd_grad_over_forward_batch{big_batch}": get("autograd", 1000, 8, big_batch)["grad_over_forward"],
        "adjoint_peak_mb_by_horizon": {h: get("adjoint", h, 8, 16)["peak_mem_mb"] for h in hs},
        "adjoint_peak_mb_by_horizon_returning_malloc": {
            h: get("adjoint", h, 8, 16)["peak_mem_mb_returning_malloc"] for h in hs},
        "stepwise_adjoint_peak_mb_by_horizon": {h: get("adj-step", h, 8, 16)["peak_mem_mb"] for h in hs},
        "adjoint_tensor_mb_by_horizon": {h: get("adjoint", h, 8, 16)["peak_tensor_mb"] for h in hs},
        "stepwise_adjoint_tensor_mb_by_horizon": {h: get("adj-step", h, 8, 16)["peak_tensor_mb"] for h in hs},
        "autograd_tensor_mb_by_horizon": {h: get("autograd", h, 8, 16)["peak_tensor_mb"] for h in hs},
        "stepwise_adjoint_peak_mb_by_horizon_returning_malloc": {
            h: get("adj-step", h, 8, 16)["peak_mem_mb_returning_malloc"] for h in hs},
        "autograd_peak_mb_by_horizon": {h: get("autograd", h, 8, 16)["peak_mem_mb"] for h in hs},
        "forward_sensitivity_grad_s_by_params": {p: get("forward", PARAM_SWEEP_HORIZON, p, 256)["grad_s"] for p in ps},
        "adjoint_grad_s_by_params": {p: get("adjoint", PARAM_SWEEP_HORIZON, p, 256)["grad_s"] for p in ps},
        "max_hypergrad_rel_err_metatune_implicit": max(r["metatune_implicit_rel_err"] for r in hyper),
        "max_hypergrad_rel_err_torchopt_implicit": max(r["torchopt_implicit_rel_err"] for r in hyper),
    }
    for key in ("adjoint_peak_mb_by_horizon", "adjoint_peak_mb_by_horizon_returning_malloc",
                "stepwise_adjoint_peak_mb_by_horizon", "stepwise_adjoint_peak_mb_by_horizon_returning_malloc",
                "adjoint_tensor_mb_by_horizon", "stepwise_adjoint_tensor_mb_by_horizon"):
        ratio_key = key.replace("peak_mb_by_horizon", "memory_ratio_longest_over_shortest").replace(
            "tensor_mb_by_horizon", "tensor_memory_ratio_longest_over_shortest")
        s[ratio_key] = s[key][hs[-1]] / s[key][hs[0]]
    s["forward_sensitivity_time_ratio_most_over_fewest_params"] = (
        s["forward_sensitivity_grad_s_by_params"][ps[-1]] / s["forward_sensitivity_grad_s_by_params"][ps[0]])
    s["adjoint_time_ratio_most_over_fewest_params"] = (
        s["adjoint_grad_s_by_params"][ps[-1]] / s["adjoint_grad_s_by_params"][ps[0]])
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/engine.json"))
    ap.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tensor-memory", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--theseus", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--theseus-max", type=int, default=3000,
                    help="largest dimension theseus runs at (dense Jacobian and normal matrix: 17 GB and 7 min at 10,000)")
    args = ap.parse_args()
    if args.theseus:
        d, lam0, g_ref = args.theseus
        print(json.dumps(theseus_row(int(d), float(lam0), float(g_ref))))
        return
    if args.measure:
        mode, h, p, b = args.measure
        print(json.dumps(measure_rollout(mode, int(h), int(p), int(b), timing=not args.memory_only,
                                         tensor_memory=args.tensor_memory)))
        return
    dims = [10, 100, 1000] if args.quick else [10, 100, 1000, 3000, 10000]
    horizons = [100, 1000] if args.quick else [100, 1000, 10000]
    params = [4, 64] if args.quick else [4, 16, 64, 256]
    big_batch = 1024 if args.quick else 4096
    print("Hypergradient of ridge regression (time of the backward pass, relative error vs Woodbury closed form)")
    print(f"{'dim':>6} | {'metatune implicit':>18} | {'torchopt implicit':>18} | {'metatune trunc-300':>18} | "
          f"{'theseus implicit: backward, err, solve, RSS':>36} | torchopt/metatune")
    # theseus builds the dense (2d+20) x d residual Jacobian by autodiff and factors a dense d x d system:
    # 2.2 GB and 22 s at d=3000 here, 17 GB and 7 min at d=10,000 (hence the default --theseus-max).
    hyper = hypergrad_rows(dims, theseus_max=args.theseus_max)
    roll = rollout_rows(horizons, params, big_batch)
    result = {"hypergradient": hyper, "rollout": roll, "summary": summarize(hyper, roll, big_batch),
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    print("\nsummary:", json.dumps(result["summary"], indent=2))
    write_text(args.out, json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
