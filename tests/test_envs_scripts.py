"""scripts/robot_*.py: tiny real runs (20 steps, one robot) that write the tracking and adaptation plots and JSON."""
import json
import runpy
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.mark.parametrize("name, task", [("robot_pendulum_swingup", "pendulum"), ("robot_cartpole_balance", "cartpole"),
                                        ("robot_quadrotor_figure8", "quadrotor")])
def test_tuning_script_writes_tracking_and_adaptation_plots_and_metrics(name, task, tmp_path, monkeypatch):
    out = tmp_path / name
    monkeypatch.setattr(sys, "argv", [name, "--out", str(out), "--train-steps", "1", "--adapt-steps", "1",
                                      "--robots", "1", "--robots-per-task", "1", "--backend", "torch", "--horizon", "20"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(SCRIPTS / f"{name}.py"), run_name="__main__")
    assert done.value.code == 0
    for png in ("tracking.png", "adaptation.png", "train/training.png"):
        assert (out / png).stat().st_size > 10_000
    summary = json.loads((out / "summary.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert summary["task"] == task and {"untuned", "meta-tuned"} <= set(summary)
    assert len(metrics["meta-tuned"]["cost_by_step"]) == 2


def test_mjcf_tuning_script_runs_a_dm_control_model_end_to_end(tmp_path, monkeypatch):
    out = tmp_path / "reacher"
    monkeypatch.setattr(sys, "argv", ["robot_tune_mjcf", "--out", str(out), "--steps", "1", "--horizon", "30",
                                      "--robots", "2"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(SCRIPTS / "robot_tune_mjcf.py"), run_name="__main__")
    assert done.value.code == 0
    gains = json.loads((out / "eval" / "gains.json").read_text())
    assert set(gains) == {"untuned", "meta-tuned"} and set(gains["meta-tuned"][0]) == {"shoulder", "wrist"}
    assert (out / "eval" / "tracking.png").stat().st_size > 10_000
    assert (out / "reference.csv").read_text().startswith("time,shoulder,wrist\n")
