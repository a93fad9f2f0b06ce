"""`metatune robot train|adapt|evaluate`: a real tiny run, and bad input exiting 2 with a named problem."""
import json

import pytest

from metatune.cli import main


def test_train_then_adapt_writes_plots_and_metrics(tmp_path, capsys):
    ckpt = tmp_path / "run"
    assert main(["robot", "train", "--task", "pendulum", "--steps", "1", "--horizon", "30",
                 "--robots-per-task", "1", "--inner-steps", "1", "--out", str(ckpt)]) == 0
    out = tmp_path / "adapt"
    assert main(["robot", "adapt", "--checkpoint", str(ckpt), "--steps", "1", "--out", str(out),
                 "--backend", "mujoco", "--physics", "mujoco", "--param", "payload_pole=0.05"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["robots"][0]["params"]["payload_pole"] == 0.05
    assert len(metrics["meta-tuned"]["cost_by_step"]) == 2 and len(metrics["untuned"]["rmse_adapted"]) == 1
    for png in ("tracking.png", "adaptation.png"):
        assert (out / png).stat().st_size > 10_000


@pytest.mark.parametrize("argv, message", [
    (["robot", "adapt", "--task", "quadrotor", "--param", "rotors=6"], "no physical parameter"),
    (["robot", "adapt", "--task", "quadrotor", "--param", "mass"], "key=value"),
    (["robot", "evaluate", "--checkpoint", "/nonexistent/run"], "not found: /nonexistent/run"),
    (["robot", "adapt", "--task", "cartpole", "--robots", "0"], "--robots: must be >= 1"),
    (["robot", "train", "--task", "pendulum", "--robots-per-task", "0"], "--robots-per-task: must be >= 1"),
    (["robot", "train", "--task", "pendulum", "--method", "maml"], "first-order"),
    (["robot", "adapt", "--task", "quadrotor", "--physics", "mujoco"], "not part of the MJCF"),
])
def test_bad_input_exits_2_naming_the_problem(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
