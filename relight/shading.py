"""Blinn-Phong shading of Gaussians under one light (our own: PyTorch3D's is Phong, without falloff)."""
from __future__ import annotations

import torch
from torch import Tensor

from relight.light import Light


def blinn_phong(points: Tensor,  # [N, 3]
                normals: Tensor,  # [N, 3] unit
                eye: Tensor,  # [3] camera position
                albedo: Tensor,  # [N, 3] diffuse reflectance
                specular: Tensor,  # [N, 1] specular coefficient
                shininess: Tensor,  # [N, 1] Blinn-Phong exponent
                ambient: Tensor,  # [N, 3] light-independent radiance
                light: Light,
                intensity: Tensor,  # [3] light colour times power
                visibility: Tensor,  # [N] fraction of the light reaching each point
                reference_distance: float = 1.0,  # a directional light's irradiance is I / reference_distance^2
                ) -> Tensor:  # [N, 3] outgoing radiance
    """ambient + visibility * E (albedo max(n.l, 0) + ks max(n.h, 0)^shininess [n.l > 0]), E = I power / r^2."""
    to_eye = eye - points
    v = to_eye / to_eye.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    n = torch.where((normals * v).sum(-1, keepdim=True) < 0, -normals, normals)  # face the viewer
    l, falloff, _ = light.incidence(points, reference_distance)
    h = l + v
    h = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    n_dot_l = (n * l).sum(-1, keepdim=True)
    lit = n_dot_l > 0
    diffuse = albedo * n_dot_l.clamp_min(0)
    n_dot_h = (n * h).sum(-1, keepdim=True).clamp(1e-6, 1.0)
    spec = torch.where(lit, specular * n_dot_h**shininess, torch.zeros_like(specular))
    irradiance = intensity * light.power_tensor(points) * (visibility * falloff)[:, None]
    return ambient + irradiance * (diffuse + spec)
