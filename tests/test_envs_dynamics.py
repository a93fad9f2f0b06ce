"""Torch robot dynamics against MuJoCo simulating the MJCF each robot writes of itself."""
import re

import numpy as np
import pytest
import torch

import envs
from metatune import MetatuneError
from metatune.mujoco_loader import load_mujoco

mujoco = load_mujoco()  # off-screen rendering set up, triton loaded first

CHAIN_RANGES = {"mass": (0.3, 2.0), "length": (0.3, 1.2), "damping": (0.0, 0.3), "payload": (0.0, 0.5)}


def random_params(name: str, gen: torch.Generator) -> dict:
    """Random physical parameters around the defaults."""
    out = {}
    for key, default in envs.default_params(name).items():
        if key == "wind":
            out[key] = tuple((2 * torch.rand(3, generator=gen) - 1).tolist())
        elif key.startswith("com_"):
            continue  # set below from the length
        else:
            scale = 0.5 + torch.rand((), generator=gen).item()
            out[key] = default * scale if default else 0.2 * torch.rand((), generator=gen).item()
    if "izz" in out:  # a rigid body needs ixx + iyy >= izz (MuJoCo checks it)
        out["izz"] = min(out["izz"], 0.9 * (out["ixx"] + out["iyy"]))
    for key in list(out):
        if key.startswith("length_"):
            out["com_" + key[7:]] = out[key] * (0.3 + 0.5 * torch.rand((), generator=gen).item())
    return out


def mujoco_trajectory(env, x0: np.ndarray, us: np.ndarray) -> np.ndarray:
    m = mujoco.MjModel.from_xml_string(env.mjcf())
    d = mujoco.MjData(m)
    assert m.nq + m.nv == env.nx or env.name == "quadrotor"
    d.qpos[:], d.qvel[:] = x0[: m.nq], x0[m.nq:]
    out = [x0]
    for u in us:
        if env.name == "quadrotor":  # the aerodynamic force MJCF cannot express
            state = torch.tensor(np.concatenate([d.qpos, d.qvel]))
            d.xfrc_applied[1, :3] = env.aero_force(state).numpy()
        d.ctrl[:] = u
        mujoco.mj_step(m, d)
        out.append(np.concatenate([d.qpos, d.qvel]))
    return np.stack(out)


@pytest.mark.parametrize("name", envs.ROBOTS)
def test_torch_dynamics_match_mujoco(name):
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    env = envs.make(name, **random_params(name, gen))
    if name == "quadrotor":
        q = torch.randn(4, generator=gen, dtype=torch.float64)
        x0 = torch.cat([torch.randn(3, generator=gen, dtype=torch.float64), q / q.norm(),
                        torch.randn(6, generator=gen, dtype=torch.float64)])
        us = env.hover_thrust(x0) + 0.3 * torch.randn(150, 4, generator=gen, dtype=torch.float64)
    else:
        x0 = torch.randn(env.nx, generator=gen, dtype=torch.float64)
        us = torch.randn(150, env.nu, generator=gen, dtype=torch.float64)
    ref = mujoco_trajectory(env, x0.numpy(), us.numpy())
    x, xs = x0, [x0]
    for u in us:
        x = env.step(x, u)
        xs.append(x)
    ours = torch.stack(xs).numpy()
    assert np.abs(ours - ref).max() < 1e-9 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("name", envs.ROBOTS)
def test_batched_float32_matches_unbatched_float64(name):
    env64 = envs.make(name)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, env64.nx, generator=gen, dtype=torch.float64)
    if name == "quadrotor":
        x[:, 3:7] = x[:, 3:7] / x[:, 3:7].norm(dim=-1, keepdim=True)
    u = torch.randn(5, env64.nu, generator=gen, dtype=torch.float64)
    batched = envs.make(name, dtype=torch.float32).step(x.float(), u.float())
    assert batched.dtype == torch.float32 and batched.shape == (5, env64.nx)
    for i in range(5):
        assert torch.allclose(batched[i].double(), env64.step(x[i], u[i]), atol=1e-4)


def test_pendulum_conserves_energy_without_damping_or_input():
    env = envs.make("pendulum", damping_pole=0.0, dt=1e-4)
    x = torch.tensor([1.0, 0.0], dtype=torch.float64)
    e0 = env.energy(x)
    for _ in range(2000):
        x = env.step(x, torch.zeros(1, dtype=torch.float64))
    # closed form: E = -m g l cos(q0) for a point mass (inertia 1e-4 about the centre adds nothing at rest)
    assert torch.isclose(e0, torch.tensor(-0.2 * 9.81 * 0.5 * np.cos(1.0), dtype=torch.float64))
    assert abs(float(env.energy(x) - e0)) < 1e-3 * abs(float(e0))


def test_gradients_reach_physical_parameters():
    mass = torch.tensor([0.8, 1.2], dtype=torch.float64, requires_grad=True)
    wind = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    quad = envs.make("quadrotor", mass=mass, wind=wind)
    x = torch.zeros(2, 13, dtype=torch.float64)
    x[:, 3] = 1.0
    u = torch.full((2, 4), 2.0, dtype=torch.float64)
    for _ in range(10):
        x = quad.step(x, u)
    gm, gw = torch.autograd.grad(x[..., 2].sum() + x[..., 0].sum(), (mass, wind))
    assert (gm < 0).all() and gw[0] > 0  # heavier falls lower; wind along +x pushes along +x
    # finite-difference check of d height / d mass for the first robot
    h = 1e-6
    def height(m0):
        q = envs.make("quadrotor", mass=torch.tensor([m0, 1.2], dtype=torch.float64), wind=wind.detach())
        xx = torch.zeros(2, 13, dtype=torch.float64)
        xx[:, 3] = 1.0
        for _ in range(10):
            xx = q.step(xx, u)
        return float(xx[0, 2] + xx[0, 0])
    fd = (height(0.8 + h) - height(0.8 - h)) / (2 * h)
    assert abs(float(gm[0]) - fd) < 1e-6 * max(1.0, abs(fd))


def test_bad_robot_inputs_raise_named_errors():
    with pytest.raises(MetatuneError, match="unknown robot"):
        envs.make("hexapod")
    with pytest.raises(MetatuneError, match="no physical parameter"):
        envs.make("pendulum", mass=1.0)
    with pytest.raises(MetatuneError, match="index="):
        envs.make("pendulum", mass_pole=torch.tensor([1.0, 2.0])).mjcf()


@pytest.mark.parametrize("name, params, bound", [
    ("pendulum", {"mass_pole": -0.2}, "mass_pole must be > 0"),
    ("cartpole", {"length_pole": 0.0}, "length_pole must be > 0"),
    ("acrobot", {"damping_lower": -0.1}, "damping_lower must be >= 0"),
    ("pendulum", {"inertia_pole": float("nan")}, "must be finite"),
    ("quadrotor", {"mass": torch.tensor([1.0, -1.0])}, "mass must be > 0"),
    ("quadrotor", {"ixx": 0.01, "iyy": 0.01, "izz": 0.05}, "ixx + iyy >= izz"),
])
def test_physically_impossible_parameters_are_refused_as_mujoco_refuses_them(name, params, bound):
    with pytest.raises(MetatuneError, match=re.escape(bound)):
        envs.make(name, **params)


def test_mujoco_refuses_the_same_negative_mass():
    xml, n = re.subn(r'(<inertial [^>]*mass=")([0-9.e-]+)"', r'\1-0.2"', envs.make("pendulum").mjcf(), count=1)
    assert n == 1
    with pytest.raises(ValueError):
        mujoco.MjModel.from_xml_string(xml)
