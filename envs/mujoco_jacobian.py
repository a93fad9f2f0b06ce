"""Step Jacobians of MuJoCo by finite differences that never straddle a change of the constraint set.

MuJoCo's step is piecewise smooth: inside one constraint set (which contacts exist, which joint limits
and constraints are active, and each one's solver state) it is smooth; where a contact appears (a
penetration crossing the margin) the constraint force jumps, so the step jumps. A central difference
whose two sides fall in different sets returns jump / eps (the 1e5-1e6 spikes seen on dm_control's
walker); a one-sided difference on the nominal state's side returns the derivative of the piece the
state is in.

Per column (each tangent direction of the state and each control), both one-sided differences are
taken from one batch of perturbed single steps run in C (`mujoco.rollout`, a thread pool, one MjData per
thread; the perturbed steps start from the nominal state's whole integration state: time, warm-start,
mocap). Where they agree to `tol` relative, the central difference is used (its error is then below
tol/2 and O(eps^2)). Where they disagree, the constraint sets of the nominal and of both perturbed
states are compared exactly (contacts by geom pair, then each constraint row's type, object and solver
state, from `mj_forward`) and the difference on the side that keeps the nominal set is used; if
neither side keeps it, the step is retried at eps / 10 (twice), then the smaller of the two is used
(counted in `stats["unresolved"]`).

What the gradient means at a switch: the derivative of the piece the nominal state lies in, the one
the trajectory actually follows, i.e. what central differences of the whole rollout in the gains
converge to whenever their perturbation does not itself change the constraint set somewhere along it.
"""
from __future__ import annotations

import copy
import os

import numpy as np

from envs.mujoco_state import FULLPHYSICS, USER, WARMSTART, StateLayout, mujoco

QPOS, QVEL, ACT = (int(mujoco.mjtState.mjSTATE_QPOS), int(mujoco.mjtState.mjSTATE_QVEL),
                   int(mujoco.mjtState.mjSTATE_ACT))


