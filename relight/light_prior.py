"""The start of the light-dependent parameters for any light, holding the shared light-independent model."""
from __future__ import annotations

from torch import nn

from relight.model import LightParams, RelightModel


class LightPrior(nn.Module):
    """Maps a light condition to the initial light-dependent parameters (the MAML start).

    It owns the shared `RelightModel`, so meta-training (and joint training) update geometry and
    materials through the same module; the inner loop adapts only what `forward` returns.
    """

    def __init__(self, model: RelightModel) -> None:
        super().__init__()
        self.model = model
        log_intensity, shadow, indirect = model.light_init()
        self.log_intensity = nn.Parameter(log_intensity)  # [3]
        self.shadow = nn.Parameter(shadow)  # [N]
        self.indirect = nn.Parameter(indirect)  # [N, 3]

    def forward(self, task: object = None) -> LightParams:
        return (self.log_intensity, self.shadow, self.indirect)

