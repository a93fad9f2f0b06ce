"""OLAT scenes in the NeRF-style format of MetaGS and its peers: transforms_{train,test}.json plus images."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from metatune.atomic import write_bytes, write_text
from metatune.errors import MetatuneError
from metatune.paths import inside
from relight.camera import Camera, check_fov, check_rigid
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

    def to(self, device: torch.device | str) -> "Frame":
        """The same frame with its image and camera on `device`."""
        return Frame(self.file_path, self.image.to(device), self.camera.to(device), self.light)


@dataclass
class Scene:
    """The frames of one split, and the scene's initial point cloud if it has one."""
    root: Path
    frames: list[Frame]
    points: Tensor | None  # [P, 3]


def _png_name(file_path: str, what: str, always: bool) -> Path:
    rel = Path(file_path)
    try:
        return rel.with_suffix(".png") if always or not rel.suffix else rel
    except ValueError:  # "", ".": no file name to give a suffix
        raise MetatuneError(f"{what} {file_path!r} names no file") from None


def image_path(root: Path, file_path: str, what: str = "file_path") -> Path:
    """Where a frame's image lies (NeRF writes file paths without the .png); refused unless inside `root`."""
    return inside(root, _png_name(file_path, what, always=False), what)


def output_image_path(folder: Path, file_path: str, what: str = "file_path") -> Path:
    """Where a prediction for the frame `file_path` is saved: `folder / file_path` as .png, refused unless
    inside `folder` (file paths come from the scene's transforms file)."""
    path = inside(folder, _png_name(file_path, what, always=True), what)
    if path == Path(folder).resolve():
        raise MetatuneError(f"{what} {file_path!r} names the folder {folder} itself, not a file in it")
    return path


def load_scene(root: Path | str, split: str = "train", resolution: int | None = None) -> Scene:
    """Read a split of an OLAT scene; images are resized to `resolution` x `resolution` if given.

    Refused with MetatuneError: image paths leaving the scene folder, a camera_angle_x outside (0, pi),
    camera matrices that are not finite and rigid (see `relight.camera.check_rigid`), non-finite light
    positions, images of a size other than the split's first image (`resolution` resizes a scene of one
    size; it does not reconcile images of several), and non-square images with `resolution` (squashed).
    """
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
    check_fov(angle, str(tf))
    if not raw:
        raise MetatuneError(f"{tf}: has no frames")
    frames = []
    first: tuple[Path, tuple[int, int]] | None = None  # the split's first image and its (height, width)
    for i, fr in enumerate(raw):
        where = f"{tf}: frame {i}"
        try:
            matrix = np.array(fr["transform_matrix"], dtype=np.float64)
            pos = tuple(float(v) for v in fr["pl_pos"])
            fp = str(fr["file_path"])
        except (KeyError, TypeError, ValueError) as err:
            raise MetatuneError(f"{where} lacks file_path, transform_matrix or pl_pos ({err!r})") from err
        check_rigid(matrix, where)
        if len(pos) != 3 or not all(math.isfinite(v) for v in pos):
            raise MetatuneError(f"{where}: pl_pos {list(pos)} is not a finite 3-vector (a light position)")
        path = image_path(root, fp, f"{where}: file_path")
        if not path.is_file():
            raise MetatuneError(f"{where} points at missing image {path}")
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise MetatuneError(f"{path}: not a readable image")
        if first is None:
            first = (path, img.shape[:2])
        elif img.shape[:2] != first[1]:
            raise MetatuneError(f"{path}: image is {img.shape[1]}x{img.shape[0]} but {first[0].name}, the first "
                                f"of the {split} split, is {first[1][1]}x{first[1][0]}; all images of a split "
                                "must have one size")
        img = _to_rgb(img, path)
        if resolution is not None and img.shape[:2] != (resolution, resolution):
            if img.shape[0] != img.shape[1]:
                raise MetatuneError(f"{path}: resizing a {img.shape[1]}x{img.shape[0]} image to {resolution}x"
                                    f"{resolution} would squash it; --resolution needs square images")
            img = cv2.resize(img, (resolution, resolution), interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
        cam = Camera.from_fov(torch.from_numpy(matrix).float(), angle, w, h)
        frames.append(Frame(fp, torch.from_numpy(img), cam, Light(pos)))
    ply = root / "points3d.ply"
    points = torch.from_numpy(read_points_ply(ply)) if ply.is_file() else None
    return Scene(root, frames, points)


def _to_rgb(img: np.ndarray, path: Path | str = "image") -> np.ndarray:  # [H, W, 3] float32 in [0, 1]
    """RGB in [0, 1]: 8- and 16-bit images scaled by their full range; float images (32-bit TIFF, EXR) taken
    as they are, and refused unless finite and in [0, 1] (nothing says what a float 255 or 3.2 means)."""
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] not in (1, 3, 4)):
        raise MetatuneError(f"{path}: image of shape {list(img.shape)}; need grey, RGB or RGBA")
    if img.dtype == np.uint8 or img.dtype == np.uint16:
        img = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 65535.0)
    elif np.issubdtype(img.dtype, np.floating):
        if not np.isfinite(img).all():
            raise MetatuneError(f"{path}: float image has NaN or infinite pixels")
        lo, hi = float(img.min()), float(img.max())
        if lo < 0 or hi > 1:
            raise MetatuneError(f"{path}: float image has values in [{lo:.4g}, {hi:.4g}]; float images must lie in "
                                "[0, 1] (8- and 16-bit images are scaled by 255 and 65535)")
        img = img.astype(np.float32)
    else:
        raise MetatuneError(f"{path}: pixels of type {img.dtype}; need 8- or 16-bit unsigned or float")
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, -1)
    if img.shape[-1] == 4:  # RGBA: composite on black
        img = img[..., :3] * img[..., 3:]
    return np.ascontiguousarray(img[..., ::-1])  # OpenCV reads BGR


# What save_image writes for each file name extension (OpenCV picks the encoder by it).
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def save_image(path: Path, img: Tensor | np.ndarray,  # [H, W, 3] in [0, 1]
               ) -> None:
    """Write an 8-bit image in the format its extension names (.png, .jpg or .jpeg), atomically."""
    import cv2
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_FORMATS:
        raise MetatuneError(f"cannot write image {path}: the name must end in one of {sorted(IMAGE_FORMATS)}, "
                            "which says its format")
    arr = img.detach().cpu().numpy() if torch.is_tensor(img) else img
    arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1]
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(arr))
    if not ok:
        raise MetatuneError(f"could not encode image {path} as {IMAGE_FORMATS[ext]}")
    write_bytes(path, buf.tobytes())


def group_by_light(frames: list[Frame]) -> list[list[Frame]]:
    """Frames sharing a light position (to 1e-4): one light condition each."""
    groups: dict[tuple, list[Frame]] = {}
    for f in frames:
        groups.setdefault(tuple(round(v, 4) for v in f.light.position), []).append(f)
    return list(groups.values())


def write_transforms(path: Path, camera_angle_x: float, frames: list[dict]) -> None:
    """Write a transforms file (frames: file_path, transform_matrix, pl_pos) atomically."""
    write_text(path, json.dumps({"camera_angle_x": camera_angle_x, "frames": frames}, indent=1))
