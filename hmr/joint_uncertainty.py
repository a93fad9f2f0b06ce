"""Per-joint 3D uncertainty: per-parameter std pushed through the body's Jacobian (first-order)."""
from __future__ import annotations

import torch
from torch import Tensor

from hmr.body_model import BodyModel
from hmr.objective import posed_joints


def root_relative_joints(body: BodyModel, params: Tensor,  # [B, 85]
                         ) -> Tensor:  # [B, 24, 3]
    j = posed_joints(body, params)[:, :24]
    return j - j[:, :1]


def joint_jacobian(body: BodyModel, params: Tensor,  # [B, 85]
                   ) -> Tensor:  # [B, 72, 85] d(root-relative joints) / d(params), per person
    """Jacobian of each person's 24 root-relative joints (flattened x, y, z) in its own parameters."""
    x = params.detach().requires_grad_()
    with torch.enable_grad():
        out = root_relative_joints(body, x).flatten(1)            # [B, 72]
        eye = torch.eye(out.shape[1], dtype=out.dtype, device=out.device)
        probes = eye[:, None].expand(-1, out.shape[0], -1)         # [72, B, 72]
        (jac,) = torch.autograd.grad(out, x, probes, is_grads_batched=True)  # [72, B, 85]
    return jac.permute(1, 0, 2)


def joint_std_mm(body: BodyModel, params: Tensor,  # [B, 85]
                 param_std: Tensor,  # [B, 85]
                 ) -> Tensor:  # [B, 24] per-axis std of each root-relative joint, mm
    """sqrt(trace(J diag(std^2) J^T) / 3) per joint, in millimetres (the root joint is 0 by construction)."""
    jac = joint_jacobian(body, params)                                       # [B, 72, 85]
    var = (jac.pow(2) * param_std.pow(2)[:, None]).sum(-1).view(-1, 24, 3)   # [B, 24, 3]
    return 1000 * (var.sum(-1) / 3).sqrt()
