"""Hostile and broken input files: pickles that would run code, paths that leave their folder, cameras,
lights and images that mean nothing. Each is refused with a MetatuneError naming the problem, and no code
runs, nothing is written outside its folder."""
import io
import json
import math
import os
import pathlib
import pickle
import shutil

import cv2
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hmr import body_model
from hmr.body_model import BodyModel, generated_model_path, read_model_file, write_model_file
from metatune.cli import main
from metatune.errors import MetatuneError
from metatune.unpickle import ChumpyStandIn, load_npz, safe_load
from relight.camera import look_at
from relight.scene import load_scene, output_image_path, save_image


class Touch:
    """Unpickling this calls pathlib.Path.touch(marker): proof that a pickle ran code."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


class System:
    """Unpickling this runs a shell command that creates the marker."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def small_arrays() -> dict:
    """Every field read_model_file asks for, tiny (the refusal comes before any shape is looked at)."""
    return {"v_template": np.zeros((4, 3)), "shapedirs": np.zeros((4, 3, 2)), "posedirs": np.zeros((4, 3, 9)),
            "J_regressor": sp.csc_matrix(np.eye(2, 4)), "weights": np.full((4, 2), 0.5),
            "kintree_table": np.array([[2**32 - 1, 0], [0, 1]]), "f": np.array([[0, 1, 2], [1, 2, 3]])}


def hostile_model(path: pathlib.Path, marker: pathlib.Path, payload=Touch, protocol: int = 2) -> pathlib.Path:
    data = small_arrays() | {"v_template": payload(marker)}
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


@pytest.mark.parametrize("payload", [Touch, System])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_a_pickled_body_model_cannot_run_code(tmp_path, payload, protocol):
    marker = tmp_path / "pwned"
    model = hostile_model(tmp_path / "model.pkl", marker, payload, protocol)
    # protocols < 4 name Path.touch through builtins.getattr, so that is what they refuse
    name = r"\S*(Path.touch|getattr)" if payload is Touch else f"{os.system.__module__}.system"
    with pytest.raises(MetatuneError, match=f"refusing to unpickle {name} from body model .*model.pkl"):
        BodyModel.load(model)
    assert not marker.exists()


def test_a_hostile_model_given_to_the_cli_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    model = hostile_model(tmp_path / "SMPL_NEUTRAL.pkl", marker, protocol=5)
    xy = torch.stack([torch.linspace(40, 120, 25), torch.linspace(20, 180, 25)], 1)[None]
    kp = tmp_path / "kp.json"
    from hmr.keypoints import body25_json
    kp.write_text(json.dumps(body25_json(xy, torch.ones(1, 25))))
    image = tmp_path / "person.png"
    cv2.imwrite(str(image), np.full((200, 160, 3), 128, np.uint8))
    runs = {"adapt": ["--keypoints", str(kp), "--width", "160", "--height", "200", "--out", str(tmp_path / "a.json")],
            "infer": [str(image), "--keypoints", str(kp), "--out", str(tmp_path / "fit")]}
    for verb, args in runs.items():
        assert main(["hmr", verb, *args, "--model", str(model)]) == 2
        assert "refusing to unpickle pathlib.Path.touch" in capsys.readouterr().err
        assert not marker.exists()
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "fit").exists()


def test_an_npz_object_field_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "SMPLX_NEUTRAL.npz"
    plain = {k: np.asarray(v.todense()) if sp.issparse(v) else v for k, v in small_arrays().items()}
    np.savez(path, **plain, joint2num=np.array([Touch(marker)], dtype=object))
    with pytest.raises(MetatuneError, match="refusing to unpickle .* from field 'joint2num'"):
        read_model_file(path)
    assert not marker.exists()
    # the object fields official SMPL-X files have (dicts of names to indices) still load, through the allowlist
    np.savez(path, **plain, joint2num=np.array({"pelvis": 0}, dtype=object))
    assert read_model_file(path)["joint2num"].item() == {"pelvis": 0}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "metatune"


def test_a_model_planted_in_the_cache_is_regenerated_not_loaded(tmp_path, cache):
    path = generated_model_path()
    assert path.parent == cache and (cache.stat().st_mode & 0o777) == 0o700
    good = path.read_bytes()
    marker = tmp_path / "pwned"
    hostile_model(path, marker)  # the sidecar no longer matches
    assert generated_model_path() == path and not marker.exists()
    assert path.read_bytes() == good
    BodyModel.load()  # loads the regenerated model
    assert not marker.exists()
    # a planted model with a matching sidecar (whoever can do that is you) is still refused by the allowlist
    hostile_model(path, marker)
    sidecar = path.with_name(path.name + ".sha256")
    sidecar.write_text(body_model._sha256(path))
    with pytest.raises(MetatuneError, match="refusing to unpickle"):
        BodyModel.load()
    assert not marker.exists()


