"""Differentiable MuJoCo observations (sites, sensors) against MuJoCo's own analytic Jacobians."""
import os

import dm_control
import mujoco
import numpy as np
import pytest
import torch

import metatune as mt
from envs.mujoco_dynamics import MujocoDynamics

FINGER = os.path.join(os.path.dirname(dm_control.__file__), "suite", "finger.xml")


def skew(w):
    return np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])


def test_site_pose_jacobians_match_mj_jacsite():
    dyn = MujocoDynamics(FINGER)
    m = dyn.model
    q = np.array([0.3, -0.5, 0.7])
    x = torch.tensor(np.concatenate([q, [0.1, 0.2, 0.0]]), dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda xx: dyn.observe(xx, sites=["tip"], orientation=True), x).numpy()
    d = mujoco.MjData(m)
    d.qpos[:] = q
    mujoco.mj_forward(m, d)
    jp, jr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
    mujoco.mj_jacSite(m, d, jp, jr, m.site("tip").id)
    assert np.abs(jac[:3, : m.nq] - jp).max() < 1e-7 * (1 + np.abs(jp).max())
    rot = d.site_xmat[m.site("tip").id].reshape(3, 3)
    for j in range(m.nv):  # dR/dq_j = [w_j]x R, w_j the angular Jacobian's column
        assert np.abs(jac[3:, j].reshape(3, 3) - skew(jr[:, j]) @ rot).max() < 1e-7
    assert np.abs(jac[:, m.nq:]).max() == 0.0  # a pose does not depend on velocities


def test_sensor_readings_are_observed_and_differentiable():
    dyn = MujocoDynamics(FINGER)
    x = torch.tensor([0.3, -0.5, 0.7, 0.1, 0.2, 0.0], dtype=torch.float64, requires_grad=True)
    y = dyn.observe(x, sites=["tip"], sensors=["tip"])  # the framepos sensor of the same site
    assert torch.allclose(y[:3], y[3:], atol=1e-12)
    (g,) = torch.autograd.grad(y[3:].sum(), x)
    (g_site,) = torch.autograd.grad(dyn.observe(x, sites=["tip"]).sum(), x)
    assert torch.allclose(g, g_site, atol=1e-8)


def test_fingertip_cost_gradient_through_a_rollout_matches_finite_differences():
    dyn = MujocoDynamics(FINGER)
    target = torch.tensor([0.0, 0.0, 0.4], dtype=torch.float64)
    x0 = torch.tensor([0.3, -0.5, 0.7, 0.0, 0.0, 0.0], dtype=torch.float64)

    def policy(x, t, k):
        return 0.5 * torch.tanh(x @ k.T)

    def cost(x, u, t):
        return ((dyn.observe(x, u, sites=["tip"]) - target) ** 2).sum(-1)

    k = 0.2 * torch.randn(dyn.nu, dyn.nx, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    leaf = k.clone().requires_grad_()
    (g,) = torch.autograd.grad(mt.rollout(dyn.step, x0, policy, leaf, 40, grad="adjoint", cost=cost).cost, leaf)
    v = torch.randn(k.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h = 1e-6
    with torch.no_grad():
        plus = mt.rollout(dyn.step, x0, policy, k + h * v, 40, grad="autograd", cost=cost).cost
        minus = mt.rollout(dyn.step, x0, policy, k - h * v, 40, grad="autograd", cost=cost).cost
    ref = float((plus - minus) / (2 * h))
    assert abs(float((g * v).sum()) - ref) <= 1e-5 * abs(ref)


def test_unknown_names_and_forward_mode_are_named_errors():
    dyn = MujocoDynamics(FINGER)
    x = dyn.initial_state()
    with pytest.raises(mt.MetatuneError, match="no site 'thumb'"):
        dyn.observe(x, sites=["thumb"])
    with pytest.raises(mt.MetatuneError, match="no sensor"):
        dyn.observe(x, sensors=["sonar"])
    k = torch.zeros(dyn.nu, dyn.nx, dtype=torch.float64, requires_grad=True)
    with pytest.raises(mt.MetatuneError, match="grad='adjoint'"):
        mt.rollout(dyn.step, x, lambda x, t, k: x @ k.T, k, 5, grad="forward")
