"""metatune: differentiating through solves and trajectories, and meta-learning adaptation.

Public API: `solve`, `solve_least_squares`, `rollout`, `MetaTuner` (+ `MetaConfig`), `MetatuneError`.
"""
from metatune.adaptation import Adapted
from metatune.errors import MetatuneError
from metatune.least_squares import solve_least_squares
from metatune.meta import MetaConfig, MetaTuner
from metatune.rollout import Rollout, rollout
from metatune.solve import SolveInfo, solve

__all__ = ["solve", "solve_least_squares", "rollout", "Rollout", "MetaTuner", "MetaConfig", "Adapted",
           "SolveInfo", "MetatuneError"]
__version__ = "0.1.0"
