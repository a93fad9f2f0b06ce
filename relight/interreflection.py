"""One-bounce diffuse interreflection: surface patches lit by the light re-emit their diffuse radiance.

Units follow `shading.blinn_phong`: a Lambertian surface of albedo rho under irradiance-like E
(I cos / r^2) has radiance rho * E. A patch j of radiance L_j, area A_j, seen from point x then adds

    E_x += L_j cos_x cos_j A_j / (pi r^2 + A_j) * V(x, j)

(the point-to-disk form factor of Wallace et al. 1989: exact for a coaxial facing disk of area A_j,
-> cos cos A / (pi r^2) for small patches, bounded as r -> 0), and the point's indirect radiance is
rho_x E_x. V tests the segment x -> patch against the scene's solids (boxes and spheres), the shapes
the mesh tessellates. The transfer is geometry-only, so it is built once and reused for every light.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Box:
    """Axis-aligned solid box from `lo` to `hi`."""
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]


@dataclass(frozen=True)
class Sphere:
    """Solid ball."""
    centre: tuple[float, float, float]
    radius: float


Solid = Box | Sphere
SHRINK = 1e-3  # solids shrink by this much for the occlusion test, so points on their own surface are outside


def segments_blocked(starts: Tensor,  # [R, 3]
                     ends: Tensor,  # [P, 3]
                     solids: list[Solid]) -> Tensor:  # [R, P] bool
    """Whether the segment from each start to each end passes through any solid."""
    d = ends[None] - starts[:, None]  # [R, P, 3]
    p = starts[:, None].expand_as(d)
    blocked = torch.zeros(d.shape[:2], dtype=torch.bool, device=d.device)
    for s in solids:
        if isinstance(s, Box):
            lo = torch.tensor(s.lo, dtype=d.dtype) + SHRINK
            hi = torch.tensor(s.hi, dtype=d.dtype) - SHRINK
            safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
            t1, t2 = (lo - p) / safe, (hi - p) / safe  # slab test
            t_in = torch.minimum(t1, t2).amax(-1)
            t_out = torch.maximum(t1, t2).amin(-1)
            blocked |= (t_in < t_out) & (t_out > 0) & (t_in < 1)
        else:
            c = torch.tensor(s.centre, dtype=d.dtype)
            r = s.radius - SHRINK
            m = p - c
            a = (d * d).sum(-1).clamp_min(1e-18)
            b = (m * d).sum(-1)
            disc = b * b - a * ((m * m).sum(-1) - r * r)
            root = disc.clamp_min(0).sqrt()
            t0, t1 = (-b - root) / a, (-b + root) / a
            blocked |= (disc > 0) & (t1 > 0) & (t0 < 1)
    return blocked


def bounce_transfer(points: Tensor,  # [R, 3] receivers
                    normals: Tensor,  # [R, 3] unit, outward
                    centres: Tensor,  # [P, 3] emitting patches
                    patch_normals: Tensor,  # [P, 3] unit, outward
                    areas: Tensor,  # [P]
                    solids: list[Solid], chunk: int = 256) -> Tensor:  # [R, P]
    """T[x, j] = cos_x cos_j A_j / (pi r^2 + A_j) V(x, j): irradiance at x per unit radiance of patch j."""
    rows = []
    for s in range(0, points.shape[0], chunk):
        x, n = points[s:s + chunk], normals[s:s + chunk]
        d = centres[None] - x[:, None]  # [B, P, 3]
        r2 = (d * d).sum(-1).clamp_min(1e-12)
        w = d / r2.sqrt()[..., None]
        cos_x = (n[:, None] * w).sum(-1).clamp_min(0)
        cos_j = (-(patch_normals[None] * w).sum(-1)).clamp_min(0)
        t = cos_x * cos_j * areas / (math.pi * r2 + areas)
        vis = ~segments_blocked(x, centres, solids) if solids else torch.ones_like(t, dtype=torch.bool)
        rows.append(t * vis)
    return torch.cat(rows)


def bounce_irradiance(transfer: Tensor,  # [R, P] from bounce_transfer
                      patch_radiance: Tensor,  # [P, 3] diffuse radiance each patch emits
                      ) -> Tensor:  # [R, 3] indirect irradiance at each receiver (times albedo: its radiance)
    """One bounce: the patches' radiance gathered at the receivers."""
    return transfer @ patch_radiance
