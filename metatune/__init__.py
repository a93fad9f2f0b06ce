"""metatune: differentiating through solves and trajectories, and meta-learning adaptation.

Public API: `solve`, `solve_least_squares`, `rollout`, `MetaTuner` (+ `MetaConfig`), `MetatuneError`.
The names import on first use (PEP 562), so `metatune --help` and the CLI's input checks run before torch
is imported.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from metatune.errors import MetatuneError
from metatune.lazy import install_lazy_attributes
from metatune.mujoco_loader import guard_triton

_LAZY = {"Adapted": "metatune.adaptation", "solve_least_squares": "metatune.least_squares",
         "MetaConfig": "metatune.meta", "MetaTuner": "metatune.meta", "Rollout": "metatune.rollout",
         "rollout": "metatune.rollout", "SolveInfo": "metatune.solve", "solve": "metatune.solve"}

if TYPE_CHECKING:
    from metatune.adaptation import Adapted
    from metatune.least_squares import solve_least_squares
    from metatune.meta import MetaConfig, MetaTuner
    from metatune.rollout import Rollout, rollout
    from metatune.solve import SolveInfo, solve


install_lazy_attributes(__name__, _LAZY)
guard_triton()  # a script that imported MuJoCo first must not crash in torch (metatune/mujoco_loader.py)


__all__ = ["solve", "solve_least_squares", "rollout", "Rollout", "MetaTuner", "MetaConfig", "Adapted",
           "SolveInfo", "MetatuneError"]
__version__ = "0.1.0"
