"""OLAT scenes in the NeRF-style format of MetaGS and its peers: transforms_{train,test}.json plus images."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from metatune.atomic import write_bytes, write_text
from metatune.errors import MetatuneError
from metatune.paths import inside
from relight.camera import Camera, check_fov, check_rigid
from relight.light import Light, parse_power
from relight.pointcloud import read_points_ply

SPLITS = ("train", "val", "test")


@dataclass
class Frame:
    """One image with its camera and its point light; `alpha` is the image's own coverage if it had one."""
    file_path: str  # as written in the transforms file
    image: Tensor  # [H, W, 3] in [0, 1] (an RGBA image composited on black)
    camera: Camera
    light: Light
    alpha: Tensor | None = None  # [H, W] in [0, 1]
    mask: Tensor | None = None  # [H, W] bool: the pixels a loss on this frame counts (None: all; see tasks.py)
    shadow: Tensor | None = None  # [H, W] bool: the ground truth's cast shadows, where a generator wrote them

    def to(self, device: torch.device | str) -> "Frame":
        """The same frame with its image, camera, alpha, mask and shadow mask on `device`."""
        return replace(self, image=self.image.to(device), camera=self.camera.to(device),
                       alpha=None if self.alpha is None else self.alpha.to(device),
                       mask=None if self.mask is None else self.mask.to(device),
                       shadow=None if self.shadow is None else self.shadow.to(device))


@dataclass
class Scene:
    """The frames of one split, and the scene's initial point cloud if it has one."""
    root: Path
    frames: list[Frame]
    points: Tensor | None  # [P, 3]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the split's images."""
        return self.frames[0].camera.width, self.frames[0].camera.height


def _image_name(file_path: str, what: str, always: bool) -> Path:
    rel = Path(file_path)
    try:
        return rel.with_suffix(".png") if always or not rel.suffix else rel
    except ValueError:  # "", ".": no file name to give a suffix
        raise MetatuneError(f"{what} {file_path!r} names no file") from None


def image_path(root: Path, file_path: str, what: str = "file_path", ext: str = ".png") -> Path:
    """Where a frame's image lies (NeRF writes file paths without the extension, which is .png unless the frame
    says otherwise in NRHints' `file_ext`); refused unless inside `root`."""
    rel = Path(file_path)
    name = Path(file_path + ext) if ext != ".png" and rel.suffix != ext else _image_name(file_path, what, False)
    return inside(root, name, what)


def output_image_path(folder: Path, file_path: str, what: str = "file_path") -> Path:
    """Where a prediction for the frame `file_path` is saved: `folder / file_path` as .png, refused unless
    inside `folder` (file paths come from the scene's transforms file)."""
    path = inside(folder, _image_name(file_path, what, always=True), what)
    if path == Path(folder).resolve():
        raise MetatuneError(f"{what} {file_path!r} names the folder {folder} itself, not a file in it")
    return path


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")


def read_image(path: Path) -> np.ndarray:  # [H, W, C] as stored (C in 1, 3, 4; RGB order for .npy, BGR otherwise)
    """An image file as an array: OpenCV for PNG/JPEG/TIFF, NumPy (no pickles) for .npy as NRHints writes."""
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise MetatuneError(f"{path}: not a NumPy image array ({err})") from None
        if arr.ndim == 3:  # RGB(A) order: flip to OpenCV's BGR(A) so that _to_rgb treats both alike
            arr = np.concatenate([arr[..., :3][..., ::-1], arr[..., 3:]], -1) if arr.shape[-1] in (3, 4) else arr
        return arr
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise MetatuneError(f"{path}: not a readable image")
    return img


