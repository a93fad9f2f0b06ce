"""Points on the surfaces of a fitted model: what a run from scratch starts again from (docs/relight.md)."""
from __future__ import annotations

import torch
from torch import Tensor

from metatune.errors import MetatuneError
from relight.gaussians import Gaussians, quat_to_rotmat

OPAQUE = 0.5  # Gaussians at least this fraction of the most opaque one's opacity are surface; fainter ones are
# floaters or half-pruned (relative, so that a fit ended soon after its opacity reset still has surfaces)
CLAMP = 2.0  # samples within this many standard deviations of their Gaussian's centre


def surface_samples(g: Gaussians, n: int, seed: int) -> Tensor:  # [n, 3]
    """n points drawn from the opaque Gaussians (OPAQUE), each chosen with probability proportional to its area (the
    product of its two largest scales) and placed by its own distribution (truncated at CLAMP sigma): close to
    uniform on the surfaces they cover, as a scanned or generated point cloud is, whatever size the fit left
    each Gaussian."""
    if len(g) == 0:
        raise MetatuneError("the fitted model has no Gaussian left to start again from; give a point cloud")
    with torch.no_grad():
        scales = g.scales.detach()
        ordered = scales.sort(-1).values
        opacity = g.opacities.detach()
        weight = ordered[:, 1] * ordered[:, 2] * (opacity >= OPAQUE * opacity.max())
        weight = torch.where(torch.isfinite(weight) & torch.isfinite(g.means.detach()).all(-1), weight, 0.0)
        if not bool((weight > 0).any()):
            raise MetatuneError("the fitted model has nothing to start again from (no opaque Gaussian of finite "
                                "size and position); fit longer or give a point cloud")
        gen = torch.Generator().manual_seed(seed)
        pick = torch.multinomial(weight.cpu().double(), n, replacement=True, generator=gen)
        z = torch.randn(n, 3, generator=gen, dtype=scales.dtype).clamp(-CLAMP, CLAMP)
        pick_d, z = pick.to(scales.device), z.to(scales.device)
        offset = (quat_to_rotmat(g.quats.detach()[pick_d]) @ (scales[pick_d] * z)[..., None]).squeeze(-1)
        return (g.means.detach()[pick_d] + offset).cpu()
