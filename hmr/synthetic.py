"""Synthetic people: poses within joint limits, shapes, cameras and image sizes, projected to BODY_25
keypoints with pixel noise, missing joints and outliers. Train and held-out splits differ by seed."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from hmr.body_model import BodyModel
from hmr.camera import default_focal, init_translation, project
from hmr.keypoints import BODY25_TO_SMPLX
from hmr.layouts import body25_index
from hmr.objective import PARAM_DIM, FitProblem, posed_joints, torso_scale
from hmr.pose_limits import sample_poses

SPLIT_SEEDS = {"train": 0, "heldout": 1, "hard": 2}
# The hard split: every joint angle perturbed by up to this much more (radians), beyond the limits too.
HARD_EXTRA_RAD = 0.4


@dataclass
class SyntheticConfig:
    noise_px: float = 2.0         # std of Gaussian pixel noise on visible keypoints
    missing: float = 0.2          # fraction of keypoints dropped (confidence 0)
    outliers: float = 0.05        # fraction replaced by a uniform point in the image (confidence kept high)
    min_width: int = 320
    max_width: int = 1280
    yaw_deg: float = 60.0         # turn about the body's vertical axis, relative to facing the camera
    tilt_deg: float = 10.0
    beta_std: float = 1.0
    height_frac: tuple[float, float] = (0.45, 0.85)  # person height / image height
    pose_extra_rad: float = 0.0   # each pose value perturbed uniformly by up to this much (the hard split: 0.4)


@dataclass
class People:
    """Ground truth and observations for B synthetic people (one image each)."""
    params: Tensor    # [B, 85] true parameters (see hmr.objective)
    kp_xy: Tensor     # [B, 25, 2] BODY_25 pixels (0 where missing)
    kp_conf: Tensor   # [B, 25]
    width: Tensor     # [B]
    height: Tensor    # [B]
    focal: Tensor     # [B]

    def __len__(self) -> int:
        return self.params.shape[0]

    def subset(self, idx: Tensor | slice) -> "People":
        return People(self.params[idx], self.kp_xy[idx], self.kp_conf[idx], self.width[idx], self.height[idx],
                      self.focal[idx])


def make_people(body: BodyModel, n: int, seed: int, cfg: SyntheticConfig | None = None) -> People:
    """n people, deterministic in seed, on the body model's device (drawn on the CPU: one seed, one set of people
    on every device)."""
    cfg = cfg or SyntheticConfig()
    dev = body.j_template.device
    g = torch.Generator().manual_seed(seed)
    u = lambda *s: torch.rand(*s, generator=g).to(dev)  # noqa: E731
    pose = sample_poses(n, g).to(dev)
    if cfg.pose_extra_rad > 0:
        pose = pose + cfg.pose_extra_rad * (2 * u(n, 69) - 1)
    betas = (cfg.beta_std * torch.randn(n, 10, generator=g).to(dev)).clamp(-2.5, 2.5)
    deg = math.pi / 180
    orient = torch.stack([(2 * u(n) - 1) * cfg.tilt_deg * deg, (2 * u(n) - 1) * cfg.yaw_deg * deg,
                          (2 * u(n) - 1) * cfg.tilt_deg * deg], 1)
    width = (cfg.min_width + (cfg.max_width - cfg.min_width) * u(n)).round()
    aspect = torch.tensor([0.75, 1.0, 4 / 3], device=dev)[torch.randint(0, 3, (n,), generator=g).to(dev)]
    height = (width * aspect).round()
    focal = default_focal(width, height)
    centre = torch.stack([width, height], 1) / 2

    with torch.no_grad():
        joints = posed_joints(body, torch.cat([orient, pose, betas, torch.zeros(n, 3, device=dev)], 1))
        extent = joints[..., 1].amax(1) - joints[..., 1].amin(1)
        frac = cfg.height_frac[0] + (cfg.height_frac[1] - cfg.height_frac[0]) * u(n)
        depth = focal * extent / (frac * height)
        # Place the body's box centre on a random point that keeps every joint 5% inside the image.
        lo, hi = joints[..., :2].amin(1), joints[..., :2].amax(1)
        half = (hi - lo) / 2 * focal[:, None] / depth[:, None]
        size = torch.stack([width, height], 1)
        room = (size / 2 - half - 0.05 * size).clamp_min(0)
        target = centre + (2 * u(n, 2) - 1) * room
        transl_xy = (target - centre) * depth[:, None] / focal[:, None] - (lo + hi) / 2
        transl = torch.cat([transl_xy, depth[:, None]], 1)
        params = torch.cat([orient, pose, betas, transl], 1)
        uv = project(posed_joints(body, params)[:, BODY25_TO_SMPLX], focal, centre)

    uv = uv + cfg.noise_px * torch.randn(uv.shape, generator=g).to(dev)
    conf = 0.6 + 0.4 * u(n, 25)
    outlier = u(n, 25) < cfg.outliers
    uv = torch.where(outlier[..., None], u(n, 25, 2) * size[:, None], uv)
    uv = torch.minimum(uv.clamp_min(0), size[:, None] - 1)
    missing = u(n, 25) < cfg.missing
    conf = torch.where(missing, torch.zeros(()), conf)
    uv = torch.where(missing[..., None], torch.zeros(()), uv)
    return People(params=params, kp_xy=uv, kp_conf=conf, width=width, height=height, focal=focal)


def make_split(body: BodyModel, split: str, n: int, cfg: SyntheticConfig | None = None) -> People:
    """The train or held-out split (different seeds, same distribution), or the hard held-out split (poses
    perturbed by up to HARD_EXTRA_RAD more)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLIT_SEEDS)}")
    if split == "hard":
        cfg = replace(cfg or SyntheticConfig(), pose_extra_rad=HARD_EXTRA_RAD)
    return make_people(body, n, SPLIT_SEEDS[split], cfg)


