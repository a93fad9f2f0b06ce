"""The generated SMPL-format body model, the chumpy-free loader and the joints fast path, against smplx."""
import pickle
import sys
import types

import numpy as np
import pytest
import smplx
import torch

from hmr.body_model import BodyModel, generated_model_path, load_smplx, read_model_file, write_model_file
from hmr.body_template import JOINTS, NUM_VERTS, PARENTS, generate_body_model
from hmr.objective import global_rotation
from hmr.smplx_layout import smplx_arrays, smplx_parents, vertex_order
from metatune import MetatuneError


@pytest.fixture(scope="module")
def arrays():
    return read_model_file(generated_model_path())


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


def test_generated_model_has_the_smpl_layout(arrays):
    assert arrays["v_template"].shape == (NUM_VERTS, 3)
    assert arrays["shapedirs"].shape == (NUM_VERTS, 3, 10)
    assert arrays["posedirs"].shape == (NUM_VERTS, 3, 207)
    assert arrays["J_regressor"].shape == (24, NUM_VERTS)
    assert arrays["weights"].shape == (NUM_VERTS, 24)
    np.testing.assert_allclose(arrays["weights"].sum(1), 1.0, atol=1e-12)
    assert arrays["f"].max() == NUM_VERTS - 1 and len(np.unique(arrays["f"])) == NUM_VERTS
    # the regressor puts each joint where the template was designed to have it
    np.testing.assert_allclose(arrays["J_regressor"] @ arrays["v_template"], JOINTS, atol=1e-9)
    # SMPL's kinematic tree (parents from smplx's own reading of kintree_table)
    model = load_smplx()
    assert model.parents.tolist() == PARENTS.tolist()


def test_generation_is_deterministic(arrays):
    again = generate_body_model()
    for k in ("v_template", "f", "J_regressor", "shapedirs"):
        np.testing.assert_array_equal(np.asarray(again[k]), np.asarray(arrays[k]))


