"""Depth-flip hypotheses: 2D keypoints leave each limb bone's depth sign open (a forearm pointing towards the
camera projects like one pointing away). Each bone of each limb is flipped in turn (its direction reflected
in the plane facing the camera, which keeps its projection to first order), every hypothesis is refined,
and they are weighed by their posterior, exp(-loss) (the loss is a negative log-density). The best one is
returned; the weighted spread of the joints over the hypotheses is added to the per-joint variance.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from pytorch3d.transforms import axis_angle_to_matrix, matrix_to_axis_angle
from torch import Tensor

from hmr.body_model import BodyModel
from hmr.joint_uncertainty import root_relative_joints
from hmr.objective import POSE, FitProblem, FitWeights, fit_loss, global_rotation, posed_joints, unpack
from hmr.robust_schedule import coarse_to_fine

# (parent, child, grandchild) SMPL joints of the four limbs: left/right arm (shoulder, elbow, wrist), left/right
# leg (hip, knee, ankle). Indices below 22 are the same in SMPL, SMPL-H and SMPL-X.
LIMBS = ((16, 18, 20), (17, 19, 21), (1, 4, 7), (2, 5, 8))
MAX_NATS = 10.0   # hypotheses this much less probable than the best (posterior ratio e^-10) are ignored


@dataclass
class FlipResult:
    params: Tensor         # [B, 85] the most probable hypothesis
    spread_var_mm2: Tensor  # [B, 24] per-axis variance of each root-relative joint over the hypotheses, mm^2
    weights: Tensor        # [H, B] posterior weight of each hypothesis (row 0: the fit as given)
    loss: Tensor           # [H, B] fit loss of each refined hypothesis
    hypotheses: Tensor     # [H, B, 85] the refined hypotheses


def global_rotations(body: BodyModel, params: Tensor,  # [B, 85]
                     ) -> Tensor:  # [B, J, 3, 3] each joint's rotation in the camera frame
    orient, pose, _, _ = unpack(params)
    local = body.rotations(global_rotation(orient), pose)
    parents = body.smpl.parents.tolist()
    out = [local[:, 0]]
    for j in range(1, local.shape[1]):
        out.append(out[parents[j]] @ local[:, j])
    return torch.stack(out, 1)


def _rotation_between(a: Tensor, b: Tensor) -> Tensor:  # [B, 3] -> [B, 3, 3], the rotation taking a onto b
    a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    axis = torch.linalg.cross(a, b)
    angle = torch.atan2(axis.norm(dim=-1), (a * b).sum(-1))
    return axis_angle_to_matrix(axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12) * angle[:, None])


def flip_bone(body: BodyModel, params: Tensor,  # [B, 85]
              joint: int, child: int) -> Tensor:  # [B, 85]
    """The body with the bone joint -> child reflected in the plane through `joint` facing the camera (the
    rotation at `joint` changed, everything below it carried along)."""
    pos = posed_joints(body, params)
    ray = pos[:, joint] / pos[:, joint].norm(dim=-1, keepdim=True)
    bone = pos[:, child] - pos[:, joint]
    flipped = bone - 2 * (bone * ray).sum(-1, keepdim=True) * ray
    rot = _rotation_between(bone, flipped)                                    # camera frame
    g = global_rotations(body, params)
    parent = g[:, int(body.smpl.parents[joint])]
    local = axis_angle_to_matrix(params[:, POSE].reshape(-1, 23, 3)[:, joint - 1])
    new_local = parent.transpose(1, 2) @ rot @ parent @ local
    pose = params[:, POSE].reshape(-1, 23, 3).clone()
    pose[:, joint - 1] = matrix_to_axis_angle(new_local)
    out = params.clone()
    out[:, POSE] = pose.reshape(-1, 69)
    return out


def hypotheses(body: BodyModel, params: Tensor,  # [B, 85]
               ) -> Tensor:  # [1 + 12, B, 85]: the fit, then per limb the upper, the lower and both bones flipped
    out = [params]
    with torch.no_grad():
        for p, c, g in LIMBS:
            upper = flip_bone(body, params, p, c)
            out += [upper, flip_bone(body, params, c, g), flip_bone(body, upper, c, g)]
    return torch.stack(out)


def _repeat(prob: FitProblem, h: int) -> FitProblem:
    """The same B problems H times over (hypothesis-major), for one batched refinement."""
    return replace(prob, **{f.name: getattr(prob, f.name).repeat(h, *[1] * (getattr(prob, f.name).dim() - 1))
                            for f in fields(prob) if isinstance(getattr(prob, f.name), Tensor)})


def fit_flips(body: BodyModel, params: Tensor,  # [B, 85] a fit
              prob: FitProblem, weights: FitWeights, refine_steps: int = 20, lr: float = 0.02) -> FlipResult:
    """Refine every depth-flip hypothesis of the fit; the most probable one and the joints' spread over them."""
    hyp = hypotheses(body, params)                                             # [H, B, 85]
    h, b = hyp.shape[:2]
    flat = coarse_to_fine(body, hyp.flatten(0, 1), _repeat(prob, h), weights, steps_per_stage=refine_steps, lr=lr,
                          schedule=(weights.robust_sigma,))
    flat = torch.cat([params, flat[b:]])      # the fit itself stays as it was (it was refined already)
    with torch.no_grad():
        loss = fit_loss(body, flat, _repeat(prob, h), weights).view(h, b)
        joints = root_relative_joints(body, flat).view(h, b, 24, 3)
    nats = loss - loss.amin(0)
    w = torch.where(nats <= MAX_NATS, torch.exp(-nats), torch.zeros(()))
    w = w / w.sum(0)
    best = loss.argmin(0)                                                      # [B]
    cols = torch.arange(b, device=best.device)
    best_joints = joints[best, cols]                                           # [B, 24, 3]
    spread = (w[..., None] * (1000 * (joints - best_joints)).pow(2).sum(-1)).sum(0) / 3   # [B, 24] per axis
    hyp = flat.view(h, b, -1)
    return FlipResult(params=hyp[best, cols], spread_var_mm2=spread, weights=w, loss=loss, hypotheses=hyp)
