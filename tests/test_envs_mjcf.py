"""`metatune robot --mjcf`: controller tuning on a user's MJCF model (dm_control's, which nobody here wrote)."""
import json
import os
import subprocess
import sys

import dm_control
import numpy as np
import pytest

from envs.mjcf_problem import MjcfSpec, MjcfTracking, parse_ranges, randomised
from metatune.errors import MetatuneError

SUITE = os.path.join(os.path.dirname(dm_control.__file__), "suite")
REACHER = os.path.join(SUITE, "reacher.xml")


def metatune(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "metatune", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def write_reference(path, seconds=2.0, dt=0.02):
    t = np.arange(0, seconds + dt / 2, dt)
    rows = ["time,shoulder,wrist"] + [f"{ti},{0.8 * np.sin(np.pi * ti)},{0.3 * np.sin(np.pi * ti + 1)}" for ti in t]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_train_then_evaluate_on_dm_control_reacher_beats_untuned_gains(tmp_path):
    ref = write_reference(tmp_path / "ref.csv")
    train = metatune("robot", "train", "--mjcf", REACHER, "--reference", ref, "--randomise", "mass=0.5:2.0",
                     "--randomise", "damping=0.5:2.0", "--horizon", 100, "--steps", 6, "--robots-per-task", 2,
                     "--out", tmp_path / "train")
    assert train.returncode == 0, train.stderr[-2000:]
    ev = metatune("robot", "evaluate", "--checkpoint", tmp_path / "train", "--robots", 6, "--steps", 0,
                  "--out", tmp_path / "eval")
    assert ev.returncode == 0, ev.stderr[-2000:]
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())["summary"]
    # held-out robots (seed 12345, never drawn in training): the meta-tuned gains track better than hand-set ones
    assert summary["meta-tuned"]["rmse_start"] < 0.97 * summary["untuned"]["rmse_start"]
    gains = json.loads((tmp_path / "eval" / "gains.json").read_text())
    assert set(gains["meta-tuned"][0]) == {"shoulder", "wrist"}
    assert all(g["kp"] > 0 and g["kd"] > 0 for g in gains["meta-tuned"][0].values())
    assert (tmp_path / "eval" / "tracking.png").stat().st_size > 10_000


def test_reference_csv_is_interpolated_onto_the_model_time_step(tmp_path):
    ref = tmp_path / "ref.csv"
    ref.write_text("time,wrist\n0,0\n1,1\n")  # a ramp sampled twice, the model steps at 0.02 s
    problem = MjcfTracking(MjcfSpec(mjcf=REACHER, reference=str(ref)), horizon=50)
    wrist = problem.q_ref[:, problem.joint_names.index("wrist")]
    assert np.allclose(wrist.numpy(), np.arange(51) * 0.02)
    shoulder = problem.q_ref[:, problem.joint_names.index("shoulder")]
    assert np.allclose(shoulder.numpy(), float(problem.x0[problem.qadr[0]]))  # not named: holds the start pose


def test_randomised_model_scales_the_physical_parameters():
    problem = MjcfTracking(MjcfSpec(mjcf=REACHER), horizon=10)
    base = problem.base
    m = randomised(base, {"mass": 2.0, "damping": 0.5, "gear": 1.5})
    assert np.allclose(m.body_mass[1:], 2 * base.body_mass[1:])
    assert np.allclose(m.body_inertia[1:], 2 * base.body_inertia[1:])
    assert np.allclose(m.dof_damping, 0.5 * base.dof_damping)
    assert np.allclose(m.actuator_gear[:, 0], 1.5 * base.actuator_gear[:, 0])
    assert np.allclose(base.body_mass, problem.base.body_mass)  # the base model is untouched


def test_bad_mjcf_task_inputs_are_named(tmp_path):
    ref = tmp_path / "ref.csv"
    ref.write_text("time,elbow\n0,0\n1,1\n")
    with pytest.raises(MetatuneError, match="elbow"):  # neither a controlled joint nor a site axis
        MjcfTracking(MjcfSpec(mjcf=REACHER, reference=str(ref)), horizon=10)
    with pytest.raises(MetatuneError, match="no actuator 'hand'"):
        MjcfTracking(MjcfSpec(mjcf=REACHER, actuators=["hand"]), horizon=10)
    with pytest.raises(MetatuneError, match="lo:hi"):
        parse_ranges(["mass=2"])
    with pytest.raises(MetatuneError, match="choose from"):
        parse_ranges(["colour=0.5:1"])
    servo = tmp_path / "servo.xml"
    servo.write_text("<mujoco><worldbody><body><joint name='j' type='hinge'/><geom size='0.1' mass='1'/></body>"
                     "</worldbody><actuator><position joint='j' kp='10'/></actuator></mujoco>")
    with pytest.raises(MetatuneError, match="servo"):
        MjcfTracking(MjcfSpec(mjcf=str(servo)), horizon=10)


