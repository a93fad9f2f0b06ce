"""`envs.make(name, **physical_params)`: the robots this package ships, with default parameters."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from envs.physical import check_physical
from envs.planar_chain import Link, PlanarChain
from envs.quadrotor import Quadrotor
from metatune.errors import MetatuneError


def _rod(name: str, mass: float, length: float, damping: float) -> dict[str, float]:
    """Parameters of a uniform rod (centre of mass at half length, inertia m l^2 / 12)."""
    return {f"mass_{name}": mass, f"length_{name}": length, f"com_{name}": length / 2,
            f"inertia_{name}": mass * length ** 2 / 12, f"damping_{name}": damping, f"payload_{name}": 0.0}


# name -> (links, default parameters, dt, gravity)
CHAINS: dict[str, tuple[list[Link], dict[str, float], float, float]] = {
    "pendulum": ([Link("pole", "hinge", True)],
                 {"mass_pole": 0.2, "length_pole": 0.5, "com_pole": 0.5, "inertia_pole": 1e-4,
                  "damping_pole": 0.05, "payload_pole": 0.0}, 0.01, 9.81),
    "cartpole": ([Link("cart", "slide", True), Link("pole", "hinge", False)],
                 {"mass_cart": 1.0, "damping_cart": 0.05, **_rod("pole", 0.1, 1.0, 1e-3)}, 0.01, 9.81),
    "acrobot": ([Link("upper", "hinge", False), Link("lower", "hinge", True)],
                {**_rod("upper", 1.0, 1.0, 0.05), **_rod("lower", 1.0, 1.0, 0.05)}, 0.01, 9.81),
    # a horizontal two-link arm: the same chain with gravity off (it moves in a table's plane)
    "arm2": ([Link("upper", "hinge", True), Link("lower", "hinge", True)],
             {**_rod("upper", 1.0, 0.5, 0.1), **_rod("lower", 0.6, 0.4, 0.1)}, 0.01, 0.0),
}

ROBOTS = [*CHAINS, "quadrotor"]


def make(name: str, dtype: torch.dtype = torch.float64, dt: float | None = None,
         **physical_params: Any) -> PlanarChain | Quadrotor:
    """A torch dynamics model with `step(x, u)`, `nx`, `nu`, `dt` and `mjcf()`.

    Physical parameters not given take their defaults; each may be a float or a tensor ([] or [B])
    that gradients reach.
    """
    if name == "quadrotor":
        return Quadrotor(dtype=dtype, dt=dt, **physical_params)
    if name not in CHAINS:
        raise MetatuneError(f"unknown robot {name!r}; choose from {ROBOTS}")
    links, defaults, default_dt, gravity = CHAINS[name]
    unknown = sorted(set(physical_params) - set(defaults))
    if unknown:
        raise MetatuneError(f"{name} has no physical parameter(s) {unknown}; it has {sorted(defaults)}")
    params: dict[str, Tensor] = {}
    for key, default in defaults.items():
        value = physical_params.get(key, default)
        params[key] = value if isinstance(value, Tensor) else torch.tensor(float(value), dtype=dtype)
    check_physical(name, params)
    return PlanarChain(name, links, params, dt or default_dt, gravity)


def default_params(name: str) -> dict[str, float]:
    """The default physical parameters of a robot."""
    if name == "quadrotor":
        return dict(Quadrotor.DEFAULTS)
    if name not in CHAINS:
        raise MetatuneError(f"unknown robot {name!r}; choose from {ROBOTS}")
    return dict(CHAINS[name][1])
