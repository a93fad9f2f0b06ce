"""Controller meta-tuning with the engine, on batched robots with adjoint rollouts."""
import pytest
import torch

import metatune as mt
from envs.meta_tuning import RobotMetaConfig, adapt_robots, fixed_start_tuner, learned_step_sizes, make_tuner
from envs.quadrotor_tracking import QuadrotorTracking
from envs.workflows import load_tuner, train
from metatune.checkpoint import load as load_checkpoint


def test_meta_training_lowers_cost_on_unseen_robots_and_checkpoint_round_trips(tmp_path):
    problem = QuadrotorTracking(horizon=60, dt=0.02)
    cfg = RobotMetaConfig(inner_steps=1, robots_per_task=2, outer_lr=0.1)
    unseen = problem.sample_tasks(3, seed=777)
    untuned = float(problem.loss(problem.batch_params(3), unseen, grad="autograd"))
    summary = train("quadrotor", tmp_path / "run", 4, cfg, horizon=60, dt=0.02, progress=False)
    assert summary["last_outer_loss"] < summary["first_loss"]
    loaded_problem, tuner = load_tuner(tmp_path / "run")
    assert loaded_problem.horizon == 60
    start = tuner.init(unseen).detach()
    assert float(problem.loss(start, unseen, grad="autograd")) < untuned
    # Meta-SGD learned one step size per gain, and a step with them lowers each robot's cost
    lrs = learned_step_sizes(tuner)
    assert lrs.shape == start.shape[1:] and not torch.allclose(lrs, torch.full_like(lrs, cfg.inner_lr))
    _, losses = adapt_robots(problem, tuner, unseen, 1)
    assert (losses[1] < losses[0]).all()
    run = tmp_path / "run"
    assert (run / "training.png").is_file() and (run / "log.jsonl").read_text().count("\n") == 4
    assert {"config.json", "checkpoint.pt", "metrics.json"} <= {p.name for p in run.iterdir()}


def test_engine_adaptation_from_a_fixed_start_is_plain_gradient_descent():
    problem = QuadrotorTracking(horizon=20, dt=0.02)
    tasks = problem.sample_tasks(2, seed=5)
    start = problem.batch_params(2)
    params, costs = adapt_robots(problem, fixed_start_tuner(start, 0.3, problem), tasks, 1)
    x = start.clone().requires_grad_()
    (g,) = torch.autograd.grad(problem.loss(x, tasks), x)
    torch.testing.assert_close(params, start - 0.3 * g)
    torch.testing.assert_close(costs[0], problem.robot_losses(start, tasks).detach())


def test_interrupted_training_resumes_to_the_uninterrupted_checkpoint(tmp_path):
    cfg = RobotMetaConfig(inner_steps=1, robots_per_task=2, outer_lr=0.1, init="neural")
    kw = dict(horizon=20, dt=0.02, progress=False, checkpoint_every=1)
    train("quadrotor", tmp_path / "whole", 4, cfg, **kw)
    train("quadrotor", tmp_path / "parts", 2, cfg, **kw)   # stopped after 2 steps, then run again to 4
    resumed = train("quadrotor", tmp_path / "parts", 4, cfg, **kw)
    assert resumed["resumed"] and resumed["steps"] == 4
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt", "robot", "meta_tuner")
    b = load_checkpoint(tmp_path / "parts" / "checkpoint.pt", "robot", "meta_tuner")
    for key in a["init"]:
        assert torch.equal(a["init"][key], b["init"][key]), key
    assert torch.equal(a["log_lr"][0], b["log_lr"][0])
    assert (tmp_path / "parts" / "log.jsonl").read_text().count("\n") == 4  # appended, not restarted
    with pytest.raises(mt.MetatuneError, match="holds another run"):
        train("quadrotor", tmp_path / "parts", 5, RobotMetaConfig(inner_steps=1, robots_per_task=3), **kw)


def test_neural_gain_policy_meta_trains_through_adjoint_rollouts():
    problem = QuadrotorTracking(horizon=30, dt=0.02)
    tuner = make_tuner(problem, RobotMetaConfig(init="neural", method="fomaml", inner_steps=1, robots_per_task=2))
    before = [p.detach().clone() for p in tuner.init.net.parameters()]
    tuner.train(2, progress=False)
    after = list(tuner.init.net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_task_distribution_respects_ranges_and_seed_names_the_robots():
    from envs.quadrotor_tracking import QUAD_TASKS

    a, b = QUAD_TASKS.sample(20, torch.Generator().manual_seed(1)), QUAD_TASKS.sample(20, torch.Generator().manual_seed(1))
    assert a == b and a != QUAD_TASKS.sample(20, torch.Generator().manual_seed(2))
    for task in a:
        for key, (lo, hi) in QUAD_TASKS.ranges.items():
            assert lo <= task.params[key] <= hi
        assert all(abs(w) <= m for w, m in zip(task.params["wind"], QUAD_TASKS.wind))
        assert all(0 <= g <= m for g, m in zip(task.gust, QUAD_TASKS.gust))
        assert task.params["ixx"] + task.params["iyy"] >= task.params["izz"]  # MuJoCo's inertia inequality
