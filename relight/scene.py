"""OLAT scenes in the NeRF-style format of MetaGS and its peers: transforms_{train,test}.json plus images."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from metatune import MetatuneError
from relight.camera import Camera
from relight.light import Light
from relight.pointcloud import read_points_ply

SPLITS = ("train", "test")


@dataclass
class Frame:
    """One image with its camera and its point light."""
    file_path: str  # as written in the transforms file
    image: Tensor  # [H, W, 3] in [0, 1]
    camera: Camera
    light: Light


@dataclass
class Scene:
    """The frames of one split, and the scene's initial point cloud if it has one."""
    root: Path
    frames: list[Frame]
    points: Tensor | None  # [P, 3]


def image_path(root: Path, file_path: str) -> Path:
    """Where a frame's image lies (NeRF writes file paths without the .png)."""
    p = root / file_path
    return p if p.suffix else p.with_suffix(".png")


def load_scene(root: Path | str, split: str = "train", resolution: int | None = None) -> Scene:
    """Read a split of an OLAT scene; images are resized to `resolution` x `resolution` if given."""
    import cv2
    root = Path(root)
    if split not in SPLITS:
        raise MetatuneError(f"unknown split {split!r}; choose from {SPLITS}")
    if not root.is_dir():
        raise MetatuneError(f"scene folder {root} does not exist")
    tf = root / f"transforms_{split}.json"
    if not tf.is_file():
        raise MetatuneError(f"scene folder {root} has no transforms_{split}.json")
    try:
        meta = json.loads(tf.read_text())
        angle = float(meta["camera_angle_x"])
        raw = meta["frames"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise MetatuneError(f"{tf}: not a transforms file with camera_angle_x and frames ({err!r})") from err
    if not raw:
        raise MetatuneError(f"{tf}: has no frames")
    frames = []
    for i, fr in enumerate(raw):
        try:
            c2w = torch.tensor(fr["transform_matrix"], dtype=torch.float32)
            pos = tuple(float(v) for v in fr["pl_pos"])
            fp = str(fr["file_path"])
        except (KeyError, TypeError, ValueError) as err:
            raise MetatuneError(f"{tf}: frame {i} lacks file_path, transform_matrix or pl_pos ({err!r})") from err
        if c2w.shape != (4, 4) or len(pos) != 3 or not all(math.isfinite(v) for v in pos):
            raise MetatuneError(f"{tf}: frame {i} needs a 4x4 transform_matrix and a finite 3-vector pl_pos")
        path = image_path(root, fp)
        if not path.is_file():
            raise MetatuneError(f"{tf}: frame {i} points at missing image {path}")
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise MetatuneError(f"{path}: not a readable image")
        img = _to_rgb(img)
        if resolution is not None and img.shape[:2] != (resolution, resolution):
            img = cv2.resize(img, (resolution, resolution), interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
        cam = Camera.from_fov(c2w, angle, w, h)
        frames.append(Frame(fp, torch.from_numpy(img), cam, Light(pos)))
    ply = root / "points3d.ply"
    points = torch.from_numpy(read_points_ply(ply)) if ply.is_file() else None
    return Scene(root, frames, points)


def _to_rgb(img: np.ndarray) -> np.ndarray:  # [H, W, 3] float32 in [0, 1]
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    img = img.astype(np.float32) / scale
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    if img.shape[-1] == 4:  # RGBA: composite on black
        img = img[..., :3] * img[..., 3:]
    return np.ascontiguousarray(img[..., ::-1])  # OpenCV reads BGR


def save_image(path: Path, img: Tensor | np.ndarray,  # [H, W, 3] in [0, 1]
               ) -> None:
    """Write an 8-bit PNG through a temporary name."""
    import cv2
    arr = img.detach().cpu().numpy() if torch.is_tensor(img) else img
    arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    if not cv2.imwrite(str(tmp), arr):
        raise MetatuneError(f"could not write image {path}")
    tmp.replace(path)


def group_by_light(frames: list[Frame]) -> list[list[Frame]]:
    """Frames sharing a light position (to 1e-4): one light condition each."""
    groups: dict[tuple, list[Frame]] = {}
    for f in frames:
        groups.setdefault(tuple(round(v, 4) for v in f.light.position), []).append(f)
    return list(groups.values())


def write_transforms(path: Path, camera_angle_x: float, frames: list[dict]) -> None:
    """Write a transforms file (frames: file_path, transform_matrix, pl_pos) through a temporary name."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"camera_angle_x": camera_angle_x, "frames": frames}, indent=1))
    tmp.replace(path)
