"""Controller meta-tuning with the engine, on batched robots with adjoint rollouts."""
import torch

from envs.meta_tuning import RobotMetaConfig, gradient_descent, learned_step_sizes, make_tuner
from envs.quadrotor_tracking import QuadrotorTracking
from envs.workflows import load_tuner, train


def test_meta_training_lowers_cost_on_unseen_robots_and_checkpoint_round_trips(tmp_path):
    problem = QuadrotorTracking(horizon=60, dt=0.02)
    cfg = RobotMetaConfig(inner_steps=1, robots_per_task=2, outer_lr=0.1)
    unseen = problem.sample_tasks(3, seed=777)
    untuned = float(problem.loss(problem.batch_params(3), unseen, grad="autograd"))
    summary = train("quadrotor", tmp_path / "t.pt", 4, cfg, horizon=60, dt=0.02, progress=False)
    assert summary["last_outer_loss"] < summary["first_loss"]
    loaded_problem, tuner = load_tuner(tmp_path / "t.pt")
    assert loaded_problem.horizon == 60
    start = tuner.init(unseen).detach()
    assert float(problem.loss(start, unseen, grad="autograd")) < untuned
    # Meta-SGD learned one step size per gain, and a step with them lowers each robot's cost
    lrs = learned_step_sizes(tuner)
    assert lrs.shape == start.shape[1:] and not torch.allclose(lrs, torch.full_like(lrs, cfg.inner_lr))
    _, losses = gradient_descent(problem, start, unseen, 1, lrs)
    assert (losses[1] < losses[0]).all()
    assert (tmp_path / "t.png").is_file() and (tmp_path / "t.jsonl").read_text().count("\n") == 4


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
