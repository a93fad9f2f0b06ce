"""The amortised initialisation: a regressor from 2D keypoints to body parameters, placed by the torso length."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from hmr.body_model import BodyModel
from hmr.camera import init_translation
from hmr.objective import PARAM_DIM, FitProblem, global_rotation


def keypoint_features(prob: FitProblem) -> Tensor:  # [B, 3K]
    """Keypoints centred on their confident mean and divided by the torso length, with confidences."""
    conf = prob.kp_conf
    c = (prob.kp_xy * conf[..., None]).sum(1) / conf.sum(1, keepdim=True).clamp_min(1e-6)
    xy = (prob.kp_xy - c[:, None]) / (100 * prob.scale[:, None, None])   # scale is 1% of the torso
    xy = xy * (conf[..., None] > 0)
    return torch.cat([xy, conf[..., None]], -1).flatten(1)


class KeypointRegressor(nn.Module):
    """task (a FitProblem, or a (FitProblem, ground truth) pair) -> parameters [B, 85]."""

    def __init__(self, body: BodyModel, num_keypoints: int = 25, hidden: int = 256) -> None:
        super().__init__()
        self._body = (body,)   # fixed, not learned: kept out of this module's parameters and state
        self.num_keypoints = num_keypoints
        self.net = nn.Sequential(nn.Linear(3 * num_keypoints, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, PARAM_DIM - 3))
        nn.init.zeros_(self.net[-1].weight)   # start at the mean pose and shape
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, task) -> Tensor:  # [B, 85]
        prob: FitProblem = task[0] if isinstance(task, tuple) else task
        if prob.kp_xy.shape[1] != self.num_keypoints:
            raise ValueError(f"regressor expects {self.num_keypoints} keypoints, got {prob.kp_xy.shape[1]}")
        body_params = self.net(keypoint_features(prob))                           # [B, 82]
        orient, pose, betas = body_params[:, :3], body_params[:, 3:72], body_params[:, 72:]
        joints = self._body[0].joints(betas, global_rotation(orient), pose)
        transl = init_translation(joints, prob.kp_xy, prob.kp_conf, prob.joint_map, prob.focal, prob.centre)
        return torch.cat([body_params, transl], 1)
