"""MuJoCo-backed differentiable step: adjoint rollout gradients against central finite differences."""
import os
import subprocess
import sys

import pytest
import torch
from mujoco_reference import CONTACT_CASES, SUITE, contact_case, plain_mujoco_cost

import metatune as mt
from envs import make
from envs.mujoco_dynamics import MujocoDynamics


def policy(x, t, k):
    return 0.3 * torch.tanh(x @ k.T)  # inside dm-control's ctrlrange [-1, 1]


def cost(x, u, t):
    return (x ** 2).sum(-1) + 0.1 * (u ** 2).sum(-1)


def fd_gradient(dyn, x0, k, horizon, h=1e-5):
    grad = torch.zeros_like(k).reshape(-1)
    for i in range(k.numel()):
        plus, minus = k.clone().reshape(-1), k.clone().reshape(-1)
        plus[i] += h
        minus[i] -= h
        cp = mt.rollout(dyn.step, x0, policy, plus.reshape(k.shape), horizon, grad="autograd", cost=cost).cost
        cm = mt.rollout(dyn.step, x0, policy, minus.reshape(k.shape), horizon, grad="autograd", cost=cost).cost
        grad[i] = (cp - cm) / (2 * h)
    return grad.reshape(k.shape)


@pytest.mark.parametrize("name", ["pendulum", "cartpole", "acrobot"])
def test_adjoint_through_dm_control_models_matches_finite_differences(name):
    dyn = MujocoDynamics(os.path.join(SUITE, f"{name}.xml"))
    gen = torch.Generator().manual_seed(3)
    x0 = dyn.initial_state() + 0.1 * torch.randn(dyn.nx, generator=gen, dtype=torch.float64)
    k = 0.1 * torch.randn(dyn.nu, dyn.nx, generator=gen, dtype=torch.float64)
    horizon = 30
    leaf = k.clone().requires_grad_()
    out = mt.rollout(dyn.step, x0, policy, leaf, horizon, grad="adjoint", cost=cost)
    (g,) = torch.autograd.grad(out.cost, leaf)
    ref = fd_gradient(dyn, x0, k, horizon)
    assert torch.allclose(g, ref, rtol=1e-4, atol=1e-6 * ref.abs().max())


@pytest.mark.parametrize("name,start,scale,seed,horizon", CONTACT_CASES)
def test_adjoint_through_contacts_matches_plain_mujoco_finite_differences(name, start, scale, seed, horizon):
    model, x0, gains, direction, ref = contact_case(name, start, scale, seed, horizon)

    dyn = MujocoDynamics(model)
    k = torch.tensor(gains, requires_grad=True)
    out = mt.rollout(dyn.step, torch.tensor(x0), policy, k, horizon, grad="adjoint", cost=cost, store_states=False)
    assert float(out.cost.detach()) == pytest.approx(plain_mujoco_cost(model, gains, x0, horizon), rel=1e-12)
    (g,) = torch.autograd.grad(out.cost, k)
    ours = float((g * torch.from_numpy(direction)).sum())
    assert abs(ours - ref) <= 1e-4 * abs(ref)
    assert dyn.jacobian_stats["flagged"] > 0  # contacts made plain central differences disagree somewhere


def test_import_mujoco_and_dm_control_before_envs_does_not_crash():
    code = ("import mujoco, dm_control.suite, envs, torch\n"
            "from envs.mujoco_dynamics import MujocoDynamics\n"
            "from torch.func import vmap\n"
            "import torch._dynamo\n"
            "vmap(torch.sin)(torch.ones(3))\n"
            "torch.optim.Adam([torch.zeros(2, requires_grad=True)]).step()\n"
            "print('ok')\n")
    env = {**os.environ, "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith("ok")


def test_batched_mujoco_step_gradient_matches_finite_differences_with_quaternions():
    """A free-joint model (nq != nv): gradients in qpos coordinates, batch of two."""
    quad = make("quadrotor")
    dyn = MujocoDynamics(quad.mjcf())
    x0 = torch.zeros(2, 13, dtype=torch.float64)
    x0[:, 3] = 1.0
    x0[1, 3:7] = torch.tensor([0.98, 0.1, -0.1, 0.1], dtype=torch.float64)
    x0[1, 3:7] /= x0[1, 3:7].norm()
    u = torch.full((2, 4), 2.5, dtype=torch.float64) + torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64)
    w = torch.randn(2, 13, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def f(x, uu):
        for _ in range(3):
            x = dyn.step(x, uu)
        return (w * x).sum()

    xl, ul = x0.clone().requires_grad_(), u.clone().requires_grad_()
    gx, gu = torch.autograd.grad(f(xl, ul), (xl, ul))
    h = 1e-6
    for i in range(4):
        e = torch.zeros_like(u)
        e[1, i] = h
        assert abs(float((f(x0, u + e) - f(x0, u - e)) / (2 * h)) - float(gu[1, i])) < 1e-5
    for j in (0, 2, 8, 11):  # position, velocity, angular velocity entries
        e = torch.zeros_like(x0)
        e[1, j] = h
        assert abs(float((f(x0 + e, u) - f(x0 - e, u)) / (2 * h)) - float(gx[1, j])) < 1e-5


def test_mujoco_dynamics_matches_torch_quadrotor_step():
    quad = make("quadrotor", drag=0.0)  # no aero force, so plain MuJoCo simulates all of it
    dyn = MujocoDynamics(quad.mjcf())
    x = torch.zeros(13, dtype=torch.float64)
    x[3] = 1.0
    x[10:] = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    u = torch.tensor([2.0, 3.0, 2.5, 2.2], dtype=torch.float64)
    assert torch.allclose(dyn.step(x, u), quad.step(x, u), atol=1e-10)


def test_bad_models_raise_named_errors(tmp_path):
    with pytest.raises(mt.MetatuneError, match="does not parse"):
        MujocoDynamics("<mujoco><worldbody><body></mujoco>")
    bad = tmp_path / "broken.xml"
    bad.write_text("<mujoco><worldbody><geom type='sphere' size='-1'/></worldbody></mujoco")
    with pytest.raises(mt.MetatuneError, match="broken.xml"):
        MujocoDynamics(str(bad))
    with pytest.raises(mt.MetatuneError, match="no actuators"):
        MujocoDynamics("<mujoco><worldbody><body><joint type='hinge'/><geom size='0.1'/></body></worldbody></mujoco>")
    with pytest.raises(mt.MetatuneError, match="does not exist"):
        MujocoDynamics("/nonexistent/model.xml")


def test_diverging_rollout_raises_instead_of_nan_gradient():
    dyn = MujocoDynamics(make("pendulum").mjcf())
    gains = torch.tensor([[1e30, 1e30]], dtype=torch.float64, requires_grad=True)
    x0 = torch.tensor([0.5, 0.0], dtype=torch.float64)
    with pytest.raises(mt.MetatuneError):
        out = mt.rollout(dyn.step, x0, lambda x, t, k: x @ k.T, gains, 50, grad="adjoint", cost=cost)
        out.cost.backward()