def test_a_cache_folder_others_can_write_or_own_is_refused(cache, monkeypatch):
    cache.mkdir(parents=True)
    cache.chmod(0o777)
    with pytest.raises(MetatuneError, match="mode 777 lets others write"):
        generated_model_path()
    cache.chmod(0o700)
    monkeypatch.setattr(body_model.os, "getuid", lambda: cache.stat().st_uid + 1)
    with pytest.raises(MetatuneError, match="belongs to user id"):
        generated_model_path()
    assert not any(cache.iterdir())


def test_numpy_and_sparse_pickles_of_every_vintage_load(tmp_path):
    data = small_arrays() | {"betas": np.float32(0.5), "name": "SMPL", "dirty": {1, 2}, "raw": b"\x00\xff",
                             "J_regressor_prior": sp.csr_matrix(np.eye(3))}
    for protocol in range(6):
        back = safe_load(io.BytesIO(pickle.dumps(data, protocol=protocol)), "x.pkl")
        assert isinstance(back["J_regressor"], sp.csc_matrix) and (back["J_regressor"] != data["J_regressor"]).nnz == 0
        np.testing.assert_array_equal(back["kintree_table"], data["kintree_table"])
        assert back["betas"] == np.float32(0.5) and back["raw"] == b"\x00\xff" and back["dirty"] == {1, 2}
    # numpy 1 and old scipy (as SMPL's own files) name other modules: numpy.core, scipy.sparse.csc
    old = pickle.dumps(data, protocol=0).replace(b"numpy._core.", b"numpy.core.") \
        .replace(b"scipy.sparse._csc\n", b"scipy.sparse.csc\n").replace(b"scipy.sparse._csr\n", b"scipy.sparse.csr\n")
    assert b"scipy.sparse.csc\n" in old and b"numpy.core.multiarray" in old
    path = tmp_path / "old.pkl"
    path.write_bytes(old)
    back = read_model_file(path)
    assert (back["J_regressor"] != data["J_regressor"]).nnz == 0 and back["name"] == "SMPL"
    # written by write_model_file (what the generated model is) and read back
    np.testing.assert_array_equal(read_model_file(write_model_file(tmp_path / "m.pkl", data))["f"], data["f"])


def test_the_unpickler_refuses_what_numpy_and_sparse_do_not_need(tmp_path):
    marker = tmp_path / "pwned"
    for what in (Touch(marker), [System(marker)], {"a": eval}, print):
        with pytest.raises(MetatuneError, match="refusing to unpickle .* from evil.pkl"):
            safe_load(io.BytesIO(pickle.dumps(what, protocol=2)), "evil.pkl")
    # copyreg._reconstructor is allowed only for allowlisted classes on the object base
    def reconstructor(cls: bytes, base: bytes) -> io.BytesIO:
        return io.BytesIO(b"ccopy_reg\n_reconstructor\n(c" + cls + b"\nc" + base + b"\nNtR.")
    assert isinstance(safe_load(reconstructor(b"chumpy.ch\nCh", b"__builtin__\nobject"), "ok.pkl"), ChumpyStandIn)
    with pytest.raises(MetatuneError, match="refusing to unpickle pathlib.PosixPath"):
        safe_load(reconstructor(b"pathlib\nPosixPath", b"__builtin__\nobject"), "evil.pkl")
    for cls, base in ((b"numpy\nndarray", b"__builtin__\nobject"), (b"chumpy.ch\nCh", b"numpy\ndtype")):
        with pytest.raises(MetatuneError, match=r"refusing copyreg._reconstructor\("):
            safe_load(reconstructor(cls, base), "evil.pkl")
    with pytest.raises(MetatuneError, match="only latin1"):
        safe_load(io.BytesIO(b"c_codecs\nencode\n(Vx\nVzlib\ntR."), "evil.pkl")
    with pytest.raises(MetatuneError, match="cannot read broken.pkl: not a readable pickle"):
        safe_load(io.BytesIO(b"\x80\x02}q"), "broken.pkl")
    with pytest.raises(MetatuneError, match="cannot read .*missing.npz"):
        load_npz(tmp_path / "missing.npz")
    assert not marker.exists()


# --- relight: scenes written by hand, 8x8 images, 3 frames ---------------------------------------------

