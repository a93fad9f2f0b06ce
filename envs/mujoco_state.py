"""MuJoCo's whole integration state as one vector, split the way `mujoco.rollout` takes it.

A torch state is x = [qpos, qvel, act]; MuJoCo's next step also depends on the time, the solver's
warm-start, mocap poses, applied forces and the rest of `mjSTATE_INTEGRATION`. `StateMemo` remembers that
rest for every state a model has produced, so stepping a produced state continues exactly as `mj_step`
in a loop does (no reset: warm-start, time and mocap carry over), and a state nobody produced starts from
the model's reset values.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from metatune.mujoco_loader import load_mujoco

mujoco = load_mujoco()

S = mujoco.mjtState
INTEGRATION = int(S.mjSTATE_INTEGRATION)
FULLPHYSICS = int(S.mjSTATE_FULLPHYSICS)
USER = int(S.mjSTATE_USER)
WARMSTART = int(S.mjSTATE_WARMSTART)


class StateLayout:
    """Where each part of mjSTATE_INTEGRATION lies: index arrays into the integration vector."""

    def __init__(self, model: mujoco.MjModel):
        self.size = mujoco.mj_stateSize(model, INTEGRATION)
        where: dict[int, np.ndarray] = {}
        at = 0
        for bit in range(int(S.mjNSTATE)):  # components are stored in the order of their bits
            n = mujoco.mj_stateSize(model, 1 << bit)
            where[1 << bit] = np.arange(at, at + n)
            at += n
        self._where = where

    def index(self, spec: int) -> np.ndarray:
        """Indices of the components in `spec` (their order within the spec's own vector)."""
        return np.concatenate([idx for bit, idx in self._where.items() if spec & bit])


class StateMemo:
    """Integration states after each produced step, keyed by the bytes of [qpos, qvel, act] (LRU-bounded)."""

    def __init__(self, model: mujoco.MjModel, capacity: int = 1 << 16):
        data = mujoco.MjData(model)
        self.reset = np.empty(mujoco.mj_stateSize(model, INTEGRATION))
        mujoco.mj_getState(model, data, self.reset, INTEGRATION)
        self.capacity = capacity
        self._seen: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def start(self, x: np.ndarray, xi: np.ndarray) -> np.ndarray:
        """The integration state to step x [nx] from: the remembered one, or the reset one holding x (at indices xi)."""
        found = self._seen.get(x.tobytes())
        if found is not None:
            self._seen.move_to_end(x.tobytes())
            return found.copy()
        s = self.reset.copy()
        s[xi] = x
        return s

    def remember(self, x: np.ndarray, state: np.ndarray) -> None:
        """Record the integration state [nint] that holds the produced x [nx]."""
        self._seen[x.tobytes()] = state
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
