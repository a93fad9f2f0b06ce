"""Meta-training throughput on few-shot sinusoid regression (Finn et al.'s MAML benchmark): MAML with 5 inner
steps, second order, an MLP 1-40-40-1, meta-batch 32, 10 support and 10 query points per task.

Side by side in one process, one thread, the same tasks and initial weights for every method:
  metatune       MetaTuner with its defaults (the meta-batch adapted in one vmap)
  metatune-loop  MetaTuner(batch_tasks=False): the tasks one after another
  vmap           a hand-written torch.func.vmap over tasks with torch.func.grad inner steps (what torch allows)
  autograd-loop  a plain loop of torch.autograd.grad(create_graph=True), what loop-based libraries do
  torchopt       torchopt 0.7.3's functional SGD inner loop (torchopt.sgd + apply_updates), looped over tasks
  higher         higher 0.2.1's innerloop_ctx, looped over tasks
Also: MetaTuner's second-order meta-step over its first-order one, and the speed-up from 1 to 2 processes
(torchrun, gloo, one intra-op thread in every process, the 1-process baseline too) at meta-batch 32, with its
ceiling: one process's time over that of one rank's share (16 tasks) alone. Prints a table; writes benchmarks/results/meta_training.json.
Usage: .venv/bin/python benchmarks/meta_training.py [--steps 30] [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import metatune as mt
from metatune import distributed
from metatune.atomic import write_text

INNER_STEPS, INNER_LR, OUTER_LR, META_BATCH, SHOTS = 5, 0.01, 1e-3, 32, 10
HERE = Path(__file__).resolve()


def init_params(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)

    def layer(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:  # nn.Linear's default init
        bound = 1 / math.sqrt(n_in)
        return ((torch.rand(n_in, n_out, generator=g) * 2 - 1) * bound, (torch.rand(n_out, generator=g) * 2 - 1) * bound)

    return (*layer(1, 40), *layer(40, 40), *layer(40, 1))


def mlp(p: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:  # x [..., N, 1] -> [..., N, 1]
    h = torch.relu(x @ p[0] + p[1])
    h = torch.relu(h @ p[2] + p[3])
    return h @ p[4] + p[5]


def task_batches(steps: int, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    """`steps` meta-batches of sinusoids, stacked: (xs, ys, xq, yq), each [META_BATCH, SHOTS, 1]."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        amp = torch.rand(META_BATCH, 1, 1, generator=g) * 4.9 + 0.1
        phase = torch.rand(META_BATCH, 1, 1, generator=g) * math.pi
        xs, xq = (torch.rand(META_BATCH, SHOTS, 1, generator=g) * 10 - 5 for _ in range(2))
        out.append((xs, amp * torch.sin(xs - phase), xq, amp * torch.sin(xq - phase)))
    return out


def support_loss(p, task):
    return ((mlp(p, task[0]) - task[1]) ** 2).mean()


def query_loss(p, task):
    return ((mlp(p, task[2]) - task[3]) ** 2).mean()


def one_task(batch, i):
    return tuple(t[i] for t in batch)


# ---- the methods: each runs the given meta-batches and returns (seconds per meta-step, final query loss) ----
def run_metatune(batches, batch_tasks=None, method="maml", meta_batch=META_BATCH):
    it = iter(batches)

    def sample(n):
        b = next(it)
        return [one_task(b, i) for i in range(n)]

    cfg = mt.MetaConfig(method=method, inner_steps=INNER_STEPS, inner_lr=INNER_LR, outer_lr=OUTER_LR,
                        meta_batch=meta_batch, grad_clip=1e9, batch_tasks=batch_tasks)
    tuner = mt.MetaTuner(init_params(), support_loss, query_loss, sample_tasks=sample, config=cfg)
    t0 = time.perf_counter()
    hist = tuner.train(len(batches), progress=False)
    return (time.perf_counter() - t0) / len(batches), hist[-1]["outer_loss"]


