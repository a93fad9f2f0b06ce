"""Keypoint formats (OpenPose BODY_25, COCO-17), their joint maps, and bad-input errors (layouts: test_hmr_layouts)."""
import json

import pytest
import torch

from hmr.body_model import BodyModel
from hmr.keypoints import (
    BODY25_TO_SMPLX,
    COCO17_TO_SMPLX,
    body25_json,
    parse_keypoints,
    read_keypoints,
    select_people,
)
from hmr.layouts import BODY25_NAMES
from metatune import MetatuneError

COCO_NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
              "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
              "right_knee", "left_ankle", "right_ankle"]


def _body25_name(coco: str) -> str:
    side, _, part = coco.partition("_")
    if not part:
        return "Nose"
    return ("L" if side == "left" else "R") + {"eye": "Eye", "ear": "Ear", "shoulder": "Shoulder", "elbow": "Elbow",
                                               "wrist": "Wrist", "hip": "Hip", "knee": "Knee", "ankle": "Ankle"}[part]


def test_coco_map_agrees_with_body25_map_by_name():
    for i, name in enumerate(COCO_NAMES):
        assert COCO17_TO_SMPLX[i] == BODY25_TO_SMPLX[BODY25_NAMES.index(_body25_name(name))], name


def test_body25_map_is_anatomically_right_on_the_rest_body():
    body = BodyModel.load()
    j = body.joints(torch.zeros(1, 10), torch.eye(3)[None], torch.zeros(1, 69))[0][BODY25_TO_SMPLX]
    for i, name in enumerate(BODY25_NAMES):
        if name.startswith("L"):
            assert j[i, 0] > 0.01, name          # the body's left is SMPL's +x
        elif name.startswith("R"):
            assert j[i, 0] < -0.01, name
    order = [BODY25_NAMES.index(n) for n in ("Nose", "Neck", "MidHip", "LKnee", "LAnkle", "LHeel")]
    heights = j[order, 1]
    assert (heights[:-1] > heights[1:]).all()   # head to heel, top to bottom


def test_body25_round_trip_and_confidences(tmp_path):
    xy = torch.rand(2, 25, 2) * 100
    conf = torch.rand(2, 25)
    path = tmp_path / "kp.json"
    path.write_text(json.dumps(body25_json(xy, conf)))
    kp = read_keypoints(path)
    assert kp.fmt == "body25" and kp.joint_map == BODY25_TO_SMPLX
    torch.testing.assert_close(kp.xy, xy)
    torch.testing.assert_close(kp.conf, conf)


def test_coco_annotations_use_visibility_and_results_use_scores():
    kps = [10.0, 20.0, 2] * 8 + [0.0, 0.0, 0] * 9
    ann = parse_keypoints({"images": [], "annotations": [{"image_id": 1, "keypoints": kps}]})
    # read into BODY_25: COCO's first 8 points (nose, eyes, ears, shoulders, left elbow) are the visible ones
    seen = [BODY25_NAMES.index(n) for n in ("Nose", "LEye", "REye", "LEar", "REar", "LShoulder", "RShoulder",
                                            "LElbow")]
    assert ann.fmt == "coco17" and ann.conf[0, seen].eq(1).all() and ann.conf.gt(0).sum() == 8
    res = parse_keypoints([{"image_id": 1, "keypoints": [10.0, 20.0, 0.7] * 17, "score": 0.9}])
    assert res.conf.gt(0).sum() == 17 and torch.allclose(res.conf[res.conf > 0], torch.tensor(0.7))


@pytest.mark.parametrize("data, match", [
    ({"people": [{"pose_keypoints_2d": [1, 2, 3]}]}, "expected 75"),
    ({"people": [{"face": []}]}, "no 'pose_keypoints_2d'"),
    ({"annotations": [{"keypoints": ["a"] * 51}]}, "must be numbers"),
    ({"something": 1}, "neither OpenPose"),
])
def test_malformed_keypoints_name_the_problem(data, match):
    with pytest.raises(MetatuneError, match=match):
        parse_keypoints(data)


def test_unreadable_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MetatuneError, match="not valid JSON"):
        read_keypoints(bad)
    with pytest.raises(MetatuneError, match="not found"):
        read_keypoints(tmp_path / "missing.json")


def test_select_people_rejects_outside_points_and_keeps_confident_people():
    xy = torch.full((3, 25, 2), 50.0)
    conf = torch.ones(3, 25)
    conf[1] = 0.0                       # nobody there
    conf[1, :3] = 1.0
    kp = parse_keypoints(body25_json(xy, conf))
    sel, kept, notes = select_people(kp, 100, 100)
    assert kept == [0, 2] and notes == []
    xy[2, 4] = torch.tensor([500.0, 50.0])
    with pytest.raises(MetatuneError, match="keypoint RWrist of person 2 .* far outside the 100x100 image"):
        select_people(parse_keypoints(body25_json(xy, conf)), 100, 100)
    with pytest.raises(MetatuneError, match="no person has at least"):
        select_people(parse_keypoints(body25_json(xy[1:2], conf[1:2])), 100, 100)
