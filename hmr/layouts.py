"""2D keypoint layouts (BODY_25, COCO-17, COCO-18, MediaPipe BlazePose-33) and their conversion to BODY_25,
the layout the fit runs in.

Only keypoints with a true counterpart are carried over. Points a layout lacks (BODY_25's neck and mid-hip
for COCO and MediaPipe, the small toes for MediaPipe, all six foot points for COCO) become missing
(confidence 0) instead of being made up as midpoints: a shoulder midpoint is not where SMPL's neck joint
projects, and the fit would pull the neck there.
"""
from __future__ import annotations

import torch
from torch import Tensor

BODY25_NAMES = ["Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip",
                "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
                "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel"]
COCO17_NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                "right_knee", "left_ankle", "right_ankle"]
COCO18_NAMES = ["Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip", "RKnee",
                "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar"]
MEDIAPIPE33_NAMES = ["nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
                     "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
                     "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
                     "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
                     "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
                     "left_foot_index", "right_foot_index"]
LAYOUT_SIZES = {"body25": 25, "coco17": 17, "coco18": 18, "mediapipe33": 33}

# For each BODY_25 keypoint, the index of the same point in the source layout (None: the layout lacks it).
_TO_BODY25: dict[str, list[int | None]] = {
    "body25": list(range(25)),
    "coco17": [0, None, 6, 8, 10, 5, 7, 9, None, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3, None, None, None, None, None,
               None],
    "coco18": [0, 1, 2, 3, 4, 5, 6, 7, None, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, None, None, None, None, None,
               None],
    # the foot index landmark is the tip of the foot, i.e. the big toe
    "mediapipe33": [0, None, 12, 14, 16, 11, 13, 15, None, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7, 31, None, 29, 32,
                    None, 30],
}
# MediaPipe's 33 landmarks as COCO-17 (every COCO point has a counterpart)
MEDIAPIPE33_TO_COCO17 = [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]


def body25_index(layout: str) -> list[int | None]:
    """Source index of each BODY_25 keypoint in `layout` (None where it has no counterpart)."""
    if layout not in _TO_BODY25:
        raise ValueError(f"unknown keypoint layout {layout!r}; choose from {sorted(_TO_BODY25)}")
    return _TO_BODY25[layout]


def to_body25(xy: Tensor,  # [P, K, 2] in the layout's order
              conf: Tensor,  # [P, K]
              layout: str) -> tuple[Tensor, Tensor]:  # [P, 25, 2], [P, 25]
    """The same keypoints in BODY_25 order; points the layout lacks are missing (xy 0, confidence 0)."""
    index = body25_index(layout)
    if xy.shape[1] != LAYOUT_SIZES[layout]:
        raise ValueError(f"{layout} has {LAYOUT_SIZES[layout]} keypoints, got {xy.shape[1]}")
    src = torch.tensor([0 if i is None else i for i in index])
    have = torch.tensor([i is not None for i in index])
    out_xy = torch.where(have[None, :, None], xy[:, src], torch.zeros(()))
    out_conf = torch.where(have[None], conf[:, src], torch.zeros(()))
    return out_xy, out_conf


def mediapipe_to_coco17(xy: Tensor,  # [P, 33, 2]
                        conf: Tensor,  # [P, 33]
                        ) -> tuple[Tensor, Tensor]:  # [P, 17, 2], [P, 17]
    """BlazePose landmarks in COCO-17 order."""
    return xy[:, MEDIAPIPE33_TO_COCO17], conf[:, MEDIAPIPE33_TO_COCO17]