def run_vmap(batches):
    params = [p.clone().requires_grad_() for p in init_params()]
    opt = torch.optim.Adam(params, lr=OUTER_LR)

    def adapt_and_score(task, *p):
        x = p
        for _ in range(INNER_STEPS):
            g = torch.func.grad(lambda q: support_loss(q, task))(x)
            x = tuple(xi - INNER_LR * gi for xi, gi in zip(x, g))
        return query_loss(x, task)

    t0 = time.perf_counter()
    for b in batches:
        loss = torch.func.vmap(adapt_and_score, in_dims=(0, *([None] * 6)))(b, *params).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / len(batches), float(loss.detach())


def _task_loop(batches, adapt):
    """Meta-train looping over tasks, as loop-based libraries do: adapt(task, params) -> adapted params."""
    params = tuple(p.clone().requires_grad_() for p in init_params())
    opt = torch.optim.Adam(params, lr=OUTER_LR)
    t0 = time.perf_counter()
    for b in batches:
        loss = sum(query_loss(adapt(one_task(b, i), params), one_task(b, i)) for i in range(META_BATCH)) / META_BATCH
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / len(batches), float(loss.detach())


def run_autograd_loop(batches):
    def adapt(task, x):
        for _ in range(INNER_STEPS):
            g = torch.autograd.grad(support_loss(x, task), x, create_graph=True)
            x = tuple(xi - INNER_LR * gi for xi, gi in zip(x, g))
        return x

    return _task_loop(batches, adapt)


def run_torchopt(batches):
    import torchopt

    inner_opt = torchopt.sgd(lr=INNER_LR)

    def adapt(task, x):
        state = inner_opt.init(x)
        for _ in range(INNER_STEPS):
            g = torch.autograd.grad(support_loss(x, task), x, create_graph=True)
            updates, state = inner_opt.update(g, state, inplace=False)
            x = torchopt.apply_updates(x, updates, inplace=False)
        return x

    return _task_loop(batches, adapt)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.p = torch.nn.ParameterList([torch.nn.Parameter(t.clone()) for t in init_params()])

    def forward(self, x):
        return mlp(tuple(self.p), x)


def run_higher(batches):
    import higher

    net = _Net()
    opt = torch.optim.Adam(net.parameters(), lr=OUTER_LR)
    inner_opt = torch.optim.SGD(net.parameters(), lr=INNER_LR)
    t0 = time.perf_counter()
    for b in batches:
        opt.zero_grad()
        total = 0.0
        for i in range(META_BATCH):
            xs, ys, xq, yq = one_task(b, i)
            with higher.innerloop_ctx(net, inner_opt, copy_initial_weights=False) as (fnet, diffopt):
                for _ in range(INNER_STEPS):
                    diffopt.step(((fnet(xs) - ys) ** 2).mean())
                q = ((fnet(xq) - yq) ** 2).mean() / META_BATCH
                q.backward()  # higher's examples: one backward per task, gradients accumulate
                total += float(q)
        opt.step()
    return (time.perf_counter() - t0) / len(batches), total


