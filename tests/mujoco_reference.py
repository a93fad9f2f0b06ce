"""Plain MuJoCo references for the gradient tests: mj_step in a loop, numpy policy, no project code."""
import os

import dm_control
import mujoco
import numpy as np

SUITE = os.path.join(os.path.dirname(dm_control.__file__), "suite")


def plain_mujoco_cost(model, gains, x0, horizon):
    """The rollout cost with plain MuJoCo: mj_step in a loop, numpy policy, no project code."""
    d = mujoco.MjData(model)
    d.qpos[:], d.qvel[:] = x0[: model.nq], x0[model.nq: model.nq + model.nv]
    total = 0.0
    for _ in range(horizon):
        x = np.concatenate([d.qpos, d.qvel, d.act])
        u = 0.3 * np.tanh(gains @ x)
        total += float((x ** 2).sum() + 0.1 * (u ** 2).sum())
        d.ctrl[:] = u
        mujoco.mj_step(model, d)
    return total


def settled(model, steps=2000):
    """The state the model comes to rest in, lying on the floor with no control (contacts persist)."""
    d = mujoco.MjData(model)
    for _ in range(steps):
        mujoco.mj_step(model, d)
    return np.concatenate([d.qpos, d.qvel, d.act])


# (model, start, gain scale, seed, horizon): each starts on or above the floor so contacts happen; at walker's
# upright start a foot's penetration is within the Jacobian's eps at step 10 (central differences spiked).
CONTACT_CASES = [("walker", "upright", 0.1, 0, 100), ("walker", "rest", 0.1, 0, 1000),
                 ("hopper", "upright", 0.1, 0, 100), ("hopper", "rest", 0.3, 1, 1000),
                 ("cheetah", "upright", 0.3, 1, 100), ("cheetah", "rest", 0.1, 0, 1000)]


def contact_case(name, start, scale, seed, horizon):
    """One CONTACT_CASES case: (model, x0, gains, direction, reference), the reference being plain MuJoCo's
    central difference of the whole rollout cost along `direction` (h = 1e-6), checked converged (h = 1e-7)."""
    model = mujoco.MjModel.from_xml_path(os.path.join(SUITE, f"{name}.xml"))
    rng = np.random.default_rng(seed)
    nx = model.nq + model.nv + model.na
    base = settled(model) if start == "rest" else np.concatenate([model.qpos0, np.zeros(model.nv + model.na)])
    x0 = base + 0.01 * rng.standard_normal(nx)
    gains = scale * rng.standard_normal((model.nu, nx))
    direction = rng.standard_normal(gains.shape)

    def reference(h):
        return (plain_mujoco_cost(model, gains + h * direction, x0, horizon)
                - plain_mujoco_cost(model, gains - h * direction, x0, horizon)) / (2 * h)

    ref, ref_fine = reference(1e-6), reference(1e-7)
    assert abs(ref - ref_fine) <= 1e-5 * abs(ref)  # the reference itself is converged here
    return model, x0, gains, direction, ref