class ConsistentFD:
    """`jacobians(starts, x_next)`: d x_next / d x and d x_next / d u of a batch of steps (see module doc)."""

    def __init__(self, model: mujoco.MjModel, eps: float = 1e-6, tol: float = 1e-4, nthread: int | None = None,
                 solver_tolerance: float = 1e-12):
        m = self.model = copy.deepcopy(model)
        # MuJoCo's solver stops at opt.tolerance (1e-8 in most models); where it stops moves with the state,
        # which differences of eps = 1e-6 would read as derivative (1e-3 relative seen on dm_control's walker
        # lying on the floor). The perturbed steps and their nominal are solved to this tolerance instead.
        m.opt.tolerance = min(float(m.opt.tolerance), solver_tolerance) if m.opt.tolerance > 0 else 0.0
        self.eps, self.tol = eps, tol
        self.nq, self.nv, self.na, self.nu = m.nq, m.nv, m.na, m.nu
        self.ntan = 2 * m.nv + m.na
        self.ncol = self.ntan + m.nu
        self.layout = StateLayout(m)
        self.full_i, self.user_i, self.warm_i = (self.layout.index(s) for s in (FULLPHYSICS, USER, WARMSTART))
        self.x_i = self.layout.index(QPOS | QVEL | ACT)
        self.hinges_only = m.nq == m.nv  # no ball or free joints: tangent = qpos coordinates
        nthread = min(os.cpu_count() or 1, 8) if nthread is None else nthread
        from mujoco import rollout  # after envs.mujoco_state set MuJoCo up (import order)

        self.pool = rollout.Rollout(nthread=nthread)
        self.serial = rollout.Rollout(nthread=0)  # small batches: a thread hand-off costs more than the steps
        self.datas = [mujoco.MjData(m) for _ in range(max(1, nthread))]
        self.min_threaded = 64  # trajectories per batch below which the calling thread runs them
        self.scratch = mujoco.MjData(m)
        self.unit = np.zeros((self.ncol, self.layout.size))  # the additive perturbation of each column
        for c in range(self.ncol):
            self.unit[c] = self._perturbed(np.zeros(self.layout.size), c, 1.0) if c >= self.nv or self.hinges_only \
                else 0.0
        self.stats = {"columns": 0, "flagged": 0, "one_sided": 0, "shrunk": 0, "unresolved": 0}

    def close(self) -> None:
        """Stop the thread pool."""
        if self.pool is not None:
            self.pool.close()
            self.serial.close()
            self.pool = None

    # -- perturbations ---------------------------------------------------------------------------------
    def _perturbed(self, start: np.ndarray, col: int, delta: float) -> np.ndarray:
        """The integration state [nint] of `start` moved by delta along tangent column col (or control)."""
        s = start.copy()
        m, lay = self.model, self.layout
        if col < self.nv:
            qi = lay.index(QPOS)
            if self.hinges_only:
                s[qi[col]] += delta
            else:
                qpos = s[qi].copy()
                dq = np.zeros(self.nv)
                dq[col] = 1.0
                mujoco.mj_integratePos(m, qpos, dq, delta)
                s[qi] = qpos
        elif col < self.ntan:
            s[self.x_i[self.nq + col - self.nv]] += delta
        else:
            s[self.user_i[col - self.ntan]] += delta  # USER starts with ctrl
        return s

    def _tangent(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """b - a for states [..., nx] in tangent coordinates [..., ntan]."""
        if self.hinges_only:
            return b - a
        qa, qb = a[..., : self.nq].reshape(-1, self.nq), b[..., : self.nq].reshape(-1, self.nq)
        dq = np.empty((qa.shape[0], self.nv))
        for i in range(qa.shape[0]):
            mujoco.mj_differentiatePos(self.model, dq[i], 1.0, qa[i], qb[i])
        return np.concatenate([dq.reshape(*a.shape[:-1], self.nv), b[..., self.nq:] - a[..., self.nq:]], -1)

    def _run(self, starts: np.ndarray) -> np.ndarray:
        """One mj_step from each integration state [P, nint] in C, threaded: the next x [P, nx]."""
        assert self.pool is not None, "ConsistentFD used after close()"
        threaded = len(starts) >= self.min_threaded
        pool, datas = (self.pool, self.datas) if threaded else (self.serial, self.datas[0])
        state, _ = pool.rollout(self.model, datas, starts[:, self.full_i], starts[:, None, self.user_i],
                                control_spec=USER, nstep=1, initial_warmstart=starts[:, self.warm_i])
        return state[:, 0, 1:1 + self.nq + self.nv + self.na]  # FULLPHYSICS: time, qpos, qvel, act, ...

    def _signature(self, start: np.ndarray) -> tuple:
        """The constraint set at an integration state: contacts by geom pair, each row's type, id and state."""
        d = self.scratch
        mujoco.mj_setState(self.model, d, start, int(mujoco.mjtState.mjSTATE_INTEGRATION))
        mujoco.mj_forward(self.model, d)
        pairs = tuple(sorted((int(c.geom1), int(c.geom2)) for c in d.contact[: d.ncon]))
        n = d.nefc
        return pairs, tuple(d.efc_type[:n]), tuple(d.efc_id[:n]), tuple(d.efc_state[:n])

    # -- Jacobians -------------------------------------------------------------------------------------
    def jacobians(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tangent-space Jacobians [B, ntan, ntan] and [B, ntan, nu] of the steps from integration states
        starts [B, nint] (ctrl included)."""
        B, eps = starts.shape[0], self.eps
        perturbed = starts[:, None, None, :] + np.array([1.0, -1.0])[:, None, None] * eps * self.unit  # [B, 2, ncol, nint]
        if not self.hinges_only:  # ball and free joints: qpos moves along the manifold
            for b in range(B):
                for i, sign in enumerate((1.0, -1.0)):
                    for c in range(self.nv):
                        perturbed[b, i, c] = self._perturbed(starts[b], c, sign * eps)
        runs = self._run(np.concatenate([perturbed.reshape(-1, self.layout.size), starts]))
        y, x_next = runs[: -B].reshape(B, 2, self.ncol, -1), runs[-B:]
        y0 = x_next[:, None, :]
        plus = self._tangent(np.broadcast_to(y0, y[:, 0].shape), y[:, 0]) / eps  # [B, ncol, ntan]
        minus = self._tangent(y[:, 1], np.broadcast_to(y0, y[:, 1].shape)) / eps
        d = 0.5 * (plus + minus)
        flagged = ~self._agree(plus, minus)
        self.stats["columns"] += B * self.ncol
        self.stats["flagged"] += int(flagged.sum())
        eps_c = np.full(flagged.shape, eps)
        for _ in range(2):  # curvature on a scale below eps, or a switch between eps/10 and eps: smaller steps
            bs, cs = np.nonzero(flagged)
            if not len(bs):
                break
            eps_c[bs, cs] /= 10
            rows = np.stack([self._perturbed(starts[b], c, sign * eps_c[b, c])
                             for b, c in zip(bs, cs) for sign in (1.0, -1.0)])
            ys = self._run(rows).reshape(len(bs), 2, -1)
            p = self._tangent(x_next[bs], ys[:, 0]) / eps_c[bs, cs, None]
            m = self._tangent(ys[:, 1], x_next[bs]) / eps_c[bs, cs, None]
            ok = self._agree(p, m)
            d[bs[ok], cs[ok]] = 0.5 * (p[ok] + m[ok])
            flagged[bs[ok], cs[ok]] = False
            self.stats["shrunk"] += int(ok.sum())
        for b, c in zip(*np.nonzero(flagged)):
            d[b, c] = self._resolve(starts[b], x_next[b], int(c), plus[b, c], minus[b, c])
        jac = d.transpose(0, 2, 1)  # rows: output tangent, columns: input direction
        return jac[:, :, : self.ntan], jac[:, :, self.ntan:]

    def _agree(self, plus: np.ndarray, minus: np.ndarray) -> np.ndarray:
        """Whether one-sided differences [..., ntan] agree to tol, relative to the central one [...]."""
        return np.abs(plus - minus).max(-1) <= self.tol * (1.0 + 0.5 * np.abs(plus + minus).max(-1))

    def _resolve(self, start: np.ndarray, x_next: np.ndarray, col: int, plus: np.ndarray,
                 minus: np.ndarray) -> np.ndarray:
        """The difference of one disagreeing column, taken inside the nominal state's constraint set, at the
        largest of eps, eps/10, eps/100 where both sides keep the set and agree to tol."""
        nominal = self._signature(start)

        def keeps(delta: float) -> bool:
            return self._signature(self._perturbed(start, col, delta)) == nominal

        eps, fallback = self.eps, None
        for level in range(3):
            if level:  # a smaller step: closer than the switch, or than the curvature's length scale
                ys = self._run(np.stack([self._perturbed(start, col, s * eps) for s in (1.0, -1.0)]))
                plus, minus = self._tangent(x_next, ys[0]) / eps, self._tangent(ys[1], x_next) / eps
            side = (keeps(eps), keeps(-eps))
            if all(side) and (self._agree(plus, minus) or level == 2):
                self.stats["shrunk"] += level > 0
                return 0.5 * (plus + minus)
            if any(side) and fallback is None:  # second-order one-sided difference on the side keeping the set
                sign = 1.0 if side[0] else -1.0
                near = plus if side[0] else -minus  # (f(x + sign eps) - f(x)) / eps
                fallback = sign * near
                if keeps(2 * sign * eps):
                    (far,) = self._run(self._perturbed(start, col, 2 * sign * eps)[None])
                    fallback = sign * (2.0 * near - 0.5 * self._tangent(x_next, far) / eps)
            eps /= 10
        if fallback is not None:
            self.stats["one_sided"] += 1
            return fallback
        self.stats["unresolved"] += 1
        return plus if np.abs(plus).max() <= np.abs(minus).max() else minus