def worker(steps: int, out: str, batch_tasks: bool | None) -> None:
    """Under torchrun: MetaTuner meta-training, rank 0 reports seconds per step. In one process it also times
    one rank's share alone (the first half of every meta-batch): what two processes would take per step with
    a free all-reduce and two cores that each run as fast as one alone."""
    distributed.init_from_env()
    torch.set_num_threads(1)
    batches = task_batches(steps + 2)
    run_metatune(batches[:2], batch_tasks)  # warm-up: the first vmap imports torch._dynamo (seconds)
    sec, loss = run_metatune(batches, batch_tasks)
    result = {"seconds_per_step": sec, "final_query_loss": loss}
    if distributed.rank_world()[1] == 1:
        half = [tuple(t[: META_BATCH // 2] for t in b) for b in batches]
        result["share_seconds_per_step"] = run_metatune(half, batch_tasks, meta_batch=META_BATCH // 2)[0]
    if distributed.is_main():
        Path(out).write_text(json.dumps(result))
    distributed.shutdown()


def torchrun_seconds(nproc: int, steps: int, batch_tasks: bool | None = None) -> dict:
    """The worker's report: seconds per step (and, for one process, one rank's share alone)."""
    out = Path(f"/tmp/metatune_meta_bench_{os.getpid()}_{nproc}.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                    str(HERE), "--worker", str(steps), str(out), str(batch_tasks)], check=True, env=env,
                   capture_output=True)
    report = json.loads(out.read_text())
    out.unlink()
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="meta-steps per method (timed after 2 warm-up steps)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--quick", action="store_true", help="8 steps, 1 round")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(int(args.worker[0]), args.worker[1], {"None": None, "False": False}[args.worker[2]])
        return 0
    if args.quick:
        args.steps, args.repeats = 8, 1
    torch.set_num_threads(1)
    methods = {"metatune": run_metatune, "metatune-loop": lambda b: run_metatune(b, batch_tasks=False),
               "vmap": run_vmap, "autograd-loop": run_autograd_loop, "torchopt": run_torchopt, "higher": run_higher,
               "metatune-first-order": lambda b: run_metatune(b, method="fomaml")}
    batches = task_batches(args.steps + 2)
    times: dict[str, list[float]] = {m: [] for m in methods}
    losses: dict[str, float] = {}
    for _ in range(args.repeats):  # interleaved, so machine load drifts over every method alike
        for name, fn in methods.items():
            fn(batches[:2])  # warm-up
            sec, loss = fn(batches)
            times[name].append(sec)
            losses[name] = loss
    med = {m: statistics.median(v) for m, v in times.items()}
    libs = min(med["torchopt"], med["higher"], med["autograd-loop"])
    procs = {}
    for label, mode in (("vmap", None), ("loop", False)):  # the default, and the task loop
        ones, twos = [], []
        for _ in range(args.repeats):  # interleaved, so load drifts over both alike
            ones.append(torchrun_seconds(1, args.steps, mode))
            twos.append(torchrun_seconds(2, args.steps, mode)["seconds_per_step"])
        t1 = statistics.median(r["seconds_per_step"] for r in ones)
        share = statistics.median(r["share_seconds_per_step"] for r in ones)
        t2 = statistics.median(twos)
        procs[label] = {"one_process_s": round(t1, 4), "two_processes_s": round(t2, 4), "speedup": round(t1 / t2, 2),
                        "one_rank_share_alone_s": round(share, 4), "sharding_ceiling": round(t1 / share, 2)}
    rows = [{"method": m, "seconds_per_meta_step": round(med[m], 4),
             "tasks_per_second": round(META_BATCH / med[m], 1), "final_query_loss": round(losses[m], 4)}
            for m in methods]
    summary = {"metatune_over_vmap": round(med["metatune"] / med["vmap"], 3),
               "fastest_library_over_metatune": round(libs / med["metatune"], 2),
               "second_over_first_order": round(med["metatune"] / med["metatune-first-order"], 2),
               "processes": procs, "speedup_1_to_2_processes": procs["vmap"]["speedup"], "targets": {"metatune_over_vmap": "<= 1.3", "fastest_library_over_metatune": ">= 3",
                                              "speedup_1_to_2_processes": ">= 1.6"},
               "threads": 1, "steps": args.steps, "repeats": args.repeats, "torch": torch.__version__,
               "load_average": os.getloadavg()}
    print(f"{'method':<22}{'s / meta-step':>14}{'tasks / s':>11}{'final query loss':>18}")
    for r in rows:
        print(f"{r['method']:<22}{r['seconds_per_meta_step']:>14.4f}{r['tasks_per_second']:>11.1f}"
              f"{r['final_query_loss']:>18.4f}")
    print(json.dumps(summary, indent=2))
    out = HERE.parent / "results" / "meta_training.json"
    write_text(out, json.dumps({"rows": rows, "summary": summary}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
