"""Controllers against closed forms: LQR, hover equilibrium, disturbance observer, gradients."""
import math

import pytest
import torch

import metatune as mt
from envs import make
from envs.cartpole_balance import CartpoleBalance
from envs.figure_eight import FigureEight
from envs.gain_init import NeuralGains
from envs.lqr import linearize, lqr_gain
from envs.pendulum_swingup import PendulumSwingUp
from envs.quadrotor_tracking import QuadrotorTracking
from envs.tasks import RobotTask

F64 = torch.float64


def test_lqr_gain_matches_scalar_riccati_closed_form():
    a, b, q, r = 1.1, 0.5, 2.0, 0.3
    # p = q + a^2 p - a^2 b^2 p^2 / (r + b^2 p)  <=>  b^2 p^2 + (r - a^2 r - q b^2) p - q r = 0
    c1, c0 = r - a * a * r - q * b * b, -q * r
    p = (-c1 + math.sqrt(c1 * c1 - 4 * b * b * c0)) / (2 * b * b)
    k = lqr_gain(*(torch.tensor([[v]], dtype=F64) for v in (a, b, q, r)))
    assert abs(float(k) - a * b * p / (r + b * b * p)) < 1e-9


def test_linearize_matches_finite_differences_and_lqr_stabilises_cartpole():
    env = make("cartpole")
    x_eq = torch.tensor([0.0, math.pi, 0.0, 0.0], dtype=F64)
    u_eq = torch.zeros(1, dtype=F64)
    a, b = linearize(env.step, x_eq, u_eq)
    h = 1e-6
    for j in range(4):
        e = torch.zeros(4, dtype=F64)
        e[j] = h
        fd = (env.step(x_eq + e, u_eq) - env.step(x_eq - e, u_eq)) / (2 * h)
        assert torch.allclose(a[:, j], fd, atol=1e-7)
    k = CartpoleBalance().nominal_gain()
    closed = a - b @ k
    assert torch.linalg.eigvals(a).abs().max() > 1.0  # upright is unstable on its own
    assert torch.linalg.eigvals(closed).abs().max() < 1.0


def test_gain_floors_and_caps_keep_the_quadrotor_loop_stable_at_any_gain():
    import itertools

    from envs.geometric_controller import FLOORS, discrete_limits, saturate

    limits, floors = discrete_limits(0.02, observer=True), torch.tensor(FLOORS, dtype=F64)
    g = torch.tensor([9.0, 6.0, 400.0, 40.0, 5.0], dtype=F64)
    assert torch.allclose(saturate(g, limits, floors), g, rtol=0.1)  # hand-set gains pass nearly unchanged
    assert (saturate(g * 1e6, limits, floors) <= limits * (1 + 1e-12)).all()
    assert (saturate(g * 1e-6, limits, floors) >= 0.99 * floors).all()  # the cap trims a floor by < 1%
    problem = QuadrotorTracking(horizon=150, dt=0.02)
    tasks = problem.sample_tasks(3, seed=0)
    # every corner of the gain box: each gain 400x below or above the hand-set value, on each robot
    corners = torch.tensor(list(itertools.product([-6.0, 6.0], repeat=5)), dtype=F64)[:, None, :]
    wild = (problem.init_params() + corners).repeat(len(tasks), 1, 1)
    losses = problem.robot_losses(wild, [t for t in tasks for _ in range(32)], grad="autograd")
    assert torch.isfinite(losses).all()  # some corners track badly, but none diverges to a non-finite state


def test_geometric_controller_hovers_at_equilibrium_with_hover_thrust():
    problem = QuadrotorTracking(reference=FigureEight(size=0.0), horizon=10)
    step, x0, policy, _ = problem.closed_loop([RobotTask("quadrotor", {"drag": 0.0})])
    u = policy(x0, 0, problem.batch_params(1))
    hover = 1.0 * 9.81 / 4  # nominal mass 1 kg
    assert torch.allclose(u[0, :4], torch.full((4,), hover, dtype=F64), atol=1e-9)
    assert torch.allclose(u[0, 4:], torch.zeros(3, dtype=F64), atol=1e-9)  # observer at rest
    assert torch.allclose(step(x0, u)[0, :16], x0[0, :16], atol=1e-12)


def test_disturbance_observer_estimates_the_wind_force():
    wind, drag = (2.0, -1.0, 0.0), 0.3
    problem = QuadrotorTracking(reference=FigureEight(size=0.0), horizon=600, dt=0.01)
    task = RobotTask("quadrotor", {"drag": drag, "wind": wind})
    step, x0, policy, _ = problem.closed_loop([task])
    params = problem.batch_params(1)
    with torch.no_grad():
        states = mt.rollout(step, x0, policy, params, problem.horizon, grad="autograd").states
    x = states[-1, 0]
    d_hat = x[13:16] + params[0, 0, 4].exp() * 1.0 * x[7:10]
    true = drag * (torch.tensor(wind, dtype=F64) - x[7:10])
    assert torch.allclose(d_hat, true, atol=0.02 * true.norm())
    assert (x[:3] - problem.reference(x[16])[0]).norm() < 0.01  # the observer removes the steady offset


