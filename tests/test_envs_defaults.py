"""Every built-in robot task meta-trains with its defaults (real horizon, robot count, step sizes) without abort.

At cartpole's defaults a sampled robot is not stabilised by the nominal gain, and an inner step of 0.3 on a
log-gain could move it by 7: the inner steps are held to a trust region and halved when a rollout diverges,
and a robot whose closed loop still diverges is left out of the loss and counted.
"""
import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("task", ["cartpole", "pendulum", "quadrotor"])
def test_train_with_defaults_at_the_real_horizon_and_robot_count(task, tmp_path):
    out = tmp_path / task
    run = subprocess.run([sys.executable, "-m", "metatune", "robot", "train", "--task", task, "--steps", "3",
                          "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 3  # logged every step (a step whose every robot diverged logs no loss)
