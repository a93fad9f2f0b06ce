"""grad="forward" through MuJoCo: the closed loop and its gains' sensitivities in C (envs/mujoco_closed_loop.py),
against plain-MuJoCo central differences of the whole cost and against the adjoint."""
import os

import mujoco
import numpy as np
import pytest
import torch
from mujoco_reference import CONTACT_CASES, SUITE, contact_case, plain_mujoco_cost

import metatune as mt
from envs import LinearFeedback, MujocoDynamics, QuadraticCost
from envs.mujoco_closed_loop import EXTENSION

if EXTENSION.load() is None:  # setup builds it; under CI a missing build is a failure, not a skip
    if os.environ.get("CI"):
        raise RuntimeError(f"the MuJoCo closed loop is not built: {EXTENSION.unavailable_reason()}")
    pytest.skip(f"the MuJoCo closed loop is not built: {EXTENSION.unavailable_reason()}", allow_module_level=True)


def suite(name):
    return mujoco.MjModel.from_xml_path(os.path.join(SUITE, f"{name}.xml"))


def gradient(dyn, x0, policy, cost, theta, horizon, grad):
    leaf = theta.clone().requires_grad_()
    out = mt.rollout(dyn.step, x0, policy, leaf, horizon, grad=grad, cost=cost, store_states=False)
    (g,) = torch.autograd.grad(out.cost.sum(), leaf)
    return float(out.cost.detach().sum()), g


@pytest.mark.parametrize("name,start,scale,seed,horizon", CONTACT_CASES)
def test_forward_through_contacts_matches_plain_mujoco_finite_differences(name, start, scale, seed, horizon):
    """The gain is one step along a random direction of the feedback matrix: d cost / d theta at 0 is the
    directional derivative that plain MuJoCo's central differences give."""
    model, x0, gains, direction, ref = contact_case(name, start, scale, seed, horizon)
    k, v = torch.from_numpy(gains), torch.from_numpy(direction)
    policy = LinearFeedback(lambda th: k + th[0] * v, scale=0.3)
    dyn = MujocoDynamics(model)
    total, g = gradient(dyn, torch.from_numpy(x0), policy, QuadraticCost(1.0, effort=0.1),
                        torch.zeros(1, dtype=torch.float64), horizon, "forward")
    assert total == pytest.approx(plain_mujoco_cost(model, gains, x0, horizon), rel=1e-12)
    assert abs(float(g[0]) - ref) <= 1e-4 * abs(ref)
    # (one gain's direction rarely straddles a contact here: test_forward_at_a_contact_switch makes it)


def test_forward_equals_adjoint_with_a_free_joint_time_varying_targets_and_sites():
    """Humanoid (free joint, a start whose quaternion is not unit length), a reference and a cost target that
    move, a site term, 3 gains: both modes differentiate the same piecewise-smooth rollout, so they agree to
    what their finite differences resolve (the sides agree to 1e-4 relative per step; measured 1e-7 here)."""
    model = suite("humanoid")
    rng = np.random.default_rng(2)
    nx, horizon, gains = model.nq + model.nv + model.na, 40, 3
    x0 = torch.from_numpy(np.concatenate([model.qpos0, np.zeros(model.nv)]) + 0.01 * rng.standard_normal(nx))
    k0 = torch.from_numpy(0.1 * rng.standard_normal((model.nu, nx)))
    proj = torch.from_numpy(rng.standard_normal((model.nu * nx, gains)) / np.sqrt(gains))
    ref = x0 + 0.02 * torch.from_numpy(rng.standard_normal((horizon, nx))).cumsum(0)
    policy = LinearFeedback(lambda th: k0 + (proj @ th).reshape(k0.shape), reference=ref, scale=0.3)
    sites = ["left_hand", "right_right_foot"]
    site_targets = torch.from_numpy(rng.standard_normal((horizon, 2, 3)))
    weights = torch.from_numpy(rng.uniform(0, 1, nx))
    dyn = MujocoDynamics(model)
    cost = QuadraticCost(weights, target=ref.flip(0), effort=0.05, sites=sites, site_targets=site_targets,
                         site_weight=0.5, dynamics=dyn)
    theta = 0.1 * torch.from_numpy(rng.standard_normal(gains))
    c_fwd, g_fwd = gradient(dyn, x0, policy, cost, theta, horizon, "forward")
    c_adj, g_adj = gradient(dyn, x0, policy, cost, theta, horizon, "adjoint")
    assert c_fwd == pytest.approx(c_adj, rel=1e-12)
    assert torch.allclose(g_fwd, g_adj, rtol=1e-5, atol=1e-5 * float(g_adj.abs().max()))


