"""The PNGs a robotics user looks at: reference vs tracked trajectories, and cost over steps."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from matplotlib.figure import Figure

from envs.tuning_problem import Trajectory
from metatune.atomic import save_figure


def _save(fig: Figure, path: Path) -> Path:
    return save_figure(fig, path)


def plot_tracking(runs: dict[str, Trajectory], path: Path, title: str, robot: int = 0) -> Path:
    """Reference vs tracked for one robot of each run: the x-y plane for 3D tracking, else time series."""
    runs = {name: replace(tr, time=tr.time.cpu(), states=tr.states.cpu(), reference=tr.reference.cpu(),
                          tracked=tr.tracked.cpu()) for name, tr in runs.items()}  # matplotlib reads CPU arrays
    first = next(iter(runs.values()))
    planar = first.labels[:2] == ("x", "y")
    dims = len(first.labels)
    if planar:
        fig = Figure(figsize=(11, 4.2))
        axes = fig.subplots(1, 2)
        ref = first.reference[:, robot]
        axes[0].plot(ref[:, 0], ref[:, 1], "k--", lw=2, label="reference")
        for name, tr in runs.items():
            axes[0].plot(tr.tracked[:, robot, 0], tr.tracked[:, robot, 1], lw=1.5,
                         label=f"{name} (RMSE {float(tr.rmse()[robot]):.3f} m)")
            err = (tr.tracked[:, robot] - tr.reference[:, robot]).norm(dim=-1)
            axes[1].plot(tr.time[:, robot], err, label=name)
        axes[0].set(xlabel="x [m]", ylabel="y [m]", title="figure-eight, top view")
        axes[0].axis("equal")
        axes[1].set(xlabel="time [s]", ylabel="position error [m]", title="tracking error")
        for ax in axes:
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    else:
        fig = Figure(figsize=(5.5 * dims, 3.8))
        axes = fig.subplots(1, dims)
        for d, ax in enumerate(axes if dims > 1 else [axes]):
            ax.plot(first.time[:, robot], first.reference[:, robot, d], "k--", lw=2, label="reference")
            for name, tr in runs.items():
                ax.plot(tr.time[:, robot], tr.tracked[:, robot, d], lw=1.5,
                        label=f"{name} (RMSE {float(tr.rmse()[robot]):.3f})")
            ax.set(xlabel="time [s]", ylabel=first.labels[d])
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def plot_curves(curves: dict[str, list[float]], path: Path, title: str, xlabel: str, ylabel: str,
                log: bool = True) -> Path:
    """Cost (or any metric) over adaptation or training steps, one line per run."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, ys in curves.items():
        ax.plot(range(len(ys)), ys, "o-", ms=3, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if log and all(y > 0 for ys in curves.values() for y in ys):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
