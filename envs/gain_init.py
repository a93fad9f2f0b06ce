"""Where adaptation starts: one shared gain set, or a small neural policy mapping task features to gains.

Both are nn.Modules mapping a batch of robots (list of RobotTask) to controller parameters [B, ...],
which is what `metatune.MetaTuner` meta-learns as its initialisation.
"""
from __future__ import annotations

from torch import Tensor, nn

from envs.tasks import RobotTask
from envs.tuning_problem import TuningProblem


class SharedGains(nn.Module):
    """The same (meta-learned) parameters for every robot."""

    def __init__(self, init: Tensor):
        super().__init__()
        self.value = nn.Parameter(init.detach().clone())

    def forward(self, tasks: list[RobotTask]) -> Tensor:  # -> [B, ...]
        return self.value.expand(len(tasks), *self.value.shape)


class NeuralGains(nn.Module):
    """The portable neural gain policy: parameters = base + MLP(task features), the MLP starting at zero."""

    def __init__(self, problem: TuningProblem, hidden: int = 32):
        super().__init__()
        base = problem.init_params()
        self.problem, self.shape = problem, base.shape
        features = problem.features(problem.sample_tasks(1, 0)[0]).numel()
        self.base = nn.Parameter(base.detach().clone())
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, base.numel()))
        self.net.to(base)  # the base's dtype and device
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, tasks: list[RobotTask]) -> Tensor:  # -> [B, ...]
        feats = self.problem.task_features(tasks).to(self.base.dtype)
        return self.base + self.net(feats).reshape(len(tasks), *self.shape)
