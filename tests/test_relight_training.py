"""Training (meta, joint, plain), resuming, evaluation, adaptation, and the CLI on a tiny generated scene."""
import json

import pytest
import torch

from metatune import MetatuneError
from metatune.checkpoint import load as load_checkpoint
from metatune.cli import main
from relight import training
from relight.evaluation import adapt, evaluate
from relight.generate_mujoco import MujocoSceneConfig, generate_mujoco_scene
from relight.metrics import psnr
from relight.scene import load_scene
from relight.scene_layout import LayoutConfig
from relight.tasks import photometric_loss

TINY = LayoutConfig(resolution=24, n_cameras=6, train_lights=3, test_lights=2, views_per_light=3)


def cfg(**kw):
    base = dict(resolution=24, fit_steps=6, meta_steps=2, max_points=300, checkpoint_every=3, meta_batch=2)
    return training.TrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_mujoco_scene(tmp_path_factory.mktemp("scene"), MujocoSceneConfig("glossy", TINY, n_points=300))


@pytest.fixture(scope="module")
def meta_run(scene, tmp_path_factory):
    run = tmp_path_factory.mktemp("meta")
    training.train(scene, run, cfg(), progress=False)
    return run


def mean_train_loss(module, frames):
    with torch.no_grad():
        return sum(float(photometric_loss(training.render(module, f), f.image)) for f in frames) / len(frames)


def test_fitting_lowers_the_training_loss(scene, tmp_path):
    frames = load_scene(scene, "train", 24).frames
    fresh = training.build("joint", training.initial_points(load_scene(scene), 300, 0))
    before = mean_train_loss(fresh, frames)
    training.train(scene, tmp_path / "joint", cfg(method="joint", fit_steps=40, meta_steps=0), progress=False)
    _, trained, _ = training.load_checkpoint(tmp_path / "joint")
    assert mean_train_loss(trained, frames) < 0.8 * before


def test_meta_run_writes_checkpoints_and_learned_step_sizes(meta_run):
    c, module, state = training.load_checkpoint(meta_run)
    assert c.method == "meta" and state["fit_done"] == 6
    tuner = load_checkpoint(meta_run / training.TUNER, "relight", "meta_tuner")
    assert tuner["step"] == 2 and tuner["log_lr"] is not None
    assert len((meta_run / "meta_log.jsonl").read_text().splitlines()) == 2


def test_resumed_training_equals_uninterrupted(scene, tmp_path):
    # extended from 3 to 6 steps (densification, scheduled over the fitting steps, is off: its schedule changes)
    training.train(scene, tmp_path / "a", cfg(method="joint", fit_steps=6, meta_steps=0, densify=False), progress=False)
    training.train(scene, tmp_path / "b", cfg(method="joint", fit_steps=3, meta_steps=0, densify=False), progress=False)
    training.train(scene, tmp_path / "b", cfg(method="joint", fit_steps=6, meta_steps=0, densify=False), progress=False)
    _, a, sa = training.load_checkpoint(tmp_path / "a")
    _, b, sb = training.load_checkpoint(tmp_path / "b")
    assert sa["fit_done"] == sb["fit_done"] == 6
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), name


def test_a_densifying_run_resumes_to_the_uninterrupted_result(scene, tmp_path, monkeypatch):
    c = cfg(method="joint", fit_steps=12, meta_steps=0)  # densifies at steps 2-7 (no reset: a start from points)
    training.train(scene, tmp_path / "a", c, progress=False)
    calls = {"n": 0}

    def dies_at_step_8(pred, target):
        calls["n"] += 1
        return photometric_loss(pred, target) * (float("nan") if calls["n"] == 9 else 1.0)

    monkeypatch.setattr(training, "photometric_loss", dies_at_step_8)
    with pytest.raises(MetatuneError, match="not finite at step 8"):
        training.train(scene, tmp_path / "b", c, progress=False)
    monkeypatch.setattr(training, "photometric_loss", photometric_loss)
    training.train(scene, tmp_path / "b", c, progress=False)  # from the checkpoint at step 6
    _, a, sa = training.load_checkpoint(tmp_path / "a")
    _, b, sb = training.load_checkpoint(tmp_path / "b")
    assert sa["n"] == sb["n"] != 300 and len(sa["densify"]["history"]) == 6  # it did densify
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), name


