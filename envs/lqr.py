"""LQR-style state feedback: linearise a torch model, solve the discrete Riccati equation."""
from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from metatune.errors import MetatuneError


def linearize(step, x_eq: Tensor, u_eq: Tensor) -> tuple[Tensor, Tensor]:  # [nx], [nu] -> [nx, nx], [nx, nu]
    """Jacobians of step(x, u) at (x_eq, u_eq)."""
    a, b = torch.autograd.functional.jacobian(step, (x_eq, u_eq))
    return a, b


def lqr_gain(a: Tensor, b: Tensor, q: Tensor, r: Tensor) -> Tensor:  # -> K [nu, nx]
    """The infinite-horizon discrete LQR gain K (u = -K x) of x+ = A x + B u with costs Q, R."""
    an, bn, qn, rn = (t.detach().cpu().double().numpy() for t in (a, b, q, r))  # scipy solves on the CPU
    try:
        p = scipy.linalg.solve_discrete_are(an, bn, qn, rn)
    except (np.linalg.LinAlgError, ValueError) as err:
        raise MetatuneError(f"LQR: the discrete Riccati equation has no stabilising solution ({err})") from err
    k = np.linalg.solve(rn + bn.T @ p @ bn, bn.T @ p @ an)
    return torch.as_tensor(k, dtype=a.dtype, device=a.device)


class StateFeedback:
    """u = u_eq - (K0 * exp(s)) (x - x_ref(t)): the tuned parameter is the log scale s [..., nu, nx]
    of each entry of a reference gain K0 (e.g. the nominal robot's LQR gain), so s = 0 is K0."""

    def __init__(self, x_ref, u_eq: Tensor, k0: Tensor):
        self.x_ref, self.u_eq, self.k0 = x_ref, u_eq, k0

    def __call__(self, x: Tensor, t: int, log_scale: Tensor) -> Tensor:  # [..., nx], [..., nu, nx] -> [..., nu]
        err = x - self.x_ref(t).to(x.dtype)
        gain = self.k0.to(x.dtype) * log_scale.exp()
        return self.u_eq.to(x.dtype) - (gain @ err.unsqueeze(-1)).squeeze(-1)
