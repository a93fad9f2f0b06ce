"""The fitting objective: robust reprojection plus pose, joint-angle, shape and camera-depth priors.

A person's parameters are one vector of 85 values: orientation (3, axis-angle, relative to facing the
camera), body pose (69), shape (10) and camera-frame translation (3). Every term is a negative
log-density, so the curvature of the loss is a precision and its inverse a variance.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from smplx.lbs import batch_rodrigues
from torch import Tensor

from hmr.body_model import BodyModel
from hmr.camera import FACING_CAMERA, SHOULDERS, TORSO_PAIRS, project
from hmr.pose_limits import pose_limits, pose_prior_stats

ORIENT, POSE, BETAS, TRANSL = slice(0, 3), slice(3, 72), slice(72, 82), slice(82, 85)
PARAM_DIM = 85


def unpack(params: Tensor,  # [B, 85]
           ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(orientation residual [B,3], body_pose [B,69], betas [B,10], transl [B,3])."""
    return params[:, ORIENT], params[:, POSE], params[:, BETAS], params[:, TRANSL]


def global_rotation(orient: Tensor,  # [B, 3] axis-angle relative to facing the camera
                    ) -> Tensor:  # [B, 3, 3]
    """The root rotation in camera coordinates: facing the camera, then the residual in the body frame."""
    facing = batch_rodrigues(torch.tensor([FACING_CAMERA], dtype=orient.dtype, device=orient.device))
    return facing @ batch_rodrigues(orient)


def posed_joints(body: BodyModel, params: Tensor,  # [B, 85]
                 ) -> Tensor:  # [B, 45, 3] camera coordinates
    orient, pose, betas, transl = unpack(params)
    return body.joints(betas, global_rotation(orient), pose) + transl[:, None]


@dataclass
class FitProblem:
    """What test-time fitting sees for B people: keypoints, camera intrinsics and the torso-length depth."""
    kp_xy: Tensor       # [B, K, 2] pixels
    kp_conf: Tensor     # [B, K]
    joint_map: list[int]  # smplx joint index of each of the K keypoints
    focal: Tensor       # [B] pixels
    centre: Tensor      # [B, 2] principal point
    transl_init: Tensor  # [B, 3] metres: the mean body placed by the torso length (similar triangles)
    scale: Tensor       # [B] pixels per unit of residual (1% of the 2D torso length)

    def __len__(self) -> int:
        return self.kp_xy.shape[0]


def torso_scale(kp_xy: Tensor,  # [B, K, 2]
                kp_conf: Tensor,  # [B, K]
                joint_map: list[int]) -> Tensor:  # [B]
    """1% of the mean 2D torso segment length (falls back to the shoulder width, then the keypoint box's
    height / 3)."""
    pos = {j: i for i, j in enumerate(joint_map)}
    lengths, counts = (torch.zeros(kp_xy.shape[0], device=kp_xy.device) for _ in range(2))
    for a, b in TORSO_PAIRS:
        if a in pos and b in pos:
            ok = (kp_conf[:, pos[a]] > 0) & (kp_conf[:, pos[b]] > 0)
            lengths += torch.where(ok, (kp_xy[:, pos[a]] - kp_xy[:, pos[b]]).norm(dim=-1), torch.zeros(()))
            counts += ok.float()
    big = torch.where(kp_conf > 0, kp_xy[..., 1], torch.nan)
    box = (big.nan_to_num(-1e9).amax(1) - big.nan_to_num(1e9).amin(1)).clamp_min(1.0)
    fallback = box / 3
    a, b = SHOULDERS
    if a in pos and b in pos:
        ok = (kp_conf[:, pos[a]] > 0) & (kp_conf[:, pos[b]] > 0)
        fallback = torch.where(ok, (kp_xy[:, pos[a]] - kp_xy[:, pos[b]]).norm(dim=-1).clamp_min(1.0), fallback)
    return torch.where(counts > 0, lengths / counts.clamp_min(1), fallback) / 100


@dataclass
class FitWeights:
    """Scales of the terms (each term is a negative log-density with these spreads)."""
    keypoint_std: float = 1.0     # keypoint noise, in percent of the 2D torso length
    robust_sigma: float = 10.0    # Geman-McClure scale, same units: residuals beyond it count less and less
    pose_prior: float = 1.0       # multiplies the Gaussian prior fitted to the joint-limit box
    angle_std: float = 0.05       # radians: spread of the penalty beyond the joint limits
    shape_std: float = 1.0        # prior std of each beta
    depth_rel_std: float = 0.2    # relative std of depth around the torso-length estimate


def geman_mcclure(sq: Tensor, sigma: float) -> Tensor:
    """rho(r) = sigma^2 r^2 / (sigma^2 + r^2) of squared residuals `sq`."""
    return sigma**2 * sq / (sigma**2 + sq)


def fit_loss_terms(body: BodyModel, params: Tensor,  # [B, 85]
                   prob: FitProblem, w: FitWeights) -> dict[str, Tensor]:  # each [B]
    """Per-person values of each term of the objective."""
    _, pose, betas, transl = unpack(params)
    joints = posed_joints(body, params)
    uv = project(joints[:, prob.joint_map], prob.focal, prob.centre)
    sq = ((uv - prob.kp_xy) / prob.scale[:, None, None]).pow(2).sum(-1)           # [B, K]
    reproj = 0.5 * (prob.kp_conf * geman_mcclure(sq, w.robust_sigma)).sum(1) / w.keypoint_std**2
    mean, std = (t.to(pose.device) for t in pose_prior_stats())
    pose_term = 0.5 * w.pose_prior * ((pose - mean) / std).pow(2).sum(1)
    lo, hi = (t.to(pose.device) for t in pose_limits())
    angle = 0.5 * ((torch.relu(pose - hi) + torch.relu(lo - pose)) / w.angle_std).pow(2).sum(1)
    shape = 0.5 * (betas / w.shape_std).pow(2).sum(1)
    z0 = prob.transl_init[:, 2]
    depth = 0.5 * ((transl[:, 2] - z0) / (w.depth_rel_std * z0)).pow(2)
    return {"reprojection": reproj, "pose_prior": pose_term, "angle_prior": angle, "shape_prior": shape,
            "depth_prior": depth}


def fit_loss(body: BodyModel, params: Tensor,  # [B, 85]
             prob: FitProblem, w: FitWeights) -> Tensor:  # [B]
    """Per-person objective: the sum of the terms."""
    return sum(fit_loss_terms(body, params, prob, w).values())


def hessian_diagonal(body: BodyModel, params: Tensor,  # [B, 85]
                     prob: FitProblem, w: FitWeights) -> Tensor:  # [B, 85]
    """Exact diagonal of each person's Hessian of the objective (85 Hessian-vector products)."""
    x = params.detach().requires_grad_()
    with torch.enable_grad():
        (g,) = torch.autograd.grad(fit_loss(body, x, prob, w).sum(), x, create_graph=True)
        cols = [torch.autograd.grad(g[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1])]
    return torch.stack(cols, 1).detach()


def laplace_std(body: BodyModel, params: Tensor,  # [B, 85]
                prob: FitProblem, w: FitWeights) -> Tensor:  # [B, 85]
    """Per-parameter std of the diagonal Laplace approximation at a fit.

    The robust kernel can make the curvature vanish or go negative away from a minimum; it is floored at
    1, so no parameter is reported less certain than +-1 of its unit (radian, metre, beta).
    """
    return hessian_diagonal(body, params, prob, w).clamp_min(1.0).rsqrt()