def test_cli_reports_bad_mjcf_options_in_one_line(tmp_path):
    run = metatune("robot", "train", "--setpoint", "wrist=0.3", "--out", tmp_path / "o")
    assert run.returncode == 2 and "needs --mjcf" in run.stderr and "Traceback" not in run.stderr
    run = metatune("robot", "evaluate", "--mjcf", tmp_path / "missing.xml", "--out", tmp_path / "o")
    assert run.returncode == 2 and "missing.xml" in run.stderr and "Traceback" not in run.stderr


def test_site_targets_in_the_reference_add_a_differentiable_task_space_cost(tmp_path):
    import torch

    ref = tmp_path / "ref.csv"
    ref.write_text("time,proximal,tip.x,tip.z\n0,0.0,0.0,0.3\n1,0.5,0.1,0.35\n")  # dm_control finger's fingertip site
    problem = MjcfTracking(MjcfSpec(mjcf=os.path.join(SUITE, "finger.xml"), reference=str(ref),
                                    randomise={"mass": [0.8, 1.2]}), horizon=30)
    target = problem.site_targets["tip"]
    assert target.shape == (31, 3) and float(target[-1, 0]) == pytest.approx(0.1 * 30 * problem.dt)
    tasks = problem.sample_tasks(2, seed=0)
    params = problem.batch_params(2).requires_grad_()
    (g,) = torch.autograd.grad(problem.loss(params, tasks), params)
    v = torch.randn(params.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = 1e-6
    with torch.no_grad():
        fd = float((problem.loss(params + h * v, tasks) - problem.loss(params - h * v, tasks)) / (2 * h))
    assert float((g * v).sum()) == pytest.approx(fd, rel=1e-5)
    bad = tmp_path / "bad.csv"
    bad.write_text("time,tip.w\n0,0\n1,1\n")
    with pytest.raises(MetatuneError, match="tip.w"):
        MjcfTracking(MjcfSpec(mjcf=os.path.join(SUITE, "finger.xml"), reference=str(bad)), horizon=10)


@pytest.mark.parametrize("controller", ["pd", "linear"])
def test_mjcf_losses_in_c_equal_the_adjoints(tmp_path, controller):
    """grad="forward" runs each robot's closed loop in C from the problem's own policy and cost written as
    LinearFeedback and QuadraticCost: the same loss as the torch closed loop, the same gradient."""
    import torch

    ref = tmp_path / "ref.csv"
    ref.write_text("time,proximal,tip.x,tip.z\n0,0.0,0.0,0.3\n1,0.5,0.1,0.35\n")
    problem = MjcfTracking(MjcfSpec(mjcf=os.path.join(SUITE, "finger.xml"), reference=str(ref),
                                    controller=controller, randomise={"mass": [0.8, 1.2]}), horizon=40)
    gains, columns = problem.init_params().numel(), 2 * problem.nv + problem.na + problem.nu
    assert problem.grad == ("forward" if gains <= columns else "adjoint")
    tasks = problem.sample_tasks(2, seed=1)
    params = problem.batch_params(2)
    params = params + 0.05 * torch.randn(params.shape, generator=torch.Generator().manual_seed(0), dtype=params.dtype)
    out = {}
    for grad in ("forward", "adjoint"):
        leaf = params.clone().requires_grad_()
        losses = problem.robot_losses(leaf, tasks, grad)
        out[grad] = (losses.detach(), torch.autograd.grad(losses.sum(), leaf)[0])
    assert torch.allclose(out["forward"][0], out["adjoint"][0], rtol=1e-12)
    assert torch.allclose(out["forward"][1], out["adjoint"][1], rtol=1e-5, atol=1e-6 * float(out["adjoint"][1].abs().max()))