def test_forward_batch_and_threads_give_the_same_numbers():
    """A batch of two starts is two closed loops; the perturbed steps are independent, so any thread count
    gives the same bits."""
    model = suite("cheetah")
    rng = np.random.default_rng(0)
    nx = model.nq + model.nv
    x0 = torch.from_numpy(np.concatenate([model.qpos0, np.zeros(model.nv)]) + 0.01 * rng.standard_normal((2, nx)))
    k0 = torch.from_numpy(0.1 * rng.standard_normal((model.nu, nx)))
    proj = torch.from_numpy(rng.standard_normal((model.nu * nx, 8)))
    policy = LinearFeedback(lambda th: k0 + (proj @ th).reshape(k0.shape), scale=0.3)
    cost = QuadraticCost(1.0, effort=0.1)
    theta = torch.zeros(8, dtype=torch.float64)
    results = [gradient(MujocoDynamics(model, nthread=n), x0, policy, cost, theta, 60, "forward") for n in (1, 2)]
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])
    one = [gradient(MujocoDynamics(model), x0[i], policy, cost, theta, 60, "forward") for i in range(2)]
    assert results[0][0] == pytest.approx(one[0][0] + one[1][0], rel=1e-14)
    assert torch.allclose(results[0][1], one[0][1] + one[1][1], rtol=1e-12)


def test_forward_states_are_plain_mujoco_and_continue_the_simulation():
    model = suite("walker")
    nx = model.nq + model.nv
    rng = np.random.default_rng(1)
    gains = 0.1 * rng.standard_normal((model.nu, nx))
    x0 = np.concatenate([model.qpos0, np.zeros(model.nv)])
    dyn = MujocoDynamics(model)
    policy = LinearFeedback(lambda th: torch.from_numpy(gains) * th[0], scale=0.3)
    out = mt.rollout(dyn.step, torch.from_numpy(x0), policy, torch.ones(1, dtype=torch.float64, requires_grad=True), 50,
                     grad="forward", cost=QuadraticCost(1.0))
    d = mujoco.MjData(model)
    d.qpos[:] = x0[: model.nq]
    for t in range(60):
        x = np.concatenate([d.qpos, d.qvel])
        if t <= 50:
            assert np.allclose(out.states[t].detach().numpy(), x, rtol=0, atol=1e-12), t
        d.ctrl[:] = 0.3 * np.tanh(gains @ x)
        mujoco.mj_step(model, d)
    with torch.no_grad():  # no gradient asked: the nominal loop alone, the same states
        plain = mt.rollout(dyn.step, torch.from_numpy(x0), policy, torch.ones(1, dtype=torch.float64), 50,
                           grad="forward", cost=QuadraticCost(1.0))
    assert torch.equal(plain.states, out.states.detach()) and torch.equal(plain.cost, out.cost.detach())
    # the last state goes on as mj_step in a loop would (warm-start and time carried)
    x = out.states[-1].detach()
    for _ in range(10):
        x = dyn.step(x, 0.3 * torch.tanh(x @ torch.from_numpy(gains).T))
    assert np.allclose(x.numpy(), np.concatenate([d.qpos, d.qvel]), rtol=0, atol=1e-12)


def test_forward_misuse_is_a_named_error():
    model = suite("cheetah")
    dyn = MujocoDynamics(model)
    x0 = dyn.initial_state()
    k = torch.zeros(dyn.nu, dyn.nx, dtype=torch.float64)
    policy = LinearFeedback(lambda th: k + th.sum(), scale=0.3)
    theta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    cost = QuadraticCost(1.0)
    with pytest.raises(mt.MetatuneError, match="not in x0"):
        mt.rollout(dyn.step, x0.clone().requires_grad_(), policy, theta, 5, grad="forward", cost=cost)
    out = mt.rollout(dyn.step, x0, policy, theta, 5, grad="forward", cost=cost)
    with pytest.raises(mt.MetatuneError, match="not the states"):
        (out.states.sum() + out.cost).backward()
    with pytest.raises(mt.MetatuneError, match=r"\[nu, nx\]"):
        mt.rollout(dyn.step, x0, LinearFeedback(lambda th: th), theta, 5, grad="forward", cost=cost)
    with pytest.raises(mt.MetatuneError, match="horizon"):
        mt.rollout(dyn.step, x0, LinearFeedback(lambda th: k + th.sum(), reference=torch.zeros(3, dyn.nx)), theta,
                   5, grad="forward", cost=cost)
    ball = MujocoDynamics(BALL)  # no control range: a huge feedback diverges
    big = LinearFeedback(lambda th: torch.full((1, 2), -1e6, dtype=torch.float64) * (1 + th.sum()))
    with pytest.raises(mt.MetatuneError, match="diverged at step"):
        mt.rollout(ball.step, torch.tensor([0.5, 0.0], dtype=torch.float64), big, theta, 50, grad="forward",
                   cost=cost)


