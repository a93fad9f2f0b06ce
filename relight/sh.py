"""Real spherical harmonics of degree 0-3 in the convention of 3D Gaussian splatting viewers.

The basis is the orthonormal real SH with the Condon-Shortley phase, Y_lm = sqrt(2) Im(Y_l^|m|) for m < 0,
Y_l^0 for m = 0 and sqrt(2) Re(Y_l^m) for m > 0 (Y_l^m the complex harmonics with the phase, scipy's), written
as polynomials in the unit direction (x, y, z); ordered l = 0..3, m = -l..l. Its constants are those of
graphdeco's `sh_utils` (derived here from their closed forms). A viewer shows a Gaussian's colour as
max(sum_k c_k Y_k(d) + 0.5, 0) with d = normalise(mean - camera position).

Coefficient tensors are [..., K, C]: K = (degree + 1)^2 coefficients (coefficient-major, like graphdeco's
`features`), C colour channels.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from metatune.errors import MetatuneError

SH_C0 = 0.5 / math.sqrt(math.pi)  # 0.28209...
SH_C1 = math.sqrt(3 / (4 * math.pi))  # 0.48860...
_A2, _B2, _D2 = 0.5 * math.sqrt(15 / math.pi), 0.25 * math.sqrt(5 / math.pi), 0.25 * math.sqrt(15 / math.pi)
SH_C2 = (_A2, -_A2, _B2, -_A2, _D2)
_A3, _B3 = 0.25 * math.sqrt(35 / (2 * math.pi)), 0.5 * math.sqrt(105 / math.pi)
_D3, _E3, _F3 = 0.25 * math.sqrt(21 / (2 * math.pi)), 0.25 * math.sqrt(7 / math.pi), 0.25 * math.sqrt(105 / math.pi)
SH_C3 = (-_A3, _B3, -_D3, _E3, -_D3, _F3, -_A3)
MAX_DEGREE = 3


def num_coeffs(degree: int) -> int:
    """Coefficients per channel of SH up to `degree`: (degree + 1)^2."""
    if not 0 <= degree <= MAX_DEGREE:
        raise MetatuneError(f"SH degree must be 0 to {MAX_DEGREE}, got {degree}")
    return (degree + 1) ** 2


def degree_of(k: int) -> int:
    """The SH degree of K = (degree + 1)^2 coefficients per channel."""
    for d in range(MAX_DEGREE + 1):
        if (d + 1) ** 2 == k:
            return d
    raise MetatuneError(f"{k} coefficients per channel is not SH of degree 0-{MAX_DEGREE} (1, 4, 9 or 16)")


def sh_basis(dirs: Tensor,  # [..., 3] unit
             degree: int = MAX_DEGREE) -> Tensor:  # [..., (degree + 1)^2]
    """The real SH basis functions at unit directions, l = 0..degree, m = -l..l."""
    num_coeffs(degree)
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * x * z,
                SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * x * y * z, SH_C3[2] * y * (4 * zz - xx - yy),
                SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, -1)


def eval_sh(coeffs: Tensor,  # [..., K, C]
            dirs: Tensor,  # [..., 3] unit
            ) -> Tensor:  # [..., C]
    """sum_k coeffs_k Y_k(dirs); the degree follows from K."""
    basis = sh_basis(dirs, degree_of(coeffs.shape[-2]))
    return (basis[..., :, None] * coeffs).sum(-2)


def sh_colors(coeffs: Tensor,  # [N, K, C]
              means: Tensor,  # [N, 3]
              eye: Tensor,  # [3] camera position
              ) -> Tensor:  # [N, C]
    """What a 3DGS viewer shows: max(SH(normalise(mean - eye)) + 0.5, 0)."""
    d = means - eye
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (eval_sh(coeffs, d) + 0.5).clamp_min(0.0)


def fibonacci_sphere(n: int, dtype: torch.dtype = torch.float32) -> Tensor:  # [n, 3] unit, near-uniform
    """n directions on the golden-angle spiral: equal-area bands in z, so means over them are quadratures."""
    if n < 1:
        raise MetatuneError(f"need at least one direction, got {n}")
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    r = (1 - z * z).clamp_min(0).sqrt()
    phi = math.pi * (3 - math.sqrt(5)) * i
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1).to(dtype)
