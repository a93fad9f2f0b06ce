"""PD and gain-scheduled PD control of a chain's actuated joints, with log-scale tunable gains."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from envs.gain_schedule import scheduled
from envs.planar_chain import PlanarChain


class ScheduledPD:
    """u = kp (q_ref - q) + kd (qd_ref - qd) + u_ff(q_ref), on the actuated joints.

    Parameters: log gains [..., K, 2 * nu] (kp then kd per actuated joint) at K knots over the horizon,
    interpolated in log space (K = 1: plain PD). `feedforward(x_ref)` [..., nu] (default zero) can hold
    gravity compensation.
    """

    def __init__(self, chain: PlanarChain, x_ref: Callable[[int], Tensor], horizon: int,
                 feedforward: Callable[[Tensor], Tensor] | None = None):
        self.chain, self.x_ref, self.horizon, self.feedforward = chain, x_ref, horizon, feedforward
        self.joints = chain.actuated

    def __call__(self, x: Tensor, t: int | Tensor, log_gains: Tensor) -> Tensor:  # [..., nx], [..., K, 2nu] -> [..., nu]
        nq, nu = self.chain.nq, self.chain.nu
        gains = scheduled(log_gains, t, self.horizon).to(x.dtype)
        ref = self.x_ref(t).to(x.dtype)
        err = (ref - x)[..., self.joints]
        derr = (ref - x)[..., [nq + j for j in self.joints]]
        u = gains[..., :nu] * err + gains[..., nu:] * derr
        if self.feedforward is not None:
            u = u + self.feedforward(ref)
        return u


def pd_log_gains(kp: float, kd: float, nu: int, knots: int = 1, dtype: torch.dtype = torch.float64) -> Tensor:
    """Constant gains as a log-gain schedule [knots, 2 * nu]."""
    g = torch.tensor([kp] * nu + [kd] * nu, dtype=dtype).log()
    return g.expand(knots, -1).clone()
