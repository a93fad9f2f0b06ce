"""`metatune hmr ...` end to end on a generated person, and clear errors (exit 2, nothing half-written)."""
import json

import cv2
import numpy as np
import pytest
import torch

from hmr.body_model import BodyModel, generated_model_path, read_model_file, write_model_file
from hmr.camera import project
from hmr.demo import person_image
from hmr.keypoints import BODY25_TO_SMPLX, COCO17_TO_SMPLX, body25_json
from hmr.objective import posed_joints
from hmr.smplx_layout import smplx_arrays
from hmr.synthetic import SyntheticConfig, make_people
from metatune.cli import main


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("hmr_cli")
    body = BodyModel.load()
    person = make_people(body, 1, seed=11, cfg=SyntheticConfig(min_width=160, max_width=200, missing=0,
                                                              outliers=0))
    w, h, f = int(person.width[0]), int(person.height[0]), float(person.focal[0])
    cv2.imwrite(str(d / "person.png"), person_image(body, person.params, w, h, f)[..., ::-1])
    (d / "kp.json").write_text(json.dumps(body25_json(person.kp_xy, person.kp_conf)))
    return d, person, body


def test_infer_writes_meshes_overlay_and_result(scene, tmp_path):
    d, person, body = scene
    out = tmp_path / "fit"
    assert main(["hmr", "infer", str(d / "person.png"), "--keypoints", str(d / "kp.json"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["keypoints.json", "overlay.png", "person_0.obj", "result.json"]
    obj = (out / "person_0.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in obj) == 6890
    res = json.loads((out / "result.json").read_text())
    p0 = res["people"][0]
    assert len(p0["joint_std_mm"]) == 24 and len(p0["body_pose"]) == 69 and len(p0["betas"]) == 10
    assert res["camera"]["width"] == int(person.width[0])
    # the fitted joints reproject onto the keypoints (2 px noise, no outliers here)
    j = torch.tensor(p0["joints3d"])
    uv = res["camera"]["focal"] * j[:, :2] / j[:, 2:] + torch.tensor(res["camera"]["centre"])
    kp = person.kp_xy[0, [BODY25_TO_SMPLX.index(i) for i in (12, 16, 17, 1, 2)]]
    assert (uv[[12, 16, 17, 1, 2]] - kp).norm(dim=-1).median() < 0.05 * res["camera"]["height"]
    overlay = cv2.imread(str(out / "overlay.png"))
    assert overlay.shape[:2] == (int(person.height[0]), int(person.width[0]))
    assert (overlay != cv2.imread(str(d / "person.png"))).any()     # the mesh is drawn


def test_infer_accepts_an_smplx_model_file(scene, tmp_path):
    """A user's SMPL-X file (here: one in the SMPL-X format built from the generated arrays)."""
    d, person, body = scene
    model = tmp_path / "SMPLX_NEUTRAL.npz"
    np.savez(model, **smplx_arrays(read_model_file(generated_model_path())))
    out = tmp_path / "fit"
    assert main(["hmr", "infer", str(d / "person.png"), "--keypoints", str(d / "kp.json"), "--model", str(model),
                 "--out", str(out)]) == 0
    obj = (out / "person_0.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in obj) == 10475
    res = json.loads((out / "result.json").read_text())
    assert res["model_type"] == "smplx" and len(res["people"][0]["joints3d"]) == 24
    j = torch.tensor(res["people"][0]["joints3d"])
    uv = res["camera"]["focal"] * j[:, :2] / j[:, 2:] + torch.tensor(res["camera"]["centre"])
    kp = person.kp_xy[0, [BODY25_TO_SMPLX.index(i) for i in (12, 16, 17, 1, 2)]]
    assert (uv[[12, 16, 17, 1, 2]] - kp).norm(dim=-1).median() < 0.05 * res["camera"]["height"]


def test_adapt_fits_coco17_annotations(scene, tmp_path):
    """A COCO-style annotation file (visibility flags) of the same person: the fit reprojects onto it.
    (The person's image is the CLI scene's; adapt needs only its size.)"""
    _, person, body = scene
    uv = project(posed_joints(body, person.params)[:, COCO17_TO_SMPLX], person.focal,
                 torch.stack([person.width, person.height], 1) / 2)[0]
    kps = torch.cat([uv, torch.full((17, 1), 2.0)], 1).flatten().tolist()
    coco = {"images": [{"id": 1, "width": int(person.width[0]), "height": int(person.height[0])}],
            "annotations": [{"image_id": 1, "category_id": 1, "num_keypoints": 17, "keypoints": kps}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    out = tmp_path / "coco_fit.json"
    assert main(["hmr", "adapt", "--keypoints", str(tmp_path / "coco.json"), "--width", str(int(person.width[0])),
                 "--height", str(int(person.height[0])), "--out", str(out)]) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["method"] == "meta"           # the shipped meta-learned fit takes COCO-17 (read into BODY_25)
    fit = res["people"][0]
    again = project(posed_joints(body, torch.tensor([fit["params"]]))[:, COCO17_TO_SMPLX], person.focal,
                    torch.stack([person.width, person.height], 1) / 2)[0]
    assert (again - uv).norm(dim=-1).median() < 0.03 * float(person.height[0])


def test_train_evaluate_and_infer_with_a_checkpoint(scene, tmp_path):
    d, _, _ = scene
    ckpt = tmp_path / "run"
    train = ["hmr", "train", "--out", str(ckpt), "--pretrain-steps", "5", "--steps", "1",
             "--inner-steps", "2", "--people", "4", "--calibration-people", "4", "--train-pool", "64"]
    assert main(train) == 0
    assert {"checkpoint.pt", "config.json", "log.jsonl", "training.png", "metrics.json"} <= {
        p.name for p in ckpt.iterdir()}
    assert main(train) == 0  # a finished run run again is reported complete, never retrained or overwritten
    assert main(["hmr", "evaluate", "--checkpoint", str(ckpt), "--people", "3", "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["summary"]
    assert metrics["meta_fit"]["iterations"] == 2 and metrics["smplify"]["iterations"] == 100 + 120
    assert main(["hmr", "adapt", "--keypoints", str(d / "kp.json"), "--width", "200", "--height", "300",
                 "--checkpoint", str(ckpt), "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "result.json").read_text())["method"] == "meta"


def _expect_error(capsys, argv, match, out):
    assert main(argv) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_bad_inputs_fail_clearly_without_output(scene, tmp_path, capsys):
    d, person, _ = scene
    out = tmp_path / "never"
    img, kp = str(d / "person.png"), str(d / "kp.json")
    _expect_error(capsys, ["hmr", "infer", str(d / "nope.png"), "--keypoints", kp, "--out", str(out)],
                  "file not found", out)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    _expect_error(capsys, ["hmr", "infer", str(tmp_path / "bad.png"), "--keypoints", kp, "--out", str(out)],
                  "cannot read image", out)
    (tmp_path / "bad.json").write_text("{")
    _expect_error(capsys, ["hmr", "infer", img, "--keypoints", str(tmp_path / "bad.json"), "--out", str(out)],
                  "not valid JSON", out)
    far = person.kp_xy.clone()
    far[0, 3] = torch.tensor([5000.0, 10.0])
    (tmp_path / "far.json").write_text(json.dumps(body25_json(far, person.kp_conf)))
    _expect_error(capsys, ["hmr", "infer", img, "--keypoints", str(tmp_path / "far.json"), "--out", str(out)],
                  "outside the", out)
    (tmp_path / "weak.json").write_text(json.dumps(body25_json(person.kp_xy, person.kp_conf * 0.05)))
    _expect_error(capsys, ["hmr", "infer", img, "--keypoints", str(tmp_path / "weak.json"), "--out", str(out)],
                  "no person has at least", out)
    (tmp_path / "model.pkl").write_bytes(b"garbage")
    _expect_error(capsys, ["hmr", "infer", img, "--keypoints", kp, "--model", str(tmp_path / "model.pkl"),
                           "--out", str(out)], "cannot read body model", out)
    _expect_error(capsys, ["hmr", "evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(out)],
                  "--checkpoint: not found", out)


def test_untrusted_model_shapes_and_out_folders(scene, tmp_path, capsys):
    """A model with the right keys and wrong shapes, --out naming a file, and a reused --out with more people."""
    d, person, _ = scene
    img, kp = str(d / "person.png"), str(d / "kp.json")
    arrays = read_model_file(generated_model_path())
    for key, bad, match in (("posedirs", arrays["posedirs"][:, :, :100], "field 'posedirs' has shape (6890, 3, 100)"),
                            ("J_regressor", arrays["J_regressor"][:10], "field 'J_regressor' has shape (10, 6890)"),
                            ("f", arrays["f"] + 7000, "faces index vertices outside 0..6889")):
        model = tmp_path / f"bad_{key}.pkl"
        write_model_file(model, arrays | {key: bad})
        _expect_error(capsys, ["hmr", "infer", img, "--keypoints", kp, "--model", str(model), "--out",
                               str(tmp_path / "never")], match, tmp_path / "never")
    (tmp_path / "afile").write_text("x")
    assert main(["hmr", "infer", img, "--keypoints", kp, "--out", str(tmp_path / "afile")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    two = tmp_path / "two.json"
    two.write_text(json.dumps(body25_json(person.kp_xy.repeat(2, 1, 1), person.kp_conf.repeat(2, 1))))
    out = tmp_path / "reused"
    assert main(["hmr", "infer", img, "--keypoints", str(two), "--out", str(out), "--baseline"]) == 0
    assert (out / "person_1.obj").is_file()
    (out / "notes.txt").write_text("the user's own file")
    assert main(["hmr", "infer", img, "--keypoints", kp, "--out", str(out), "--baseline"]) == 0
    assert not (out / "person_1.obj").exists() and (out / "notes.txt").is_file()   # no stale mesh, user files kept
    assert len(json.loads((out / "result.json").read_text())["people"]) == 1


def test_a_poor_fit_is_reported_and_strict_exits_3(scene, tmp_path, capsys):
    """A wrist keypoint no arm can reach (half the image away from its elbow): the quality report says poor,
    a warning names it, and --strict exits 3 with every output written."""
    d, person, _ = scene
    bad = person.kp_xy.clone()
    h = float(person.height[0])
    bad[0, 4] = torch.tensor([float(bad[0, 3, 0]), min(float(bad[0, 3, 1]) + 0.5 * h, h - 2)])   # RWrist
    conf = person.kp_conf.clone()
    conf[0, 4] = 1.0
    (tmp_path / "bad.json").write_text(json.dumps(body25_json(bad, conf)))
    img = str(d / "person.png")
    out = tmp_path / "fit"
    assert main(["hmr", "infer", img, "--keypoints", str(tmp_path / "bad.json"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    q = json.loads((out / "result.json").read_text())["people"][0]["quality"]
    assert q["poor"], q
    assert "person 0 fits poorly" in err and f"({q['worst_keypoint']})" in err
    assert q["reprojection_px"]["RWrist"] == q["max_px"] and q["max_of_height"] > 0.10
    assert main(["hmr", "infer", img, "--keypoints", str(tmp_path / "bad.json"), "--out", str(out), "--strict"]) == 3
    assert {"overlay.png", "person_0.obj", "result.json", "keypoints.json"} <= {p.name for p in out.iterdir()}
    # the clean keypoints of the same person are not poor, and --strict exits 0
    assert main(["hmr", "infer", img, "--keypoints", str(d / "kp.json"), "--out", str(out), "--strict"]) == 0