def c2w(eye=(3.0, 0.0, 1.0)) -> list:
    return look_at(torch.tensor(eye), torch.zeros(3)).tolist()


def write_scene(root: pathlib.Path, frames=None, angle=0.7, sizes=None, split="train") -> pathlib.Path:
    """A scene folder with one 8x8 image per frame; `frames` overrides the frames' fields."""
    (root / split).mkdir(parents=True, exist_ok=True)
    base = [{"file_path": f"./{split}/r_{i:03d}", "transform_matrix": c2w((3.0, i - 1.0, 1.0)),
             "pl_pos": [1.0, 2.0, 3.0]} for i in range(3)]
    for i, fr in enumerate(base):
        h, w = (sizes or {}).get(i, (8, 8))
        cv2.imwrite(str(root / split / f"r_{i:03d}.png"), np.full((h, w, 3), 40 * (i + 1), np.uint8))
        fr.update((frames or {}).get(i, {}))
    (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": angle, "frames": base}))
    return root


def test_a_well_formed_hand_written_scene_loads(tmp_path):
    scene = load_scene(write_scene(tmp_path / "s"))
    assert len(scene.frames) == 3 and scene.frames[0].image.shape == (8, 8, 3)
    assert float(scene.frames[1].image.max()) == pytest.approx(80 / 255)


def test_image_paths_leaving_the_scene_are_refused(tmp_path):
    outside = tmp_path / "escape.png"
    cv2.imwrite(str(outside), np.zeros((8, 8, 3), np.uint8))
    for fp, problem in (("../escape.png", "leaves its folder"), (str(outside), "is absolute")):
        root = write_scene(tmp_path / f"s{len(problem)}", {1: {"file_path": fp}})
        with pytest.raises(MetatuneError, match=f"frame 1: file_path '{fp}' {problem}"):
            load_scene(root)


@pytest.mark.parametrize("matrix, problem", [
    (lambda m: m[0].__setitem__(1, float("nan")), "non-finite"),
    (lambda m: [row.__setitem__(slice(0, 3), [0.0, 0.0, 0.0]) for row in m[:3]], "not rigid"),  # singular
    (lambda m: [row.__setitem__(slice(0, 3), [2 * v for v in row[:3]]) for row in m[:3]], "not rigid"),  # scaled
    (lambda m: [row.__setitem__(0, -row[0]) for row in m[:3]], "determinant -1"),  # a mirror
    (lambda m: m[3].__setitem__(0, 0.5), "bottom row"),
    (lambda m: m.pop(), "not 4x4"),
])
def test_cameras_must_be_finite_and_rigid(tmp_path, matrix, problem):
    m = c2w()
    matrix(m)
    root = write_scene(tmp_path / "s", {2: {"transform_matrix": m}})
    with pytest.raises(MetatuneError, match=f"frame 2: .*{problem}"):
        load_scene(root)


def test_a_rigid_camera_stored_to_four_decimals_still_loads(tmp_path):
    m = [[round(v, 4) for v in row] for row in c2w((2.0, 1.3, 0.7))]
    assert len(load_scene(write_scene(tmp_path / "s", {0: {"transform_matrix": m}})).frames) == 3


@pytest.mark.parametrize("angle", [-0.5, 0.0, math.pi, 4.0, float("nan"), float("inf")])
def test_the_field_of_view_must_lie_in_0_pi(tmp_path, angle):
    with pytest.raises(MetatuneError, match=r"camera_angle_x .* in \(0, pi\)"):
        load_scene(write_scene(tmp_path / "s", angle=angle))


@pytest.mark.parametrize("pos", [[float("nan"), 0.0, 1.0], [float("inf"), 0.0, 1.0], [1.0, 2.0]])
def test_light_positions_must_be_finite_3_vectors(tmp_path, pos):
    with pytest.raises(MetatuneError, match="frame 0: pl_pos .* not a finite 3-vector"):
        load_scene(write_scene(tmp_path / "s", {0: {"pl_pos": pos}}))


def test_an_image_of_another_size_is_refused(tmp_path):
    root = write_scene(tmp_path / "s", sizes={2: (8, 12)})
    for resolution in (None, 8):
        with pytest.raises(MetatuneError, match="r_002.png: image is 12x8 but r_000.png, the first of the train "
                                                "split, is 8x8"):
            load_scene(root, resolution=resolution)
    root = write_scene(tmp_path / "wide", sizes={0: (8, 12), 1: (8, 12), 2: (8, 12)})
    assert load_scene(root).frames[0].image.shape == (8, 12, 3)  # one size, not square: fine unresized
    small = load_scene(root, resolution=8).frames[0]  # the longer side to 8, the aspect ratio kept: 8x5
    assert small.image.shape == (5, 8, 3)
    full = load_scene(root).frames[0].camera
    for a, b in ((small.camera.width / small.camera.fx, full.width / full.fx),
                 (small.camera.height / small.camera.fy, full.height / full.fy)):
        assert a == pytest.approx(b, rel=1e-12)  # the same fields of view: nothing squashed


def test_float_images_are_read_by_their_range(tmp_path):
    root = write_scene(tmp_path / "s", {1: {"file_path": "./train/r_001.tiff"}})
    value = np.full((8, 8, 3), 0.25, np.float32)
    assert cv2.imwrite(str(root / "train" / "r_001.tiff"), value)
    assert cv2.imread(str(root / "train" / "r_001.tiff"), cv2.IMREAD_UNCHANGED).dtype == np.float32
    torch.testing.assert_close(load_scene(root).frames[1].image, torch.full((8, 8, 3), 0.25))  # not 0.25 / 255
    assert cv2.imwrite(str(root / "train" / "r_001.tiff"), value * 12)
    with pytest.raises(MetatuneError, match=r"float image has values in \[3, 3\]; float images must lie in \[0, 1\]"):
        load_scene(root)
    value[0, 0, 0] = np.nan
    assert cv2.imwrite(str(root / "train" / "r_001.tiff"), value)
    with pytest.raises(MetatuneError, match="NaN or infinite"):
        load_scene(root)


def test_saved_images_are_in_the_format_their_name_says(tmp_path):
    img = torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(0))
    save_image(tmp_path / "x.png", img)
    save_image(tmp_path / "x.jpg", img)
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "x.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG bytes under .jpg
    for name in ("x.gif", "x", "x.exr"):
        with pytest.raises(MetatuneError, match="must end in one of"):
            save_image(tmp_path / name, img)
        assert not (tmp_path / name).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jpg", "x.png"]


