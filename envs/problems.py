"""The controller-tuning problems by name (what `metatune robot --task` and the scripts choose from)."""
from __future__ import annotations

import torch

from envs.cartpole_balance import CartpoleBalance
from envs.pendulum_swingup import PendulumSwingUp
from envs.quadrotor_tracking import QuadrotorTracking
from envs.tuning_problem import TuningProblem
from metatune.errors import MetatuneError

PROBLEMS = {"quadrotor": QuadrotorTracking, "pendulum": PendulumSwingUp, "cartpole": CartpoleBalance}


def make_problem(name: str, horizon: int | None = None, dt: float | None = None,
                 mjcf: dict | None = None, device: torch.device | str = "cpu") -> TuningProblem:
    """A tuning problem with its default horizon and time step unless given; with `mjcf` (an MjcfSpec as a
    dict), the user's MJCF model (envs/mjcf_problem.py). Its tensors live on `device`."""
    if mjcf is not None:
        from envs.mjcf_problem import MjcfSpec, MjcfTracking

        try:
            spec = MjcfSpec(**mjcf)
        except TypeError as err:
            raise MetatuneError(f"MJCF task settings: {err}") from None
        return MjcfTracking(spec, horizon or 200, dt, device=device)
    if name not in PROBLEMS:
        raise MetatuneError(f"unknown tuning task {name!r}; choose from {sorted(PROBLEMS)}")
    kwargs = {}
    if horizon is not None:
        if horizon < 1:
            raise MetatuneError(f"horizon must be >= 1, got {horizon}")
        kwargs["horizon"] = horizon
    if dt is not None:
        if not 0 < dt <= 0.1:
            raise MetatuneError(f"dt must be in (0, 0.1] seconds, got {dt}")
        kwargs["dt"] = dt
    return PROBLEMS[name](**kwargs, device=device)
