"""`metatune hmr infer PHOTO` alone on real photos of people: the built-in detector finds them, the shipped
meta-learned fit reprojects onto the detector's keypoints (median < 3%, max < 10% of the person's height).

The photos are OpenCV's example images, installed by Debian's opencv-doc package (scripts/setup.sh installs
it; their licences do not let us commit them), and scikit-image's astronaut (NASA, public domain).
"""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hmr.keypoints import BODY25_TO_SMPLX
from hmr.layouts import BODY25_NAMES
from metatune.cli import main

OPENCV_PHOTOS = Path("/usr/share/doc/opencv-doc/examples/data")
# Keypoints a full-body person shows: both shoulders, hips, knees and ankles, confidently and inside the image.
FULL_BODY = [BODY25_NAMES.index(f"{s}{part}") for s in "LR" for part in ("Shoulder", "Hip", "Knee", "Ankle")]
# BODY_25 keypoints that are SMPL body joints (result.json's joints3d holds the 24 body joints only)
BODY_JOINTS = [k for k, j in enumerate(BODY25_TO_SMPLX) if j < 24]


def _photo(name: str) -> Path:
    path = OPENCV_PHOTOS / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: install Debian's opencv-doc (scripts/setup.sh does, as root)")
    return path


def _reprojection(out: Path, person: int) -> tuple[np.ndarray, float]:
    """Pixel errors of the fitted body joints against the keypoints fitted, and the projected mesh's height,
    computed from the written files (result.json's joints3d and camera, keypoints.json, person_<i>.obj)."""
    res = json.loads((out / "result.json").read_text())
    kp = np.asarray(json.loads((out / "keypoints.json").read_text())["people"][person]["pose_keypoints_2d"])
    kp = kp.reshape(25, 3)
    cam = res["camera"]
    f, c = cam["focal"], np.asarray(cam["centre"])
    j = np.asarray(res["people"][person]["joints3d"])[[BODY25_TO_SMPLX[k] for k in BODY_JOINTS]]
    uv = f * j[:, :2] / j[:, 2:] + c
    used = kp[BODY_JOINTS, 2] > 0
    err = np.linalg.norm(uv - kp[BODY_JOINTS, :2], axis=1)[used]
    verts = np.array([[float(x) for x in line.split()[1:4]] for line in (out / f"person_{person}.obj").read_text()
                      .splitlines() if line.startswith("v ")])
    mesh_uv = f * verts[:, :2] / verts[:, 2:] + c
    return err, float((mesh_uv.max(0) - mesh_uv.min(0)).max())


@pytest.mark.parametrize("name", ["messi5.jpg", "basketball1.png"])
def test_a_photo_alone_gives_meshes_that_reproject_onto_every_full_body_person(name, tmp_path, capsys):
    photo = _photo(name)
    out = tmp_path / "fit"
    assert main(["hmr", "infer", str(photo), "--out", str(out), "--strict"]) in (0, 3)
    res = json.loads((out / "result.json").read_text())
    assert res["method"] == "meta" and res["keypoints"].startswith("detected")
    kp = json.loads((out / "keypoints.json").read_text())["people"]
    h, w = cv2.imread(str(photo)).shape[:2]
    full = [i for i, p in enumerate(kp) if (np.asarray(p["pose_keypoints_2d"]).reshape(25, 3)[FULL_BODY, 2]
                                               >= 0.5).all()]
    assert full, f"no full-body person found in {name}"
    for i in full:
        err, height = _reprojection(out, i)
        q = res["people"][i]["quality"]
        assert np.median(err) < 0.03 * height and err.max() < 0.10 * height, (name, i, np.median(err), err.max(),
                                                                               height)
        assert not q["poor"] and q["keypoints_used"] >= 15
        assert abs(q["height_px"] - height) < 1.0       # the report measures what the files say
    overlay = cv2.imread(str(out / "overlay.png"))
    assert overlay.shape[:2] == (h, w) and (overlay != cv2.imread(str(photo))).any()
    assert len(list(out.glob("person_*.obj"))) == len(res["people"])


def test_an_upper_body_photo_from_scikit_image(tmp_path):
    from skimage import data

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), data.astronaut()[..., ::-1])
    out = tmp_path / "fit"
    assert main(["hmr", "infer", str(photo), "--out", str(out), "--frame", "y-up", "--fov", "50"]) in (0, 3)
    res = json.loads((out / "result.json").read_text())
    assert res["frame"] == "y-up" and res["camera"]["focal_source"] == "--fov"
    torch.testing.assert_close(res["camera"]["focal"], 256 / np.tan(np.radians(25)))
    person = res["people"][0]
    assert person["quality"]["keypoints_used"] >= 8
    assert np.asarray(person["joints3d"])[:, 2].max() < 0      # y-up: the camera looks down -z


def test_the_detector_finds_several_people_and_people_in_boxes(tmp_path, capsys):
    from hmr.detector import detect_people
    from hmr.infer import read_image

    img = read_image(_photo("basketball1.png"))
    both = detect_people(img)
    assert len(both) == 2
    left = both.xy[both.xy[:, :, 0].mean(1).argmin()]
    box = (float(left[:, 0].min()), float(left[:, 1].min()), float(left[:, 0].max()), float(left[:, 1].max()))
    one = detect_people(img, boxes=[box])
    assert len(one) == 1 and (one.xy[0] - left).norm(dim=-1).median() < 10     # the same person, found again
    wall = "250,20,420,200"       # the empty wall between them
    assert main(["hmr", "infer", str(_photo("basketball1.png")), "--boxes", wall, "--out", str(tmp_path / "x")]) == 2
    assert "found no person in the 1 boxes given" in capsys.readouterr().err


def test_a_head_and_shoulders_portrait_is_placed_by_its_shoulders(tmp_path):
    """matplotlib's Grace Hopper (public domain): no hip is seen, so the depth comes from the shoulder width."""
    import matplotlib

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    out = tmp_path / "fit"
    assert main(["hmr", "infer", str(photo), "--out", str(out), "--strict"]) == 0
    q = json.loads((out / "result.json").read_text())["people"][0]["quality"]
    h = cv2.imread(str(photo)).shape[0]
    assert q["median_px"] < 0.03 * h and q["max_px"] < 0.10 * h      # of the photo's height: she fills it