def test_output_paths_from_file_paths_stay_in_their_folder(tmp_path):
    out = tmp_path / "out"
    assert output_image_path(out, "./test/r_000") == (out / "test" / "r_000.png").resolve()
    for fp, problem in (("../escape", "leaves its folder"), ("test/../../escape.png", "leaves its folder"),
                        (str(tmp_path / "abs"), "is absolute"), ("", "names no file"), (".", "names no file")):
        with pytest.raises(MetatuneError, match=problem):
            output_image_path(out, fp)
    assert not out.exists()


@pytest.fixture(scope="module")
def run_and_scene(tmp_path_factory):
    """A tiny trained meta run, and its scene with test file paths that read inside the scene but would write
    outside the output folder: `link/../../test/r_000`, where link -> a/b inside the scene."""
    from relight import training
    from relight.generate_mujoco import MujocoSceneConfig, generate_mujoco_scene
    from relight.scene_layout import LayoutConfig
    lay = LayoutConfig(resolution=16, n_cameras=4, train_lights=2, test_lights=1, views_per_light=2)
    scene = generate_mujoco_scene(tmp_path_factory.mktemp("scene"), MujocoSceneConfig("glossy", lay, n_points=150))
    run = tmp_path_factory.mktemp("run")
    training.train(scene, run, training.TrainConfig(resolution=16, fit_steps=2, meta_steps=1, max_points=150,
                                                     meta_batch=1), progress=False)
    tricky = tmp_path_factory.mktemp("tricky") / "scene"
    shutil.copytree(scene, tricky)
    (tricky / "a" / "b").mkdir(parents=True)
    (tricky / "link").symlink_to(tricky / "a" / "b")
    tf = tricky / "transforms_test.json"
    meta = json.loads(tf.read_text())
    for fr in meta["frames"]:
        fr["file_path"] = "link/../../" + fr["file_path"].lstrip("./")
    tf.write_text(json.dumps(meta))
    return run, tricky


def test_evaluate_and_adapt_write_nothing_outside_their_folder(run_and_scene, tmp_path, capsys):
    from relight.evaluation import evaluate
    run, scene = run_and_scene
    assert len(load_scene(scene, "test").frames) == 2  # reading stays inside the scene
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(MetatuneError, match="leaves its folder"):  # what `relight evaluate` saves images with
        evaluate(run, scene, work / "metrics.json", work / "img")
    assert main(["relight", "adapt", "--checkpoint", str(run), "--scene", str(scene), "--views", "1",
                 "--out", str(work / "ad")]) == 2
    assert "leaves its folder" in capsys.readouterr().err
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # not work/test/r_000.png, nor anything else