def other_layouts(people: People, fraction: float, generator: torch.Generator) -> People:
    """`fraction` of the people seen as COCO-17 or MediaPipe-33 keypoints (half each) read into BODY_25: the
    points those layouts lack (neck, mid-hip, feet or small toes) missing, so one regressor takes all three."""
    n = len(people)
    pick = torch.rand(n, generator=generator)
    keep = torch.ones(n, 25, dtype=torch.bool)
    for layout, lo, hi in (("coco17", 0.0, fraction / 2), ("mediapipe33", fraction / 2, fraction)):
        have = torch.tensor([i is not None for i in body25_index(layout)])
        keep = torch.where(((pick >= lo) & (pick < hi))[:, None], keep & have, keep)
    keep = keep.to(people.kp_xy.device)
    return replace(people, kp_xy=people.kp_xy * keep[..., None], kp_conf=people.kp_conf * keep)


def fit_problem(body: BodyModel, kp_xy: Tensor,  # [B, K, 2]
                kp_conf: Tensor,  # [B, K]
                joint_map: list[int], width: Tensor,  # [B]
                height: Tensor,  # [B]
                focal: Tensor | None = None) -> FitProblem:
    """What the fitter starts from: intrinsics, torso-length depth and the residual scale."""
    focal = default_focal(width, height) if focal is None else focal
    centre = torch.stack([width, height], 1).float() / 2
    b = kp_xy.shape[0]
    with torch.no_grad():
        mean_joints = posed_joints(body, torch.zeros(b, PARAM_DIM, device=kp_xy.device))
    transl = init_translation(mean_joints, kp_xy, kp_conf, joint_map, focal, centre)
    return FitProblem(kp_xy=kp_xy, kp_conf=kp_conf, joint_map=list(joint_map), focal=focal, centre=centre,
                      transl_init=transl, scale=torso_scale(kp_xy, kp_conf, joint_map))


def people_problem(body: BodyModel, people: People) -> FitProblem:
    return fit_problem(body, people.kp_xy, people.kp_conf, BODY25_TO_SMPLX, people.width, people.height,
                       people.focal)


def mean_start(body: BodyModel, prob: FitProblem) -> Tensor:  # [B, 85]
    """The mean pose and shape facing the camera, translated by the torso-length initialisation."""
    return torch.cat([torch.zeros(len(prob), 82, device=prob.transl_init.device), prob.transl_init], 1)

