"""Keypoint layouts (COCO-17, COCO-18, MediaPipe BlazePose-33) read into BODY_25, normalised coordinates and
keypoints just outside the image."""
import json

import pytest
import torch

from hmr.keypoints import BODY25_TO_SMPLX, COCO17_TO_SMPLX, from_layout, parse_keypoints, read_keypoints, select_people
from hmr.layouts import (
    BODY25_NAMES,
    COCO17_NAMES,
    COCO18_NAMES,
    LAYOUT_SIZES,
    MEDIAPIPE33_NAMES,
    MEDIAPIPE33_TO_COCO17,
    body25_index,
    mediapipe_to_coco17,
    to_body25,
)
from metatune import MetatuneError


def _canonical(name: str) -> str:
    """left_shoulder / LShoulder / left_foot_index -> lshoulder, the names the layouts share."""
    name = name.replace("left_", "l").replace("right_", "r").replace("_", "").lower()
    return {"lfootindex": "lbigtoe", "rfootindex": "rbigtoe"}.get(name, name)


@pytest.mark.parametrize("layout, names", [("coco17", COCO17_NAMES), ("coco18", COCO18_NAMES),
                                           ("mediapipe33", MEDIAPIPE33_NAMES)])
def test_every_mapped_point_is_the_same_body_part(layout, names):
    index = body25_index(layout)
    assert len(names) == LAYOUT_SIZES[layout] and len(index) == 25
    mapped = 0
    for slot, src in enumerate(index):
        if src is not None:
            assert _canonical(names[src]) == _canonical(BODY25_NAMES[slot]), (layout, slot, names[src])
            mapped += 1
        else:   # a point is missing only when the layout has no point of that name
            assert _canonical(BODY25_NAMES[slot]) not in {_canonical(n) for n in names}, BODY25_NAMES[slot]
    assert mapped == {"coco17": 17, "coco18": 18, "mediapipe33": 21}[layout]


def test_coco17_read_into_body25_keeps_each_point_on_its_smpl_joint():
    for slot, src in enumerate(body25_index("coco17")):
        if src is not None:
            assert COCO17_TO_SMPLX[src] == BODY25_TO_SMPLX[slot]
    assert [_canonical(MEDIAPIPE33_NAMES[i]) for i in MEDIAPIPE33_TO_COCO17] == [_canonical(n) for n in COCO17_NAMES]


def test_to_body25_moves_points_and_marks_the_rest_missing():
    xy = torch.arange(33 * 2, dtype=torch.float32).view(1, 33, 2)
    conf = torch.full((1, 33), 0.9)
    out_xy, out_conf = to_body25(xy, conf, "mediapipe33")
    assert torch.equal(out_xy[0, BODY25_NAMES.index("LWrist")], xy[0, MEDIAPIPE33_NAMES.index("left_wrist")])
    missing = [BODY25_NAMES.index(n) for n in ("Neck", "MidHip", "LSmallToe", "RSmallToe")]
    assert out_conf[0, missing].eq(0).all() and out_xy[0, missing].eq(0).all()
    assert out_conf.gt(0).sum() == 21
    c17_xy, c17_conf = mediapipe_to_coco17(xy, conf)
    assert c17_xy.shape == (1, 17, 2) and torch.equal(c17_xy[0, 9], xy[0, 15])   # left wrist


def test_openpose_coco18_and_mediapipe_files_are_recognised(tmp_path):
    xy18 = torch.rand(1, 18, 2) * 100
    kp = parse_keypoints({"people": [{"pose_keypoints_2d": torch.cat([xy18[0], torch.ones(18, 1)], 1).flatten()
                                      .tolist()}]})
    assert kp.fmt == "coco18" and kp.xy.shape == (1, 25, 2)
    assert torch.equal(kp.xy[0, BODY25_NAMES.index("RHip")], xy18[0, COCO18_NAMES.index("RHip")])
    assert kp.conf[0, BODY25_NAMES.index("MidHip")] == 0
    marks = [[{"x": 0.01 * i, "y": 0.02 * i, "z": 0.0, "visibility": 0.8} for i in range(33)]]
    path = tmp_path / "mp.json"
    path.write_text(json.dumps({"landmarks": marks}))
    mp = read_keypoints(path)
    assert mp.fmt == "mediapipe33" and mp.conf.gt(0).sum() == 21
    flat = parse_keypoints({"people": [{"pose_keypoints_2d": [1.0, 2.0, 0.5] * 33}]})
    assert flat.fmt == "mediapipe33"
    with pytest.raises(MetatuneError, match="landmarks\\[0\\] must be a list of 33"):
        parse_keypoints({"landmarks": [marks[0][:30]]})
    with pytest.raises(MetatuneError, match="people\\[1\\] has 54 numbers, people\\[0\\] 75"):
        parse_keypoints({"people": [{"pose_keypoints_2d": [1.0] * 75}, {"pose_keypoints_2d": [1.0] * 54}]})


def _person(w: float, h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A MediaPipe-layout person spread over the middle of a w x h image."""
    xy = torch.stack([torch.linspace(0.3, 0.7, 33) * w, torch.linspace(0.1, 0.9, 33) * h], 1)[None]
    return xy, torch.ones(1, 33)


def test_normalised_coordinates_are_scaled_to_the_image_with_a_note():
    xy, conf = _person(1.0, 1.0)
    kp, kept, notes = select_people(from_layout(xy, conf, "mediapipe33"), 640, 480)
    assert kept == [0] and any("normalised" in n for n in notes)
    px, _ = _person(640.0, 480.0)
    torch.testing.assert_close(kp.xy[kp.conf > 0], from_layout(px, conf, "mediapipe33").xy[kp.conf > 0])
    _, _, none = select_people(from_layout(px, conf, "mediapipe33"), 640, 480)
    assert none == []      # pixel coordinates stay as they are


def test_keypoints_just_outside_are_dropped_far_outside_refused():
    xy, conf = _person(640.0, 480.0)
    wrist = MEDIAPIPE33_NAMES.index("right_wrist")
    xy[0, wrist] = torch.tensor([700.0, 200.0])      # 60 px right of a 640 px wide image
    kp, kept, notes = select_people(from_layout(xy, conf, "mediapipe33"), 640, 480)
    assert kp.conf[0, BODY25_NAMES.index("RWrist")] == 0 and kp.conf.gt(0).sum() == 20
    assert notes == ["keypoint RWrist of person 0 at (700.0, 200.0) lies outside the 640x480 image: dropped"]
    xy[0, wrist] = torch.tensor([5000.0, 200.0])
    with pytest.raises(MetatuneError, match="RWrist of person 0 .* far outside the 640x480 image"):
        select_people(from_layout(xy, conf, "mediapipe33"), 640, 480)
