"""A MuJoCo closed loop and its gradient in the gains, run whole in C: `grad="forward"` on `MujocoDynamics`.

The adjoint (`grad="adjoint"`) needs each step's whole Jacobian: 2 (2 nv + na + nu) + 1 single steps per
step whatever the gain count G, plus a Python call per step. With few gains, forward sensitivities are
cheaper: S_g[t] = dx[t]/dtheta_g propagated along the trajectory, one pair of steps per gain per step. Here
both the loop and the sensitivities run in C (envs/_ext/closed_loop.cpp, OpenMP over the 2 G perturbed
steps), for the controller and cost families below; the policy and cost are then not Python functions but
data the C loop evaluates, so there is no Python call per step.

Per step and gain, the step is differenced from the nominal state's whole integration state along the
gain's tangent (x moved by h S_g on MuJoCo's manifold, W by h dW/dtheta_g), both sides, with h chosen so
that the state and the control move by about eps. The sides are held to agree as the adjoint's Jacobian
columns are (envs/mujoco_jacobian.py: retried at h/10 and h/100, then taken on the side that keeps the
nominal state's constraint set), so the gradient means the same at a contact switch: the derivative of the
piece the trajectory follows. Without a switch it equals the adjoint's to O(eps^2) (tested), and plain
MuJoCo's central differences of the whole cost (tested on dm_control models with contacts).

Families (each is also a torch function, so the same objects run under grad="adjoint" or "autograd"):
- `LinearFeedback(matrix, reference, scale)`: u = scale * tanh(W (x - r[t])), or W (x - r[t]) without a
  scale, W = matrix(theta) [nu, nx] any differentiable function of the gains (PD on chosen joints, full
  state feedback, a projection of a few gains...). MuJoCo clamps u to ctrlrange as usual.
- `QuadraticCost(weights, target, effort, sites, site_targets, site_weight)`: sum_j w_j (x_j - c[t]_j)^2 +
  effort |u|^2 + site_weight sum_s |p_s(x) - p*_s[t]|^2 (site positions in the world).
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from envs.mujoco_state import mujoco
from metatune.errors import MetatuneError
from metatune.extension import Extension
from metatune.rollout import Rollout

SOURCE = Path(__file__).with_name("_ext") / "closed_loop.cpp"
MUJOCO_DIR = Path(mujoco.__file__).parent


def _mujoco_link() -> list[str]:
    """Link against the libmujoco of the installed `mujoco` package (the one the bindings loaded)."""
    libs = sorted(glob.glob(str(MUJOCO_DIR / "libmujoco.so*")))
    if not libs:
        raise RuntimeError(f"no libmujoco.so in {MUJOCO_DIR}")
    return [f"-L{MUJOCO_DIR}", f"-l:{os.path.basename(libs[-1])}", f"-Wl,-rpath,{MUJOCO_DIR}", "-fopenmp"]


def _checked(module: Any) -> Any:
    from envs.mujoco_dynamics import MAX_VALUE

    if module.MAX_VALUE != MAX_VALUE:
        raise RuntimeError(f"closed_loop.cpp's MAX_VALUE {module.MAX_VALUE} differs from {MAX_VALUE}")
    return module


EXTENSION = Extension("envs_closed_loop", SOURCE, Path(__file__), "python -m envs.mujoco_closed_loop --build",
                      cflags=["-O3", "-fopenmp"], ldflags=_mujoco_link(),
                      include_dirs=lambda: [str(MUJOCO_DIR / "include")], check=_checked,
                      fallback="; grad='forward' through MuJoCo is unavailable (grad='adjoint' still works)")


class LinearFeedback:
    """u = scale * tanh(W (x - r[t])) (or W (x - r[t]) when scale is None), W = matrix(theta) [nu, nx];
    reference r [>= horizon, nx] (None: 0)."""

    def __init__(self, matrix: Callable[[Tensor], Tensor], reference: Tensor | None = None,
                 scale: Tensor | float | None = None):
        self.matrix, self.reference = matrix, reference
        self.scale = None if scale is None else torch.as_tensor(scale, dtype=torch.float64)

    def __call__(self, x: Tensor, t: int | Tensor, theta: Tensor) -> Tensor:
        w = self.matrix(theta)
        e = x if self.reference is None else x - self.reference[t].to(x)
        z = e @ w.transpose(-1, -2)
        return z if self.scale is None else self.scale.to(z) * torch.tanh(z)


class QuadraticCost:
    """c(x, u, t) = sum_j w_j (x_j - target[t]_j)^2 + effort |u|^2 + site_weight sum_s |p_s(x) - p*_s[t]|^2.

    weights [nx] (or one number); target [>= horizon, nx] (None: 0); sites: site names, site_targets
    [>= horizon, n_sites, 3]; `dynamics` (a MujocoDynamics) gives the site positions when the cost runs in
    torch (under grad="adjoint"); the C loop takes them from its own model.
    """

    def __init__(self, weights: Tensor | float, target: Tensor | None = None, effort: float = 0.0,
                 sites: Sequence[str] = (), site_targets: Tensor | None = None, site_weight: float = 1.0,
                 dynamics: Any = None):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.target, self.effort, self.sites = target, float(effort), list(sites)
        self.site_targets, self.site_weight, self.dynamics = site_targets, float(site_weight), dynamics
        if self.sites and site_targets is None:
            raise MetatuneError("QuadraticCost: sites given without site_targets")

    def __call__(self, x: Tensor, u: Tensor, t: int | Tensor) -> Tensor:
        e = x if self.target is None else x - self.target[t].to(x)
        c = (self.weights.to(x) * e ** 2).sum(-1) + self.effort * (u ** 2).sum(-1)
        if self.sites:
            if self.dynamics is None:
                raise MetatuneError("QuadraticCost with sites needs dynamics= to run in torch")
            assert self.site_targets is not None
            pos = self.dynamics.observe(x, u, sites=self.sites)
            d = pos.reshape(*pos.shape[:-1], len(self.sites), 3) - self.site_targets[t].to(x)
            c = c + self.site_weight * (d ** 2).sum((-2, -1))
        return c


def _rows(values: Tensor | None, horizon: int, width: int, what: str) -> np.ndarray:
    """values [>= horizon, width] as float64 numpy (zeros when None), checked."""
    if values is None:
        return np.zeros((horizon, width))
    a = values.detach().cpu().double().numpy()
    if a.ndim != 2 or a.shape[0] < horizon or a.shape[1] != width:
        raise MetatuneError(f"{what} must be [>= horizon = {horizon}, {width}], got {list(a.shape)}")
    return np.ascontiguousarray(a[:horizon])


def native_rollout(dyn: Any, x0: Tensor, policy: Any, params: Any, horizon: int, cost: Any,
                   store_states: bool) -> Rollout | None:
    """The closed loop in C when policy and cost are the families above (else None: not ours to run)."""
    if not (type(policy) is LinearFeedback and type(cost) is QuadraticCost):  # a subclass may compute otherwise
        return None
    if not isinstance(params, Tensor) or params.dim() != 1:
        raise MetatuneError("grad='forward' through MuJoCo takes the gains as one 1-d tensor [G]")
    if x0.requires_grad:
        raise MetatuneError("grad='forward' through MuJoCo differentiates in the gains only, not in x0; "
                            "use grad='adjoint' for d/dx0")
    ext = EXTENSION.load()
    if ext is None:
        raise MetatuneError(f"grad='forward' through MuJoCo needs its C loop: {EXTENSION.unavailable_reason()}")
    m = dyn.model
    nx, nu = dyn.nx, dyn.nu
    theta = params.detach().double()
    w = policy.matrix(theta)
    if w.shape != (nu, nx):
        raise MetatuneError(f"LinearFeedback matrix must be [nu, nx] = [{nu}, {nx}], got {list(w.shape)}")
    if torch.is_grad_enabled() and params.requires_grad:
        jac = torch.autograd.functional.jacobian(policy.matrix, theta, vectorize=True)  # [nu, nx, G]
        d = jac.permute(2, 0, 1).contiguous()
    else:  # nothing will ask for the gradient: the nominal loop alone
        d = torch.zeros(0, nu, nx, dtype=torch.float64)
    scale = np.zeros(0) if policy.scale is None else np.broadcast_to(policy.scale.numpy(), (nu,)).copy()
    weights = np.broadcast_to(cost.weights.numpy(), (nx,)).copy()
    sites = np.array([_site_id(m, s) for s in cost.sites], dtype=np.int32)
    site_ref = (np.zeros((horizon, 0, 3)) if not cost.sites else
                _rows(cost.site_targets.reshape(cost.site_targets.shape[0], -1), horizon, 3 * len(sites),
                      "site_targets").reshape(horizon, len(sites), 3))
    args = (w.detach().numpy(), d.numpy(), _rows(policy.reference, horizon, nx, "LinearFeedback reference"),
            scale, weights, _rows(cost.target, horizon, nx, "QuadraticCost target"), cost.effort, sites,
            np.ascontiguousarray(site_ref), cost.site_weight)
    states, total = _Native.apply(params, dyn, ext, x0, horizon, store_states, args)
    return Rollout(states, total)


def _site_id(m: mujoco.MjModel, name: str) -> int:
    i = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, name)
    if i < 0:
        raise MetatuneError(f"the model has no site {name!r}")
    return int(i)


class _Native(torch.autograd.Function):
    @staticmethod
    def forward(ctx, params: Tensor, dyn: Any, ext: Any, x0: Tensor, horizon: int, store: bool,
                args: tuple) -> tuple[Tensor, Tensor]:
        xs = x0.detach().reshape(-1, dyn.nx).cpu().double().numpy()
        # one thread unless the user gives MujocoDynamics(nthread=...): a thread waiting for a core another
        # process holds stalls every step's barrier (measured 12 ms per step where the work was 0.3 ms, and
        # timing both counts on the fly cost such stalls too); at most one per 4 perturbed steps
        nthread = 1 if dyn.nthread is None else max(1, min(dyn.nthread, args[1].shape[0] // 2))
        totals, grads, states = [], [], []
        for x in xs:
            start = dyn.memo.start(x, dyn.fd.x_i)
            total, grad, traj, final, stats, status, at = ext.closed_loop(
                dyn.model._address, dyn.fd.model._address, start, horizon, *args, dyn.fd.eps, dyn.fd.tol,
                nthread, store)
            if status:
                what = "the trajectory" if status == 1 else "a perturbed step of the gradient"
                raise MetatuneError(f"MuJoCo closed loop diverged at step {at} ({what}: non-finite, beyond "
                                    f"{ext.MAX_VALUE:g}, or MuJoCo reset the state); the gains or the state are "
                                    "too large")
            dyn.memo.remember(traj[-1].copy(), final)
            for key, n in zip(("columns", "flagged", "shrunk", "one_sided", "unresolved"), stats):
                dyn.fd.stats[key] += int(n)
            totals.append(total)
            grads.append(grad)
            states.append(traj)
        batch = x0.shape[:-1]
        ctx.grads = torch.from_numpy(np.stack(grads)).to(params.dtype).reshape(*batch, -1)  # [..., G]
        total_t = torch.tensor(totals, dtype=x0.dtype).reshape(batch)
        states_t = torch.from_numpy(np.stack(states, 1)).to(x0.dtype).reshape(-1, *batch, dyn.nx)
        return states_t, total_t

    @staticmethod
    @once_differentiable
    def backward(ctx, g_states: Tensor, g_total: Tensor):  # noqa: ANN205 - one gradient per input
        if g_states is not None and bool(g_states.ne(0).any()):
            raise MetatuneError("grad='forward' through MuJoCo differentiates the cost only, not the states; "
                                "use grad='adjoint' to differentiate a function of the states")
        g = (g_total.to(ctx.grads)[..., None] * ctx.grads).reshape(-1, ctx.grads.shape[-1]).sum(0)
        return g, None, None, None, None, None, None


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", action="store_true", help="compile the C loop (setup does this)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.build:
        EXTENSION.build(verbose=args.verbose)
        print(f"built {EXTENSION.library}")
    else:
        print("built" if EXTENSION.load() is not None else f"not available: {EXTENSION.unavailable_reason()}")


if __name__ == "__main__":
    main()
