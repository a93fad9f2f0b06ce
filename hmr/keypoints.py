"""2D keypoints with confidences: OpenPose BODY_25 / COCO-18 JSON, COCO-17 annotations or results, MediaPipe
BlazePose-33 landmarks (pixels or normalised to [0, 1]); read into BODY_25 order, mapped onto smplx's 45 joints."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hmr.layouts import BODY25_NAMES, LAYOUT_SIZES, to_body25
from metatune import MetatuneError

# Index into smplx's 45 SMPL joints (24 body, nose, reye, leye, rear, lear, LBigToe, LSmallToe, LHeel,
# RBigToe, RSmallToe, RHeel, 10 fingertips) for each keypoint of the format.
BODY25_TO_SMPLX = [24, 12, 17, 19, 21, 16, 18, 20, 0, 2, 5, 8, 1, 4, 7, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34]
COCO17_TO_SMPLX = [24, 26, 25, 28, 27, 16, 17, 18, 19, 20, 21, 1, 2, 4, 5, 7, 8]
# OpenPose's pose_keypoints_2d length (x, y, confidence per point) of each layout it can hold
_OPENPOSE_LAYOUTS = {3 * n: name for name, n in LAYOUT_SIZES.items() if name != "coco17"}


@dataclass
class Keypoints:
    """Detections for P people in BODY_25 order: pixel coordinates and confidences, and the layout read."""
    xy: Tensor    # [P, 25, 2] pixels (or [0, 1] until `select_people` scales normalised ones)
    conf: Tensor  # [P, 25] in [0, 1]; 0 = missing
    fmt: str      # the layout read: "body25" | "coco17" | "coco18" | "mediapipe33"

    @property
    def joint_map(self) -> list[int]:
        return BODY25_TO_SMPLX


def from_layout(xy: Tensor,  # [P, K, 2]
                conf: Tensor,  # [P, K]
                layout: str) -> Keypoints:
    """Keypoints of any known layout, in BODY_25 order."""
    xy25, conf25 = to_body25(xy.float(), conf.float().clamp(0, 1), layout)
    return Keypoints(xy=xy25, conf=conf25, fmt=layout)


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


def _openpose(people, source: str) -> tuple[list[np.ndarray], str]:
    if not isinstance(people, list):
        raise MetatuneError(f"{source}: 'people' must be a list")
    rows, layout = [], None
    for i, p in enumerate(people):
        if not isinstance(p, dict) or "pose_keypoints_2d" not in p:
            raise MetatuneError(f"{source}: people[{i}] has no 'pose_keypoints_2d'")
        values = p["pose_keypoints_2d"]
        n = len(values) if isinstance(values, list) else -1
        this = _OPENPOSE_LAYOUTS.get(n, layout or "body25")
        if layout is not None and this != layout:
            raise MetatuneError(f"{source}: people[{i}] has {n} numbers, people[0] {3 * LAYOUT_SIZES[layout]}")
        layout = this
        rows.append(_rows(values, LAYOUT_SIZES[layout], f"{source}: people[{i}].pose_keypoints_2d"))
    return rows, layout or "body25"


def _mediapipe(landmarks, source: str) -> list[np.ndarray]:
    """MediaPipe landmark lists: one list of 33 {x, y[, z][, visibility]} per person."""
    if not isinstance(landmarks, list):
        raise MetatuneError(f"{source}: 'landmarks' must be a list of people")
    rows = []
    for i, person in enumerate(landmarks):
        if not isinstance(person, list) or len(person) != 33 or not all(isinstance(p, dict) for p in person):
            raise MetatuneError(f"{source}: landmarks[{i}] must be a list of 33 {{x, y, visibility}} objects")
        try:
            flat = [v for p in person for v in (p["x"], p["y"], p.get("visibility", 1.0))]
        except KeyError as err:
            raise MetatuneError(f"{source}: landmarks[{i}]: a landmark lacks {err}") from None
        rows.append(_rows(flat, 33, f"{source}: landmarks[{i}]"))
    return rows


def parse_keypoints(data, source: str = "keypoints") -> Keypoints:
    """OpenPose JSON (`{"people": [{"pose_keypoints_2d": [...]}]}` with BODY_25, COCO-18 or 33 MediaPipe points),
    COCO-17 (annotation dict or result list) or MediaPipe landmarks (`{"landmarks": [[{x, y, visibility}]]}`)."""
    if isinstance(data, dict) and "people" in data:
        rows, fmt = _openpose(data["people"], source)
    elif isinstance(data, dict) and "landmarks" in data:
        rows, fmt = _mediapipe(data["landmarks"], source), "mediapipe33"
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
        raise MetatuneError(f"{source}: neither OpenPose ('people'), COCO ('annotations' or a result list) nor "
                            "MediaPipe ('landmarks')")
    k = LAYOUT_SIZES[fmt]
    arr = torch.tensor(np.stack(rows) if rows else np.zeros((0, k, 3)), dtype=torch.float32)
    return from_layout(arr[..., :2], arr[..., 2], fmt)


def read_keypoints(path: str | Path) -> Keypoints:
    """Keypoints from an OpenPose BODY_25 or COCO-17 JSON file."""
    path = Path(path)
    return parse_keypoints(_load_json(path), source=str(path))


def normalised(kp: Keypoints) -> bool:
    """All confident coordinates lie in [0, 1]: MediaPipe-style normalised coordinates, not pixels."""
    sure = kp.conf > 0
    return bool(sure.sum() >= 2 and kp.xy[sure].abs().amax() <= 1.0)


def select_people(kp: Keypoints, width: int, height: int, min_joints: int = 6, min_conf: float = 0.2,
                  margin: float = 0.02, far: float = 0.5) -> tuple[Keypoints, list[int], list[str]]:
    """People with at least `min_joints` confident keypoints inside the image, and warnings: normalised
    coordinates are scaled to pixels, confident keypoints just outside the image (beyond `margin`) are dropped;
    one further out than `far` of the image's size is an error (keypoints of another image, or other units)."""
    notes = []
    if normalised(kp) and max(width, height) > 2:
        kp = replace(kp, xy=kp.xy * torch.tensor([float(width), float(height)]))
        notes.append(f"the keypoints lie in [0, 1]: read as normalised coordinates and scaled to {width}x{height}")
    confident = kp.conf >= min_conf
    mx, my = margin * width, margin * height
    outside = confident & ((kp.xy[..., 0] < -mx) | (kp.xy[..., 0] > width + mx)
                           | (kp.xy[..., 1] < -my) | (kp.xy[..., 1] > height + my))
    size = torch.tensor([float(width), float(height)])
    beyond = confident & ((kp.xy < -far * size) | (kp.xy > (1 + far) * size)).any(-1)
    if beyond.any():
        p, j = beyond.nonzero()[0].tolist()
        raise MetatuneError(f"keypoint {BODY25_NAMES[j]} of person {p} at ({kp.xy[p, j, 0]:.1f}, "
                            f"{kp.xy[p, j, 1]:.1f}) lies far outside the {width}x{height} image (keypoints of "
                            "another image?)")
    for p, j in outside.nonzero().tolist():
        notes.append(f"keypoint {BODY25_NAMES[j]} of person {p} at ({kp.xy[p, j, 0]:.1f}, {kp.xy[p, j, 1]:.1f}) "
                     f"lies outside the {width}x{height} image: dropped")
    confident &= ~outside
    keep = [i for i in range(kp.xy.shape[0]) if int(confident[i].sum()) >= min_joints]
    if not keep:
        raise MetatuneError(f"no person has at least {min_joints} keypoints with confidence >= {min_conf} "
                            f"inside the {width}x{height} image")
    conf = torch.where(confident[keep], kp.conf[keep], torch.zeros(()))
    return Keypoints(xy=kp.xy[keep], conf=conf, fmt=kp.fmt), keep, notes


def body25_json(xy: Tensor,  # [P, 25, 2]
                conf: Tensor,  # [P, 25]
                ) -> dict:
    """OpenPose BODY_25 JSON for P people (what `read_keypoints` reads back)."""
    people = [{"pose_keypoints_2d": torch.cat([xy[p], conf[p, :, None]], 1).reshape(-1).tolist()}
              for p in range(xy.shape[0])]
    return {"version": 1.3, "people": people}