BALL = """<mujoco><option gravity="0 0 0" timestep="0.01"/><worldbody><geom type="plane" size="1 1 0.1"/>
<body><joint name="z" type="slide" axis="0 0 1"/><geom type="sphere" size="0.1" mass="1"/></body></worldbody>
<actuator><motor joint="z"/></actuator></mujoco>"""


@pytest.mark.parametrize("offset,path", [(1e-11, "shrunk"), (1e-13, "one_sided")])
def test_forward_at_a_contact_switch_takes_the_piece_the_trajectory_follows(offset, path):
    """A ball falling at 1 m/s reaches the floor's contact distance plus `offset` after one step, and the
    gain perturbations move it by more than that: the two sides of the step straddle the contact's onset
    (its damping force jumps). Plain central differences at h = 1e-7 see the no-contact piece at offset 1e-11;
    at 1e-13 they straddle too, and the piece's gradient is continuous in the start, so offset 1e-11's
    reference holds. Without the side checks (tol = inf) the gradient is off by orders of magnitude."""
    model = mujoco.MjModel.from_xml_string(BALL)
    horizon = 30
    policy = LinearFeedback(lambda th: th[None, :], reference=torch.tensor([[0.2, 0.0]]).double().expand(horizon, 2))
    cost = QuadraticCost(1.0, target=torch.tensor([[0.3, 0.0]]).double().expand(horizon, 2), effort=0.1)

    def plain(theta, x0):
        d = mujoco.MjData(model)
        d.qpos[0], d.qvel[0] = x0
        total = 0.0
        for _ in range(horizon):
            z, v = d.qpos[0], d.qvel[0]
            u = theta[0] * (z - 0.2) + theta[1] * v
            total += (z - 0.3) ** 2 + v ** 2 + 0.1 * u ** 2
            d.ctrl[0] = u
            mujoco.mj_step(model, d)
        return total

    smooth = np.array([0.11 + 1e-11, -1.0])
    ref = np.array([(plain(1e-7 * e, smooth) - plain(-1e-7 * e, smooth)) / 2e-7 for e in np.eye(2)])
    x0 = torch.tensor([0.11 + offset, -1.0], dtype=torch.float64)
    dyn = MujocoDynamics(model)
    _, g = gradient(dyn, x0, policy, cost, torch.zeros(2, dtype=torch.float64), horizon, "forward")
    assert np.allclose(g.numpy(), ref, rtol=1e-5)
    assert dyn.jacobian_stats[path] > 0
    unchecked = MujocoDynamics(model, tol=float("inf"))
    _, bad = gradient(unchecked, x0, policy, cost, torch.zeros(2, dtype=torch.float64), horizon, "forward")
    assert np.abs(bad.numpy() - ref).max() > 1e3 * np.abs(ref).max()


def test_forward_equals_adjoint_on_an_rk4_model_with_a_site():
    """dm_control's acrobot integrates with RK4, where mj_step's kinematics end at the last stage: the C loop
    then reads the site at the step's start itself."""
    model = suite("acrobot")
    assert model.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4
    rng = np.random.default_rng(0)
    nx = model.nq + model.nv
    k0 = torch.from_numpy(0.1 * rng.standard_normal((model.nu, nx)))
    proj = torch.from_numpy(rng.standard_normal((model.nu * nx, 3)))
    policy = LinearFeedback(lambda th: k0 + (proj @ th).reshape(k0.shape), scale=0.3)
    x0 = torch.from_numpy(0.1 * rng.standard_normal(nx))
    dyn = MujocoDynamics(model)
    cost = QuadraticCost(1.0, effort=0.1, sites=["tip"], site_targets=torch.ones(50, 1, 3, dtype=torch.float64),
                         dynamics=dyn)
    theta = torch.zeros(3, dtype=torch.float64)
    c_fwd, g_fwd = gradient(dyn, x0, policy, cost, theta, 50, "forward")
    c_adj, g_adj = gradient(dyn, x0, policy, cost, theta, 50, "adjoint")
    assert c_fwd == pytest.approx(c_adj, rel=1e-12)
    assert torch.allclose(g_fwd, g_adj, rtol=1e-6, atol=1e-6 * float(g_adj.abs().max()))