def intrinsics(meta: dict, width: int, height: int, where: str) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels of the stored images, from `camera_intrinsics` [cx, cy, fx, fy] (NRHints,
    MetaGS), `fl_x`/`fl_y`/`cx`/`cy` (instant-ngp, nerfstudio) or `camera_angle_x` (NeRF: square pixels,
    centred; `camera_angle_y` if given sets fy)."""
    try:
        if "camera_intrinsics" in meta:
            cx, cy, fx, fy = (float(v) for v in meta["camera_intrinsics"])
        elif "fl_x" in meta:
            fx = float(meta["fl_x"])
            fy = float(meta.get("fl_y", fx))
            cx, cy = float(meta.get("cx", width / 2)), float(meta.get("cy", height / 2))
        else:
            angle = float(meta["camera_angle_x"])
            check_fov(angle, where)
            fx = 0.5 * width / math.tan(0.5 * angle)
            fy = fx
            if "camera_angle_y" in meta:
                angle_y = float(meta["camera_angle_y"])
                check_fov(angle_y, where)
                fy = 0.5 * height / math.tan(0.5 * angle_y)
            cx, cy = width / 2, height / 2
    except (KeyError, TypeError, ValueError) as err:
        raise MetatuneError(f"{where}: no camera intrinsics (camera_intrinsics [cx, cy, fx, fy], fl_x/fl_y/cx/cy or "
                            f"camera_angle_x) ({err!r})") from None
    vals = (fx, fy, cx, cy)
    if not all(math.isfinite(v) for v in vals) or fx <= 0 or fy <= 0:
        raise MetatuneError(f"{where}: camera intrinsics fx, fy, cx, cy = {vals} must be finite with fx, fy > 0")
    return vals


def resized_size(width: int, height: int, resolution: int | None) -> tuple[int, int]:
    """The size an image is trained at: its longer side `resolution` pixels, the aspect ratio kept."""
    if resolution is None or max(width, height) == resolution:
        return width, height
    scale = resolution / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def load_scene(root: Path | str, split: str = "train", resolution: int | None = None) -> Scene:
    """Read a split of an OLAT scene: NeRF's transforms (MetaGS, NRHints) with a point light per frame.

    `resolution` sets the longer image side (aspect ratio and intrinsics kept right); None keeps the images'
    own size. Per frame: `file_path`, `transform_matrix`, `pl_pos`, optional `file_ext` (.png, .npy, ...) and
    `pl_intensity` (relative power, one or three numbers). RGBA images keep their alpha in `Frame.alpha`.
    Refused with MetatuneError: image paths leaving the scene folder, intrinsics that are no camera, camera
    matrices that are not finite and rigid (`relight.camera.check_rigid`), non-finite light positions or
    powers, and images of a size other than the split's first image.
    """
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
        raw = meta["frames"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise MetatuneError(f"{tf}: not a transforms file with frames ({err!r})") from err
    if not isinstance(meta, dict) or not isinstance(raw, list) or not raw:
        raise MetatuneError(f"{tf}: has no frames")
    frames = []
    first: tuple[Path, tuple[int, int]] | None = None  # the split's first image and its (height, width)
    k: tuple[float, float, float, float] | None = None
    for i, fr in enumerate(raw):
        where = f"{tf}: frame {i}"
        try:
            matrix = np.array(fr["transform_matrix"], dtype=np.float64)
            pos = tuple(float(v) for v in fr["pl_pos"])
            fp = str(fr["file_path"])
            ext = str(fr.get("file_ext", ".png"))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise MetatuneError(f"{where} lacks file_path, transform_matrix or pl_pos ({err!r})") from err
        check_rigid(matrix, where)
        if len(pos) != 3 or not all(math.isfinite(v) for v in pos):
            raise MetatuneError(f"{where}: pl_pos {list(pos)} is not a finite 3-vector (a light position)")
        power = parse_power(fr["pl_intensity"], where) if "pl_intensity" in fr else (1.0, 1.0, 1.0)
        if ext.lower() not in IMAGE_EXTENSIONS:
            raise MetatuneError(f"{where}: file_ext {ext!r} is not one of {IMAGE_EXTENSIONS}")
        path = image_path(root, fp, f"{where}: file_path", ext)
        if not path.is_file():
            raise MetatuneError(f"{where} points at missing image {path}")
        img = read_image(path)
        if first is None:
            first = (path, img.shape[:2])
            k = intrinsics(meta, img.shape[1], img.shape[0], str(tf))
        elif img.shape[:2] != first[1]:
            raise MetatuneError(f"{path}: image is {img.shape[1]}x{img.shape[0]} but {first[0].name}, the first "
                                f"of the {split} split, is {first[1][1]}x{first[1][0]}; all images of a split "
                                "must have one size")
        rgb, alpha = _to_rgb(img, path)
        h0, w0 = rgb.shape[:2]
        shadow = _shadow_mask(root, fr["shadow_mask"], where, (h0, w0)) if "shadow_mask" in fr else None
        w, h = resized_size(w0, h0, resolution)
        if (w, h) != (w0, h0):
            import cv2
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            alpha = None if alpha is None else cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA)
            shadow = None if shadow is None else cv2.resize(shadow, (w, h), interpolation=cv2.INTER_AREA)
        assert k is not None
        fx, fy, cx, cy = k
        sx, sy = w / w0, h / h0
        cam = Camera(torch.from_numpy(matrix).float(), fx * sx, fy * sy, cx * sx, cy * sy, w, h)
        frames.append(Frame(fp, torch.from_numpy(np.ascontiguousarray(rgb)), cam, Light(pos, power=power),
                            None if alpha is None else torch.from_numpy(np.ascontiguousarray(alpha)),
                            shadow=None if shadow is None else torch.from_numpy(shadow > 0.5)))
    ply = root / "points3d.ply"
    points = torch.from_numpy(read_points_ply(ply)) if ply.is_file() else None
    return Scene(root, frames, points)


def _shadow_mask(root: Path, file_path: object, where: str, size: tuple[int, int]) -> np.ndarray:  # [H, W] 0-1
    """A frame's `shadow_mask` image (our generators write one: white where the ground truth is in cast shadow)."""
    path = image_path(root, str(file_path), f"{where}: shadow_mask")
    if not path.is_file():
        raise MetatuneError(f"{where}: shadow_mask points at missing image {path}")
    rgb, _ = _to_rgb(read_image(path), path)
    if rgb.shape[:2] != size:
        raise MetatuneError(f"{path}: shadow mask is {rgb.shape[1]}x{rgb.shape[0]}, its image {size[1]}x{size[0]}")
    return np.ascontiguousarray(rgb.max(-1))


def _to_rgb(img: np.ndarray, path: Path | str = "image",
            ) -> tuple[np.ndarray, np.ndarray | None]:  # [H, W, 3] float32 in [0, 1], alpha [H, W] or None
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
    alpha = None
    if img.shape[-1] == 4:  # RGBA: composite on black, keep the coverage
        alpha = np.ascontiguousarray(img[..., 3])
        img = img[..., :3] * img[..., 3:]
    return np.ascontiguousarray(img[..., ::-1]), alpha  # OpenCV reads BGR


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
