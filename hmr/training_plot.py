"""Training curves of the meta-learned fit as a PNG."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training(pretrain: list[float], meta: list[dict], path: Path) -> None:
    """Regressor pretraining loss and meta-training outer / inner losses, written atomically."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(pretrain, lw=0.8)
    axes[0].set(title="regressor pretraining", xlabel="step", ylabel="joint error (cm^2)", yscale="log")
    if meta:
        axes[1].plot([r["outer_loss"] for r in meta], label="outer: 3D joint error after the fit (cm^2)")
        ax2 = axes[1].twinx()
        ax2.plot([r["inner_loss_before"] for r in meta], "g:", lw=0.8, label="fit objective before")
        ax2.plot([r["inner_loss_after"] for r in meta], "g-", lw=0.8, label="fit objective after")
        ax2.set_yscale("log")
        ax2.legend(loc="upper right", fontsize=7)
    axes[1].set(title="meta-training", xlabel="step")
    axes[1].legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
