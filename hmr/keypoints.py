"""2D keypoints with confidences: OpenPose BODY_25 and COCO-17 JSON, and their maps onto smplx's 45 joints."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from metatune import MetatuneError

# Index into smplx's 45 SMPL joints (24 body, nose, reye, leye, rear, lear, LBigToe, LSmallToe, LHeel,
# RBigToe, RSmallToe, RHeel, 10 fingertips) for each keypoint of the format.
BODY25_TO_SMPLX = [24, 12, 17, 19, 21, 16, 18, 20, 0, 2, 5, 8, 1, 4, 7, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34]
COCO17_TO_SMPLX = [24, 26, 25, 28, 27, 16, 17, 18, 19, 20, 21, 1, 2, 4, 5, 7, 8]
BODY25_NAMES = ["Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip",
                "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
                "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel"]
FORMATS = {"body25": BODY25_TO_SMPLX, "coco17": COCO17_TO_SMPLX}


@dataclass
class Keypoints:
    """Detections for P people: pixel coordinates and confidences, and which smplx joint each one is."""
    xy: Tensor    # [P, K, 2] pixels
    conf: Tensor  # [P, K] in [0, 1]; 0 = missing
    fmt: str      # "body25" | "coco17"

    @property
    def joint_map(self) -> list[int]:
        return FORMATS[self.fmt]


def _load_json(path: Path):
    if not path.is_file():
        raise MetatuneError(f"keypoint file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MetatuneError(f"keypoint file {path} is not valid JSON: {err}") from None


def _rows(values, k: int, where: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise MetatuneError(f"{where}: keypoints must be numbers") from None
    if arr.shape != (3 * k,) or not np.isfinite(arr).all():
        raise MetatuneError(f"{where}: expected {3 * k} finite numbers (x, y, confidence) x {k}, got shape {arr.shape}")
    return arr.reshape(k, 3)


def parse_keypoints(data, source: str = "keypoints") -> Keypoints:
    """BODY_25 (`{"people": [{"pose_keypoints_2d": [...]}]}`) or COCO-17 (annotation dict or result list)."""
    if isinstance(data, dict) and "people" in data:
        people = data["people"]
        if not isinstance(people, list):
            raise MetatuneError(f"{source}: 'people' must be a list")
        rows = []
        for i, p in enumerate(people):
            if not isinstance(p, dict) or "pose_keypoints_2d" not in p:
                raise MetatuneError(f"{source}: people[{i}] has no 'pose_keypoints_2d'")
            rows.append(_rows(p["pose_keypoints_2d"], 25, f"{source}: people[{i}].pose_keypoints_2d"))
        fmt = "body25"
    elif isinstance(data, dict) and "annotations" in data or isinstance(data, list):
        anns = data["annotations"] if isinstance(data, dict) else data
        if not isinstance(anns, list):
            raise MetatuneError(f"{source}: 'annotations' must be a list")
        rows = []
        for i, a in enumerate(anns):
            if not isinstance(a, dict) or "keypoints" not in a:
                raise MetatuneError(f"{source}: annotation {i} has no 'keypoints'")
            r = _rows(a["keypoints"], 17, f"{source}: annotation {i}")
            if isinstance(data, dict):   # ground-truth visibility flags 0/1/2, not confidences
                r[:, 2] = (r[:, 2] > 0).astype(np.float64)
            rows.append(r)
        fmt = "coco17"
    else:
        raise MetatuneError(f"{source}: neither OpenPose ('people') nor COCO ('annotations' or a result list)")
    k = len(FORMATS[fmt])
    arr = torch.tensor(np.stack(rows) if rows else np.zeros((0, k, 3)), dtype=torch.float32)
    return Keypoints(xy=arr[..., :2], conf=arr[..., 2].clamp(0, 1), fmt=fmt)


def read_keypoints(path: str | Path) -> Keypoints:
    """Keypoints from an OpenPose BODY_25 or COCO-17 JSON file."""
    path = Path(path)
    return parse_keypoints(_load_json(path), source=str(path))


def select_people(kp: Keypoints, width: int, height: int, min_joints: int = 6, min_conf: float = 0.2,
                  margin: float = 0.02) -> tuple[Keypoints, list[int]]:
    """People with at least `min_joints` confident keypoints; confident keypoints must lie inside the image."""
    confident = kp.conf >= min_conf
    mx, my = margin * width, margin * height
    outside = confident & ((kp.xy[..., 0] < -mx) | (kp.xy[..., 0] > width + mx)
                           | (kp.xy[..., 1] < -my) | (kp.xy[..., 1] > height + my))
    if outside.any():
        p, j = (int(i) for i in outside.nonzero()[0])
        raise MetatuneError(f"keypoint {j} of person {p} at ({kp.xy[p, j, 0]:.1f}, {kp.xy[p, j, 1]:.1f}) "
                            f"lies outside the {width}x{height} image")
    keep = [i for i in range(kp.xy.shape[0]) if int(confident[i].sum()) >= min_joints]
    if not keep:
        raise MetatuneError(f"no person has at least {min_joints} keypoints with confidence >= {min_conf}")
    conf = torch.where(confident[keep], kp.conf[keep], torch.zeros(()))
    return Keypoints(xy=kp.xy[keep], conf=conf, fmt=kp.fmt), keep


def body25_json(xy: Tensor,  # [P, 25, 2]
                conf: Tensor,  # [P, 25]
                ) -> dict:
    """OpenPose BODY_25 JSON for P people (what `read_keypoints` reads back)."""
    people = [{"pose_keypoints_2d": torch.cat([xy[p], conf[p, :, None]], 1).reshape(-1).tolist()}
              for p in range(xy.shape[0])]
    return {"version": 1.3, "people": people}