def test_adjoint_gain_gradient_matches_finite_differences():
    problem = QuadrotorTracking(horizon=25, dt=0.02)
    tasks = problem.sample_tasks(2, seed=5)
    params = problem.batch_params(2)
    leaf = params.clone().requires_grad_()
    (grad,) = torch.autograd.grad(problem.loss(leaf, tasks), leaf)
    h = 1e-6
    for idx in [(0, 0, 0), (1, 0, 2), (1, 0, 4)]:
        e = torch.zeros_like(params)
        e[idx] = h
        fd = (problem.loss(params + e, tasks, grad="autograd") - problem.loss(params - e, tasks, grad="autograd")) / (2 * h)
        assert abs(float(fd) - float(grad[idx])) < 1e-6 * max(1.0, abs(float(fd)))


def test_adjoint_and_forward_sensitivity_agree_on_swing_up():
    problem = PendulumSwingUp(horizon=40)
    tasks = problem.sample_tasks(2, seed=6)
    grads = []
    for mode in ("adjoint", "forward"):
        leaf = problem.batch_params(2).requires_grad_()
        grads.append(torch.autograd.grad(problem.loss(leaf, tasks, grad=mode), leaf)[0])
    assert grads[0].abs().max() > 0 and torch.allclose(grads[0], grads[1], atol=1e-10)


def test_mujoco_backend_reproduces_torch_closed_loop():
    for problem in (PendulumSwingUp(horizon=60), QuadrotorTracking(horizon=40, dt=0.02)):
        tasks = problem.sample_tasks(2, seed=8)
        params = problem.batch_params(2)
        torch_run, mj_run = problem.simulate(params, tasks), problem.simulate_mujoco(params, tasks)
        assert torch.allclose(torch_run.states, mj_run.states, atol=1e-9)


def test_neural_gain_policy_starts_at_base_gains_and_depends_on_features():
    problem = PendulumSwingUp(horizon=20)
    policy = NeuralGains(problem)
    tasks = problem.sample_tasks(3, seed=1)
    out = policy(tasks)
    assert out.shape == (3, 3) and torch.allclose(out, problem.batch_params(3))
    torch.nn.init.normal_(policy.net[-1].weight)
    out = policy(tasks)
    assert not torch.allclose(out[0], out[1])
    assert torch.autograd.grad(out.sum(), policy.net[0].weight)[0].abs().sum() > 0


def test_pd_on_two_link_arm_settles_at_target_and_schedule_interpolates():
    from envs.pd import ScheduledPD, pd_log_gains

    arm = make("arm2")
    target = torch.tensor([0.7, -0.4, 0.0, 0.0], dtype=F64)
    pd = ScheduledPD(arm, lambda t: target, horizon=600)
    with torch.no_grad():
        out = mt.rollout(arm.step, torch.zeros(4, dtype=F64), pd, pd_log_gains(5.0, 1.0, 2), 600, grad="autograd")
    assert (out.states[-1] - target).abs().max() < 1e-3  # no gravity: PD has no steady-state error
    # two knots: gains at the midpoint are the geometric mean of the knots' (log-linear interpolation)
    two = torch.stack([pd_log_gains(4.0, 1.0, 2)[0], pd_log_gains(16.0, 4.0, 2)[0]])
    pd_mid = ScheduledPD(arm, lambda t: target, horizon=3)
    x = torch.zeros(4, dtype=F64)
    assert torch.allclose(pd_mid(x, 1, two), 8.0 * target[:2])


def test_adaptation_gradient_through_mujoco_matches_torch_model():
    """The same closed loop differentiated through MuJoCo (mjd_transitionFD) and through the torch model."""
    problem = CartpoleBalance(horizon=40)
    tasks = problem.sample_tasks(2, seed=4)
    grads = {}
    for physics in ("torch", "mujoco"):
        leaf = problem.batch_params(2).requires_grad_()
        (grads[physics],) = torch.autograd.grad(problem.robot_losses(leaf, tasks, physics=physics).sum(), leaf)
    assert torch.allclose(grads["mujoco"], grads["torch"], rtol=1e-4, atol=1e-6 * grads["torch"].abs().max())


def test_diverging_torch_closed_loop_raises_named_error_not_nan_gradient():
    problem = CartpoleBalance(horizon=200)
    tasks = problem.sample_tasks(1, seed=0)
    leaf = (problem.batch_params(1) + 6.0).requires_grad_()  # every LQR gain entry x400
    with pytest.raises(mt.MetatuneError, match="diverged"):
        problem.loss(leaf, tasks).backward()


def test_gain_schedule_interpolates_log_gains_and_takes_time_as_a_tensor():
    from torch.func import vmap

    from envs.gain_schedule import scheduled

    knots = torch.tensor([[0.0, 1.0], [2.0, -1.0], [4.0, 3.0]], dtype=F64)  # K = 3 knots over horizon 11
    assert torch.allclose(scheduled(knots, 0, 11), knots[0].exp())
    assert torch.allclose(scheduled(knots, 5, 11), knots[1].exp())  # knot 1 sits at step 5
    assert torch.allclose(scheduled(knots, 10, 11), knots[2].exp())
    assert torch.allclose(scheduled(knots, 3, 11), (0.4 * knots[0] + 0.6 * knots[1]).exp())  # s = 0.6
    assert torch.allclose(scheduled(knots, 50, 11), knots[2].exp())  # past the horizon: the last knot
    ts = torch.arange(11)
    by_loop = torch.stack([scheduled(knots, int(t), 11) for t in ts])
    assert torch.allclose(vmap(lambda t: scheduled(knots, t, 11))(ts), by_loop)  # rollouts may vmap over t
