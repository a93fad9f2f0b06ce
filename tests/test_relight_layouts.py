"""Capture layouts of public relighting datasets: NRHints' and MetaGS's transforms (intrinsics, file_ext,
RGBA), per-frame light power, non-square images, and one view per light."""
import json
import math
import pathlib

import cv2
import numpy as np
import pytest
import torch

from metatune import MetatuneError
from relight.camera import look_at
from relight.scene import load_scene


def c2w(eye) -> list:
    return look_at(torch.tensor(eye, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)).tolist()


def write(root: pathlib.Path, meta: dict, frames: list[dict], images: dict[str, np.ndarray]) -> pathlib.Path:
    (root / "train").mkdir(parents=True, exist_ok=True)
    for name, img in images.items():
        if name.endswith(".npy"):
            np.save(root / name, img)
        else:
            assert cv2.imwrite(str(root / name), img)
    (root / "transforms_train.json").write_text(json.dumps(meta | {"frames": frames}))
    return root


def test_nrhints_intrinsics_rgba_and_npy_frames(tmp_path):
    # NRHints / MetaGS: camera_intrinsics = [cx, cy, fx, fy] for 40x30 images; file_ext per frame
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., 2] = 200  # red in OpenCV's BGR order
    rgba[:15, :, 3] = 255  # the top half covered, the bottom half empty
    npy = np.full((30, 40, 3), 0.5, np.float32)
    npy[..., 0] = 0.25  # red channel (NumPy files are RGB)
    frames = [{"file_path": "./train/r_0", "transform_matrix": c2w((3.0, 0.0, 1.0)), "pl_pos": [0, 0, 3]},
              {"file_path": "./train/r_1", "file_ext": ".npy", "transform_matrix": c2w((0.0, 3.0, 1.0)),
               "pl_pos": [1, 0, 3], "pl_intensity": [2.0, 1.0, 0.5]}]
    root = write(tmp_path / "s", {"camera_intrinsics": [21.0, 14.0, 50.0, 45.0]}, frames,
                 {"train/r_0.png": rgba, "train/r_1.npy": npy})
    a, b = load_scene(root).frames
    assert (a.camera.cx, a.camera.cy, a.camera.fx, a.camera.fy) == (21.0, 14.0, 50.0, 45.0)
    assert a.image.shape == (30, 40, 3) and a.alpha is not None
    assert float(a.alpha[:15].min()) == 1.0 and float(a.alpha[15:].max()) == 0.0
    assert float(a.image[0, 0, 0]) == pytest.approx(200 / 255) and float(a.image[20, 0].abs().max()) == 0.0
    assert float(b.image[0, 0, 0]) == pytest.approx(0.25) and float(b.image[0, 0, 2]) == pytest.approx(0.5)
    assert b.light.power == (2.0, 1.0, 0.5) and a.light.power == (1.0, 1.0, 1.0)
    half = load_scene(root, resolution=20).frames[0].camera  # longer side 20: 20x15, intrinsics halved
    assert (half.width, half.height, half.cx, half.cy, half.fx, half.fy) == (20, 15, 10.5, 7.0, 25.0, 22.5)


def test_nerfstudio_focal_lengths_and_vertical_field_of_view(tmp_path):
    img = {"train/r_0.png": np.zeros((20, 30, 3), np.uint8)}
    fr = [{"file_path": "./train/r_0", "transform_matrix": c2w((3.0, 0.0, 1.0)), "pl_pos": [0, 0, 3]}]
    cam = load_scene(write(tmp_path / "a", {"fl_x": 33.0, "fl_y": 31.0, "cx": 15.5, "cy": 9.5}, fr, img)).frames[0]
    assert (cam.camera.fx, cam.camera.fy, cam.camera.cx, cam.camera.cy) == (33.0, 31.0, 15.5, 9.5)
    cam = load_scene(write(tmp_path / "b", {"camera_angle_x": 0.8, "camera_angle_y": 0.6}, fr, img)).frames[0].camera
    assert 2 * math.atan(0.5 * cam.width / cam.fx) == pytest.approx(0.8)
    assert 2 * math.atan(0.5 * cam.height / cam.fy) == pytest.approx(0.6)


@pytest.mark.parametrize("field, value, problem", [
    ("pl_intensity", -1.0, "pl_intensity"), ("pl_intensity", [1.0, float("nan"), 1.0], "pl_intensity"),
    ("pl_intensity", "bright", "pl_intensity"), ("file_ext", ".exe", "file_ext")])
def test_bad_frame_fields_are_named(tmp_path, field, value, problem):
    fr = [{"file_path": "./train/r_0", "transform_matrix": c2w((3.0, 0.0, 1.0)), "pl_pos": [0, 0, 3], field: value}]
    root = write(tmp_path / "s", {"camera_angle_x": 0.7}, fr, {"train/r_0.png": np.zeros((8, 8, 3), np.uint8)})
    with pytest.raises(MetatuneError, match=f"frame 0: {problem}"):
        load_scene(root)


def test_bad_intrinsics_are_named(tmp_path):
    fr = [{"file_path": "./train/r_0", "transform_matrix": c2w((3.0, 0.0, 1.0)), "pl_pos": [0, 0, 3]}]
    img = {"train/r_0.png": np.zeros((8, 8, 3), np.uint8)}
    for i, meta in enumerate(({"camera_intrinsics": [4, 4, 0.0, 10.0]}, {"camera_intrinsics": [4, 4]}, {})):
        with pytest.raises(MetatuneError, match="intrinsics"):
            load_scene(write(tmp_path / f"s{i}", meta, fr, img))