def test_nan_loss_stops_with_a_clear_error_and_a_checkpoint(scene, tmp_path, monkeypatch):
    calls = {"n": 0}

    def flaky(pred, target):
        calls["n"] += 1
        return photometric_loss(pred, target) * (float("nan") if calls["n"] == 5 else 1.0)

    monkeypatch.setattr(training, "photometric_loss", flaky)
    with pytest.raises(MetatuneError, match="not finite at step 4"):
        training.train(scene, tmp_path / "nan", cfg(method="joint", meta_steps=0), progress=False)
    assert training.load_checkpoint(tmp_path / "nan")[2]["fit_done"] == 3


def test_evaluate_writes_metrics_and_images_that_reproduce_them(meta_run, scene, tmp_path):
    res = evaluate(meta_run, scene, tmp_path / "m.json", tmp_path / "img")
    saved = json.loads((tmp_path / "m.json").read_text())
    test = load_scene(scene, "test")
    assert saved["frames"] == len(test.frames) == len(saved["per_frame"])
    for frame, row in zip(test.frames, saved["per_frame"]):
        pred, _ = load_scene.__globals__["_to_rgb"](
            __import__("cv2").imread(str(tmp_path / "img" / (frame.file_path + ".png"))))
        assert pred.shape == tuple(frame.image.shape)  # at the scene's own size
        assert abs(psnr(torch.from_numpy(pred), frame.image) - row["psnr"]) < 0.3  # 8-bit rounding only
    assert abs(res["psnr"] - sum(r["psnr"] for r in saved["per_frame"]) / len(test.frames)) < 1e-3


def test_adaptation_lowers_the_support_loss(meta_run, scene):
    res = adapt(meta_run, scene, light_index=1, views=1, steps=3)
    assert res.losses[-1] < res.losses[0]
    assert len(res.query) == 2 and res.after["frames"] == 2


def test_plain_baseline_trains_and_cannot_adapt(scene, tmp_path):
    training.train(scene, tmp_path / "plain", cfg(method="plain", fit_steps=3, meta_steps=0), progress=False)
    assert evaluate(tmp_path / "plain", scene)["frames"] == 6
    with pytest.raises(MetatuneError, match="no light-dependent parameters"):
        adapt(tmp_path / "plain", scene)