def test_smplx_reads_the_file_itself_and_agrees_with_our_loader(body):
    ref = smplx.SMPL(model_path=str(generated_model_path()))   # smplx's own pickle path
    g = torch.Generator().manual_seed(0)
    betas, orient, pose = torch.randn(3, 10, generator=g), 0.3 * torch.randn(3, 3, generator=g), \
        0.3 * torch.randn(3, 69, generator=g)
    out = ref(betas=betas, global_orient=orient, body_pose=pose)
    from smplx.lbs import batch_rodrigues
    verts, joints = body(betas, batch_rodrigues(orient), pose)
    torch.testing.assert_close(verts, out.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(joints, out.joints, atol=1e-5, rtol=0)


def test_fast_joints_match_the_full_smplx_forward(body):
    g = torch.Generator().manual_seed(1)
    betas, orient, pose = torch.randn(4, 10, generator=g), torch.randn(4, 3, generator=g), \
        0.5 * torch.randn(4, 69, generator=g)
    rot = global_rotation(orient)
    _, full = body(betas, rot, pose)
    torch.testing.assert_close(body.joints(betas, rot, pose), full, atol=1e-5, rtol=0)


def test_landmarks_sit_where_their_names_say(body):
    j = body.joints(torch.zeros(1, 10), torch.eye(3)[None], torch.zeros(1, 69))[0]
    nose, reye, leye, rear, lear = j[24:29]
    head = torch.tensor(JOINTS[15], dtype=j.dtype)
    assert nose[2] > head[2] + 0.05 and abs(nose[0]) < 0.01              # front of the face
    assert leye[0] > 0 > reye[0] and lear[0] > 0.05 and rear[0] < -0.05   # SMPL's +x is the body's left
    lbig, lsmall, lheel, rbig, rsmall, rheel = j[29:35]
    assert lbig[0] > 0 and rbig[0] < 0 and lheel[2] < lbig[2] and rheel[2] < rbig[2]
    assert max(float(lbig[1]), float(lheel[1])) < -0.85                   # at the floor
    assert (j[35:40, 0] > 0.7).all() and (j[40:45, 0] < -0.7).all()       # fingertips beyond the hands


def test_chumpy_pickle_loads_without_chumpy(tmp_path, arrays):
    with pytest.raises(ImportError):
        import chumpy  # noqa: F401   the point: it is not installed
    # Write a pickle whose arrays are instances of chumpy.ch.Ch (as official SMPL files are).
    fake = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x

        def __getstate__(self):
            return {"x": self.x, "_dirty_vars": set()}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    fake.Ch = Ch
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = types.ModuleType("chumpy"), fake
    try:
        data = dict(arrays)
        data["shapedirs"] = Ch(arrays["shapedirs"])
        data["v_template"] = Ch(arrays["v_template"])
        path = tmp_path / "SMPL_NEUTRAL.pkl"
        with open(path, "wb") as fh:
            pickle.dump(data, fh, protocol=2)
    finally:
        del sys.modules["chumpy.ch"], sys.modules["chumpy"]
    back = read_model_file(path)
    np.testing.assert_array_equal(back["shapedirs"], arrays["shapedirs"])
    np.testing.assert_array_equal(back["v_template"], arrays["v_template"])
    BodyModel.load(path)


def test_npz_and_bad_files(tmp_path, arrays):
    npz = tmp_path / "model.npz"
    np.savez(npz, **arrays)
    assert BodyModel.load(npz).smpl.v_template.shape == (NUM_VERTS, 3)
    with pytest.raises(MetatuneError, match="not found"):
        read_model_file(tmp_path / "missing.pkl")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(MetatuneError, match="cannot read body model"):
        read_model_file(bad)
    with pytest.raises(MetatuneError, match=r"\.pkl or \.npz"):
        (tmp_path / "model.txt").write_text("x")
        read_model_file(tmp_path / "model.txt")
    partial = write_model_file(tmp_path / "partial.pkl", {"v_template": arrays["v_template"]})
    with pytest.raises(MetatuneError, match="lacks"):
        read_model_file(partial)


def test_smplh_layout_file_loads_as_smplh_and_fits_like_smpl(tmp_path, arrays, body):
    """An SMPL-H-format file (52 joints, hand PCA) built from the generated arrays: smplx.SMPLH runs it."""
    data = dict(arrays)
    v = arrays["v_template"].shape[0]
    parents = list(PARENTS[:22]) + [20 if i % 3 == 0 else 22 + i - 1 for i in range(15)] \
        + [21 if i % 3 == 0 else 37 + i - 1 for i in range(15)]
    data["kintree_table"] = np.stack([np.where(np.array(parents) < 0, 2**32 - 1, parents), np.arange(52)])
    weights = np.zeros((v, 52))
    weights[:, :22] = arrays["weights"][:, :22]
    weights[:, 25] = arrays["weights"][:, 22]      # SMPL's hand joints become the middle fingers' roots
    weights[:, 40] = arrays["weights"][:, 23]
    data["weights"] = weights
    data["J_regressor"] = np.concatenate([arrays["J_regressor"][:22], np.repeat(arrays["J_regressor"][22:23], 15, 0),
                                          np.repeat(arrays["J_regressor"][23:24], 15, 0)])
    data["posedirs"] = np.zeros((v, 3, 51 * 9))
    data["posedirs"][..., :21 * 9] = arrays["posedirs"][..., :21 * 9]
    for side in "lr":
        data[f"hands_components{side}"] = np.eye(45)
        data[f"hands_mean{side}"] = np.zeros(45)
    path = tmp_path / "SMPLH_NEUTRAL.npz"
    np.savez(path, **data)
    model = load_smplx(path)
    assert isinstance(model, smplx.SMPLH)
    out = model(betas=torch.zeros(1, 10), global_orient=torch.zeros(1, 3), body_pose=torch.zeros(1, 63),
                left_hand_pose=torch.zeros(1, 45), right_hand_pose=torch.zeros(1, 45))
    torch.testing.assert_close(out.vertices[0], torch.tensor(arrays["v_template"], dtype=torch.float32),
                               atol=1e-5, rtol=0)
    _poses_like_smpl(BodyModel(model), body)


def _poses_like_smpl(other: BodyModel, body: BodyModel) -> None:
    """With SMPL's hand joints at rest, a model rebuilt from the same arrays gives the same 45 joints."""
    g = torch.Generator().manual_seed(3)
    betas, rot, pose = torch.randn(3, 10, generator=g), global_rotation(torch.randn(3, 3, generator=g)), \
        0.4 * torch.randn(3, 69, generator=g)
    pose[:, 63:] = 0
    want = body.joints(betas, rot, pose)
    torch.testing.assert_close(other.joints(betas, rot, pose), want, atol=1e-5, rtol=0)
    verts, joints = other(betas, rot, pose)
    torch.testing.assert_close(joints, want, atol=1e-5, rtol=0)
    return verts


def test_smplx_layout_file_loads_in_smplx_and_fits_like_smpl(tmp_path, arrays, body):
    """An SMPL-X-format .npz and .pkl from the generated arrays: smplx.SMPLX itself runs it, and the fit's
    body model on it poses exactly like the SMPL body it was built from."""
    data = smplx_arrays(arrays)
    assert data["v_template"].shape == (10475, 3) and data["J_regressor"].shape == (55, 10475)
    for path in (tmp_path / "SMPLX_NEUTRAL.npz", tmp_path / "SMPLX_NEUTRAL.pkl"):
        np.savez(path, **data) if path.suffix == ".npz" else write_model_file(path, data)
        model = load_smplx(path)
        assert isinstance(model, smplx.SMPLX) and model.parents.tolist() == smplx_parents().tolist()
    g = torch.Generator().manual_seed(4)
    betas, orient, pose = torch.randn(2, 10, generator=g), 0.3 * torch.randn(2, 3, generator=g), \
        0.4 * torch.randn(2, 63, generator=g)
    z = lambda n: torch.zeros(2, n)  # noqa: E731
    out = model(betas=betas, global_orient=orient, body_pose=pose, left_hand_pose=z(45), right_hand_pose=z(45),
                jaw_pose=z(3), leye_pose=z(3), reye_pose=z(3), expression=z(10))
    ref = smplx.SMPL(model_path=str(generated_model_path()))(betas=betas, global_orient=orient,
                                                                 body_pose=torch.cat([pose, z(6)], 1))
    order = torch.as_tensor(vertex_order(arrays["v_template"].shape[0]))
    torch.testing.assert_close(out.vertices, ref.vertices[:, order], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints[:, :22], ref.joints[:, :22], atol=1e-5, rtol=0)
    fit_body = BodyModel(model)
    verts = _poses_like_smpl(fit_body, body)
    assert verts.shape == (3, 10475, 3)
    # and smplx's own SMPL-X forward agrees with the fit's full forward on the same pose
    from smplx.lbs import batch_rodrigues
    v2, _ = fit_body(betas, batch_rodrigues(orient), torch.cat([pose, z(6)], 1))
    torch.testing.assert_close(v2, out.vertices, atol=1e-5, rtol=0)
