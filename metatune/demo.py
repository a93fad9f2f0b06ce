"""The engine's part of `metatune demo`: few-shot sinusoid regression meta-learned with Meta-SGD, and a
ridge penalty tuned by implicit hypergradients, each written as a PNG and JSON."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from metatune.atomic import save_figure, write_json
from metatune.meta import MetaConfig, MetaTuner
from metatune.solve import solve
from metatune.tree import Tensors

Params = tuple[Tensor, ...]


def _mlp_init(gen: torch.Generator, hidden: int = 40) -> Params:
    def layer(n_in: int, n_out: int) -> tuple[Tensor, Tensor]:
        return torch.randn(n_in, n_out, generator=gen) / math.sqrt(n_in), torch.zeros(n_out)

    return (*layer(1, hidden), *layer(hidden, hidden), *layer(hidden, 1))


def mlp(params: Tensors, x: Tensor) -> Tensor:  # x: [N, 1] -> [N, 1]
    # MetaTuner hands parameters back in its init's structure, here the tuple _mlp_init builds
    assert isinstance(params, tuple), "the sine MLP's parameters are a tuple of six tensors"
    w1, b1, w2, b2, w3, b3 = params
    return torch.relu(torch.relu(x @ w1 + b1) @ w2 + b2) @ w3 + b3


class SineTask:
    """y = a sin(x + phase) on [-5, 5], with K support and K query points (drawn on the CPU, kept on `device`)."""

    def __init__(self, gen: torch.Generator, k: int = 10, device: torch.device | str = "cpu"):
        self.amp = float(torch.empty(1).uniform_(0.1, 5.0, generator=gen))
        self.phase = float(torch.empty(1).uniform_(0.0, math.pi, generator=gen))
        self.xs, self.xq = (torch.empty(k, 1).uniform_(-5, 5, generator=gen).to(device) for _ in range(2))

    def f(self, x: Tensor) -> Tensor:
        return self.amp * torch.sin(x + self.phase)


def _mse(params: Tensors, x: Tensor, y: Tensor) -> Tensor:
    return ((mlp(params, x) - y) ** 2).mean()


def sine_meta_learning(out: Path, steps: int = 600, device: torch.device | str = "cpu") -> dict:
    gen = torch.Generator().manual_seed(0)
    init = tuple(t.to(device) for t in _mlp_init(gen))
    cfg = MetaConfig(method="metasgd", inner_steps=3, inner_lr=0.01, outer_lr=1e-2, meta_batch=4)
    tuner = MetaTuner(init, lambda p, t: _mse(p, t.xs, t.f(t.xs)), lambda p, t: _mse(p, t.xq, t.f(t.xq)),
                      sample_tasks=lambda n: [SineTask(gen, device=device) for _ in range(n)], config=cfg,
                      log_path=out / "sine_train.jsonl")
    plain = MetaTuner(init, tuner.inner_loss, tuner.outer_loss, config=MetaConfig(method="maml", inner_steps=3,
                                                                                    inner_lr=0.01))
    unseen = [SineTask(torch.Generator().manual_seed(1000 + i), device=device) for i in range(50)]
    before = plain.evaluate(unseen, steps=3)
    tuner.train(steps)
    after = tuner.evaluate(unseen, steps=3)
    tuner.save(out / "sine_metasgd.pt")

    from matplotlib.figure import Figure  # a bare Figure: no pyplot state, no global backend

    fig = Figure(figsize=(17, 3.6))
    axes = fig.subplots(1, 4)
    grid = torch.linspace(-5, 5, 200).unsqueeze(1)  # plotted from the CPU; the fits run on the device
    for ax, task in zip(axes[:3], unseen[:3]):
        xs = task.xs.cpu()
        ax.plot(grid, task.f(grid), "k-", lw=2, label="true")
        ax.plot(xs, task.f(xs), "ko", label="support (10)")
        with torch.no_grad():
            ax.plot(grid, mlp(plain.adapt(task, 3).params, grid.to(device)).cpu(), "C1--",
                    label="3 steps from random init")
            ax.plot(grid, mlp(tuner.adapt(task, 3).params, grid.to(device)).cpu(), "C0-", label="3 steps, Meta-SGD")
        ax.set_title(f"a={task.amp:.2f}, phase={task.phase:.2f}")
    axes[0].legend(fontsize=7)
    ks = list(range(4))
    axes[3].semilogy(ks, before["inner_loss_by_step"], "C1o--", label="random init, fixed lr")
    axes[3].semilogy(ks, after["inner_loss_by_step"], "C0o-", label="Meta-SGD")
    axes[3].set_xlabel("inner steps")
    axes[3].set_ylabel("support MSE (50 unseen tasks)")
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "sine_few_shot.png")
    return {"query_mse_untrained": before["outer_loss"], "query_mse_metasgd": after["outer_loss"],
            "support_mse_by_step_untrained": before["inner_loss_by_step"],
            "support_mse_by_step_metasgd": after["inner_loss_by_step"], "meta_steps": steps}


def ridge_hyperparameter_tuning(out: Path, iters: int = 60, device: torch.device | str = "cpu") -> dict:
    """Gradient descent on log(lambda) of ridge regression (Gauss-Newton inner solve, implicit hypergradients),
    against a grid search (data drawn on the CPU, solved on `device`)."""
    gen = torch.Generator().manual_seed(0)
    X, Xv = torch.randn(30, 20, generator=gen, dtype=torch.float64), torch.randn(200, 20, generator=gen, dtype=torch.float64)
    w_true = torch.randn(20, generator=gen, dtype=torch.float64)
    y = X @ w_true + 2.0 * torch.randn(30, generator=gen, dtype=torch.float64)
    yv = Xv @ w_true + 2.0 * torch.randn(200, generator=gen, dtype=torch.float64)
    X, Xv, y, yv = (t.to(device) for t in (X, Xv, y, yv))

    def residuals(w: Tensor, log_lam: Tensor) -> Tensor:  # 0.5|r|^2 = ridge objective
        return torch.cat([X @ w - y, torch.exp(0.5 * log_lam) * w])

    def val_loss(log_lam: Tensor, hypergrad: str = "implicit") -> Tensor:
        w = solve(residuals, torch.zeros(20, dtype=torch.float64, device=X.device), log_lam, solver="gauss_newton", lr=1.0,
                  steps=3, tol=1e-9, hypergrad=hypergrad)
        return ((Xv @ w - yv) ** 2).mean()

    log_lam = torch.tensor(-3.0, dtype=torch.float64, device=X.device, requires_grad=True)
    opt = torch.optim.Adam([log_lam], lr=0.2)
    trace = []
    for _ in range(iters):
        loss = val_loss(log_lam)
        trace.append((float(log_lam.detach()), float(loss.detach())))
        opt.zero_grad()
        loss.backward()
        opt.step()
    grid = torch.linspace(-4, 6, 201, dtype=torch.float64)
    with torch.no_grad():
        curve = torch.stack([val_loss(g.to(X.device), "none") for g in grid]).cpu()
    best = int(curve.argmin())

    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(grid, curve, "k-", label="validation MSE (grid)")
    ax.plot([t[0] for t in trace], [t[1] for t in trace], "C0.-", label="hypergradient descent")
    ax.axvline(float(grid[best]), color="gray", ls=":", label="grid optimum")
    ax.set_xlabel("log lambda")
    ax.set_ylabel("validation MSE")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "ridge_hypergradient.png")
    return {"log_lambda_found": trace[-1][0], "val_mse_found": trace[-1][1],
            "log_lambda_grid_best": float(grid[best]), "val_mse_grid_best": float(curve[best]),
            "val_mse_start": trace[0][1]}


def engine_demo(out: Path, device: torch.device | str = "cpu") -> dict:
    """The engine's demo on `device`: writes its figures, metrics.json, log and checkpoint into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    result = {"sine_few_shot": sine_meta_learning(out, device=device),
              "ridge_hypergradient": ridge_hyperparameter_tuning(out, device=device)}
    write_json(out / "metrics.json", result)
    return {"query_mse_untrained": round(result["sine_few_shot"]["query_mse_untrained"], 4),
            "query_mse_metasgd": round(result["sine_few_shot"]["query_mse_metasgd"], 4),
            "ridge_log_lambda": round(result["ridge_hypergradient"]["log_lambda_found"], 3),
            "ridge_log_lambda_grid": round(result["ridge_hypergradient"]["log_lambda_grid_best"], 3)}