def test_cli_verbs_and_bad_input(meta_run, scene, tmp_path, capsys):
    assert main(["relight", "render", "--checkpoint", str(meta_run), "--light", "1", "1", "2.5",
                 "--out", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "r.png").is_file()
    assert main(["relight", "render", "--checkpoint", str(meta_run), "--light", "0", "0", "0.2",
                 "--out", str(tmp_path / "bad.png")]) == 2
    assert "inside the object" in capsys.readouterr().err and not (tmp_path / "bad.png").exists()
    assert main(["relight", "evaluate", "--checkpoint", str(tmp_path / "none"), "--scene", str(scene),
                 "--out", str(tmp_path / "m")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["relight", "train", "--scene", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "transforms_train.json" in capsys.readouterr().err
    assert main(["relight", "adapt", "--checkpoint", str(meta_run), "--scene", str(scene), "--views", "1",
                 "--out", str(tmp_path / "ad")]) == 0
    assert json.loads((tmp_path / "ad" / "adapt.json").read_text())["views"] == 1
    assert main(["relight", "export", "--checkpoint", str(meta_run), "--out", str(tmp_path / "g.ply")]) == 0


def test_a_light_inside_the_object_is_rejected(scene, tmp_path):
    import shutil
    bad = tmp_path / "inside"
    shutil.copytree(scene, bad)
    tf = bad / "transforms_train.json"
    meta = json.loads(tf.read_text())
    meta["frames"][0]["pl_pos"] = [0.1, -0.1, 0.3]  # the centre of the glossy sphere
    tf.write_text(json.dumps(meta))
    with pytest.raises(MetatuneError, match="inside the object"):
        training.train(bad, tmp_path / "run", cfg(), progress=False)


def test_meta_starts_where_joint_ends_stage_one_and_is_resumable(scene, tmp_path):
    training.train(scene, tmp_path / "joint", cfg(method="joint", fit_steps=3, meta_steps=1), progress=False)
    _, joint, sj = training.load_checkpoint(tmp_path / "joint")
    assert sj["fit_done"] == 3 + 1 * 2  # stage 1 plus one step per query image of the meta-batch
    training.train(scene, tmp_path / "meta", cfg(fit_steps=3, meta_steps=0), progress=False)
    _, meta, _ = training.load_checkpoint(tmp_path / "meta")
    stage1 = load_checkpoint(tmp_path / "joint" / training.STAGE1, "relight", "run")
    for name, p in meta.named_parameters():  # stage 1 is the same computation for both methods
        assert torch.allclose(p, stage1["module"][name], atol=1e-6), name
    training.fork_stage1(tmp_path / "joint", tmp_path / "fork", "meta")
    training.train(scene, tmp_path / "fork", cfg(fit_steps=3, meta_steps=1), progress=False)
    c, _, state = training.load_checkpoint(tmp_path / "fork")
    tuner_state = load_checkpoint(tmp_path / "fork" / training.TUNER, "relight", "meta_tuner")
    assert c.method == "meta" and state["fit_done"] == 3 and tuner_state["optimizer"] is not None
    assert tuner_state["step"] == 1
    training.train(scene, tmp_path / "fork", cfg(fit_steps=3, meta_steps=2), progress=False)  # resume meta
    assert load_checkpoint(tmp_path / "fork" / training.TUNER, "relight", "meta_tuner")["step"] == 2
    training.fork_stage1(tmp_path / "joint", tmp_path / "straight", "meta")
    training.train(scene, tmp_path / "straight", cfg(fit_steps=3, meta_steps=2), progress=False)
    _, resumed, _ = training.load_checkpoint(tmp_path / "fork")
    _, straight, _ = training.load_checkpoint(tmp_path / "straight")
    for (name, pa), pb in zip(resumed.named_parameters(), straight.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), name  # a resumed meta-training equals an uninterrupted one
    with pytest.raises(MetatuneError, match="no stage-1 checkpoint"):
        training.fork_stage1(tmp_path / "nothing", tmp_path / "x", "meta")


def test_outer_loop_moves_each_parameter_at_its_fitting_step_size(scene):
    prior = training.build("meta", training.initial_points(load_scene(scene), 300, 0))
    c = cfg()
    sampler = training.TaskSampler(load_scene(scene, "train", 24).frames, seed=0)
    tuner = training.make_tuner(prior, c, sampler, None)
    tuner.train(1, progress=False)
    opt = tuner.optimizer
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    for name, p in prior.named_parameters():
        assert lr_of[id(p)] == training.FIT_LR[name.split(".")[-1]], name
    assert all(lr_of[id(p)] == c.outer_lr for p in tuner.log_lr)


def test_training_starts_from_a_3dgs_ply(scene, tmp_path):
    from relight.ply import export_ply

    start = training.build("joint", training.initial_points(load_scene(scene), 150, 3)).model
    export_ply(start, tmp_path / "start.ply")
    training.train(scene, tmp_path / "run", cfg(method="joint", fit_steps=3, meta_steps=0, densify=False,
                                                 init_ply=str(tmp_path / "start.ply")), progress=False)
    _, trained, _ = training.load_checkpoint(tmp_path / "run")
    assert len(trained.model.gaussians) == 150  # the file's Gaussians, not the scene's 300 points
    moved = (trained.model.gaussians.means - start.gaussians.means).norm(dim=-1).max()
    assert 0 < float(moved) < 0.05  # three fitting steps from the file's geometry
