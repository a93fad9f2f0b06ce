"""Training curves of the meta-learned fit as a PNG."""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from metatune.atomic import save_figure


def plot_training(pretrain: list[float], meta: list[dict], path: Path) -> None:
    """Regressor pretraining loss and meta-training outer / inner losses, written atomically."""
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2)
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
    save_figure(fig, path, dpi=90)
