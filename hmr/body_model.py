"""Body models through smplx: SMPL / SMPL-H / SMPL-X files (.pkl without chumpy, or .npz) and a joints fast path."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import smplx
import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues, lbs
from smplx.utils import Struct
from torch import Tensor, nn

from metatune.atomic import write_text, write_with
from metatune.errors import MetatuneError
from metatune.unpickle import ChumpyStandIn, load_npz, safe_load

SMPL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
GENERATED_NAME = "SMPL_NEUTRAL_metatune_v1.pkl"


def _plain(key: str, value):
    """A chumpy stand-in as the numpy array it holds; anything else unchanged."""
    if isinstance(value, ChumpyStandIn):
        if "x" not in value.state:
            raise MetatuneError(f"model field {key!r} is a chumpy expression without a stored array")
        return np.asarray(value.state["x"])
    return value


def read_model_file(path: str | Path) -> dict:
    """The arrays of an SMPL-family model file (.pkl, chumpy or not, or .npz), read without running code:
    pickles through the allowlist of `metatune.unpickle`, .npz with allow_pickle=False."""
    path = Path(path)
    if not path.is_file():
        raise MetatuneError(f"body model file not found: {path}")
    what = f"body model {path}"
    if path.suffix == ".npz":
        # SMPL-X npz files keep two dicts, joint2num and part2num, as pickled object arrays; load_npz reads
        # them through the same allowlist (smplx uses neither)
        data = load_npz(path, what)
    elif path.suffix == ".pkl":
        data = safe_load(path, what)
    else:
        raise MetatuneError(f"body model must be a .pkl or .npz file, got {path.name}")
    if not isinstance(data, dict):
        raise MetatuneError(f"body model {path} does not hold a dict of arrays")
    data = {k: _plain(k, v) for k, v in data.items()}
    missing = [k for k in SMPL_KEYS if k not in data]
    if missing:
        raise MetatuneError(f"body model {path} lacks {missing}")
    check_shapes(data, str(path))
    return data


def check_shapes(data: dict, what: str) -> None:
    """The SMPL-family arrays agree with each other: V vertices, J joints, F faces (one clear error otherwise)."""
    def shape(key: str) -> tuple[int, ...]:
        value = data[key]
        if not hasattr(value, "shape"):
            raise MetatuneError(f"body model {what}: field {key!r} is a {type(value).__name__}, not an array")
        return tuple(value.shape)

    v = shape("v_template")[0] if len(shape("v_template")) == 2 else -1
    j = shape("kintree_table")[1] if len(shape("kintree_table")) == 2 else -1
    want = {"v_template": (v, 3), "shapedirs": (v, 3, None), "posedirs": (v, 3, 9 * (j - 1)),
            "J_regressor": (j, v), "weights": (v, j), "kintree_table": (2, j), "f": (None, 3)}
    for key, dims in want.items():
        got = shape(key)
        if v <= 0 or j <= 1 or len(got) != len(dims) or any(d is not None and g != d for g, d in zip(got, dims)):
            expect = "x".join("*" if d is None else str(d) for d in dims)
            raise MetatuneError(f"body model {what}: field {key!r} has shape {got}, expected {expect} (V={v} "
                                f"vertices from v_template, J={j} joints from kintree_table)")
    faces = np.asarray(data["f"])
    if faces.size and (faces.min() < 0 or faces.max() >= v):
        raise MetatuneError(f"body model {what}: faces index vertices outside 0..{v - 1}")


def write_model_file(path: str | Path, data: dict) -> Path:
    """Write arrays as an SMPL-format .pkl (plain numpy, latin1-readable), atomically."""
    return write_with(path, lambda tmp: tmp.write_bytes(pickle.dumps(data, protocol=2)))


def cache_dir() -> Path:
    """The per-user cache folder ($XDG_CACHE_HOME/metatune, else ~/.cache/metatune), created with mode 0700
    and refused if another user owns it or others may write in it (they could plant a model there)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "metatune"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError as err:
        raise MetatuneError(f"cannot create the cache folder {path}: {err.strerror or err}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MetatuneError(f"cache folder {path} is not a folder")
    if st.st_uid != os.getuid():
        raise MetatuneError(f"refusing the cache folder {path}: it belongs to user id {st.st_uid}, not to you "
                            f"({os.getuid()}); remove it or set XDG_CACHE_HOME")
    if st.st_mode & 0o022:
        raise MetatuneError(f"refusing the cache folder {path}: mode {stat.S_IMODE(st.st_mode):o} lets others "
                            "write in it; chmod 700 it")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(path: Path, sidecar: Path) -> bool:
    """The cached file exists and its content hash is the one written beside it."""
    try:
        return path.is_file() and sidecar.read_text().strip() == _sha256(path)
    except OSError:
        return False


def generated_model_path() -> Path:
    """The generated body model's file, built on first use and cached per user; used only if its sha256
    matches the sidecar written after it, else generated again."""
    path = cache_dir() / GENERATED_NAME
    sidecar = path.with_name(path.name + ".sha256")
    if not _verified(path, sidecar):
        from hmr.body_template import generate_body_model
        write_model_file(path, generate_body_model())
        write_text(sidecar, _sha256(path) + "\n")  # after the file: a sidecar vouches only for a complete file
    return path


def model_kind(data: dict) -> str:
    """smplx (face landmarks; SMPL-X files also hold hand PCA), smplh (hand PCA) or smpl."""
    if "lmk_faces_idx" in data or np.asarray(data["v_template"]).shape[0] == 10475:
        return "smplx"
    if "hands_componentsl" in data:
        return "smplh"
    return "smpl"


def load_smplx(path: str | Path | None = None, num_betas: int = 10) -> nn.Module:
    """An smplx body model (SMPL, SMPL-H or SMPL-X by the file's contents); None: the generated model."""
    path = generated_model_path() if path is None else Path(path)
    data = read_model_file(path)
    kind = model_kind(data)
    struct = Struct(**data)
    cls = {"smpl": smplx.SMPL, "smplh": smplx.SMPLH, "smplx": smplx.SMPLX}[kind]
    kwargs: dict[str, Any] = {"use_pca": False, "flat_hand_mean": True} if kind != "smpl" else {}
    try:
        with contextlib.redirect_stdout(io.StringIO()), tempfile.TemporaryDirectory() as tmp:
            # smplx prints a warning for 10-beta models. SMPLX reads its file itself (no data_struct), so it
            # gets the arrays already freed of chumpy, in a plain .npz.
            if kind == "smplx":
                plain = Path(tmp) / "SMPLX_NEUTRAL.npz"
                # object fields (SMPL-X's joint2num, part2num) are left out: smplx reads this file with
                # allow_pickle=True and uses neither
                arrays: dict[str, Any] = {k: np.asarray(v.todense()) if hasattr(v, "todense") else v
                                          for k, v in data.items()
                                          if not (isinstance(v, np.ndarray) and v.dtype.hasobject)}
                np.savez(plain, **arrays)
                kwargs.update(model_path=str(plain), ext="npz")
            else:
                kwargs.update(model_path=str(path), data_struct=struct)
            return cls(num_betas=num_betas, create_betas=False, create_global_orient=False,
                       create_body_pose=False, create_transl=False, **kwargs)
    except Exception as err:  # noqa: BLE001 - smplx fails on a bad file with any exception: name the file
        raise MetatuneError(f"body model {path} is not a valid {kind.upper()} file: {err}") from None


# SMPL's two hand joints (22, 23) stand for the root of the middle finger in models with finger joints.
_MIDDLE_FINGER_ROOTS = {"smplh": (25, 40), "smplx": (28, 43)}


def _kind(model: nn.Module) -> str:
    return "smplx" if isinstance(model, smplx.SMPLX) else "smplh" if isinstance(model, smplx.SMPLH) else "smpl"


def _blend(betas: Tensor,  # [B, S]
           dirs: Tensor,  # [N, 3, S]
           ) -> Tensor:  # [B, N, 3]
    """smplx's blend_shapes as one matmul (see the note in BodyModel.joints)."""
    return (betas @ dirs.flatten(0, 1).T).view(betas.shape[0], -1, 3)


class BodyModel(nn.Module):
    """SMPL-layout body on any SMPL-family model: the 45 smplx SMPL joints (24 body joints, then 21 landmark
    vertices), fast (skinning only the joints and landmarks) or with all vertices.

    The fit always has 23 body-pose joints (69 values). SMPL-H and SMPL-X have 21 body joints plus fingers
    (hands flat), jaw and eyes: the first 63 values pose them, SMPL's two hand joints (the last 6) are not
    used, and the root of each middle finger takes the hand joint's place among the 24.
    """

    # buffers registered in __init__ (declared so that type checkers see Tensors, not Tensor | Module)
    smpl_joints: Tensor
    j_template: Tensor
    j_shapedirs: Tensor
    l_template: Tensor
    l_shapedirs: Tensor
    l_posedirs: Tensor
    l_weights: Tensor
    lmk: Tensor

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, smplx.SMPL):
            raise MetatuneError(f"fitting needs an smplx SMPL/SMPL-H/SMPL-X model, got {type(model).__name__}")
        self.smpl, self.kind = model, _kind(model)
        self.body_joints = 23 if self.kind == "smpl" else 21
        hands = list(_MIDDLE_FINGER_ROOTS.get(self.kind, (22, 23)))
        self.register_buffer("smpl_joints", torch.tensor(list(range(22)) + hands))              # [24]
        lmk = model.vertex_joint_selector.extra_joints_idxs
        jreg = model.J_regressor
        self.register_buffer("j_template", jreg @ model.v_template)                          # [J, 3]
        self.register_buffer("j_shapedirs", torch.einsum("jv,vcb->jcb", jreg, model.shapedirs))  # [J, 3, B]
        self.register_buffer("l_template", model.v_template[lmk])                            # [L, 3]
        self.register_buffer("l_shapedirs", model.shapedirs[lmk])                            # [L, 3, B]
        posedirs = model.posedirs.view(model.posedirs.shape[0], -1, 3)                       # [9(J-1), V, 3]
        self.register_buffer("l_posedirs", posedirs[:, lmk].reshape(posedirs.shape[0], -1))  # [9(J-1), L*3]
        self.register_buffer("l_weights", model.lbs_weights[lmk])                            # [L, J]
        self.register_buffer("lmk", lmk.clone())
        self.num_betas = model.num_betas

    @classmethod
    def load(cls, path: str | Path | None = None) -> BodyModel:
        return cls(load_smplx(path))

    @property
    def faces(self) -> np.ndarray:  # [F, 3]
        return np.asarray(self.smpl.faces, dtype=np.int64)

    def rotations(self, global_rot: Tensor,  # [B, 3, 3]
                  body_pose: Tensor,  # [B, 69] axis-angle, SMPL layout
                  ) -> Tensor:  # [B, J, 3, 3] every joint of the model (fingers, jaw, eyes at rest)
        b, n = body_pose.shape[0], self.body_joints
        rot = batch_rodrigues(body_pose[:, :3 * n].reshape(-1, 3)).view(b, n, 3, 3)
        rest = self.j_template.shape[0] - 1 - n
        eye = torch.eye(3, dtype=body_pose.dtype, device=body_pose.device).expand(b, rest, 3, 3)
        return torch.cat([global_rot[:, None], rot, eye], 1)

    def joints(self, betas: Tensor,  # [B, 10]
               global_rot: Tensor,  # [B, 3, 3] rotation matrix of the root
               body_pose: Tensor,  # [B, 69] axis-angle
               ) -> Tensor:  # [B, 45, 3], same as `forward`'s joints
        """The 45 smplx SMPL joints (24 body joints, then face, feet and fingertip landmarks)."""
        b = betas.shape[0]
        rot = self.rotations(global_rot, body_pose)
        j_rest = self.j_template + _blend(betas, self.j_shapedirs)
        j_posed, a = batch_rigid_transform(rot, j_rest, self.smpl.parents)
        eye = torch.eye(3, dtype=betas.dtype, device=betas.device)
        pose_feature = (rot[:, 1:] - eye).reshape(b, -1)
        l_rest = self.l_template + _blend(betas, self.l_shapedirs)
        l_rest = l_rest + (pose_feature @ self.l_posedirs).view(b, -1, 3)
        # a matmul, not torch.einsum: with opt_einsum installed (jax brings it) each einsum call plans its
        # contraction first, about 20x the cost of these small products
        t = (self.l_weights @ a.flatten(2)).view(b, -1, 4, 4)
        l_posed = (t[..., :3, :3] @ l_rest.unsqueeze(-1)).squeeze(-1) + t[..., :3, 3]
        return torch.cat([j_posed[:, self.smpl_joints], l_posed], 1)

    def forward(self, betas: Tensor,  # [B, 10]
                global_rot: Tensor,  # [B, 3, 3]
                body_pose: Tensor,  # [B, 69] axis-angle
                ) -> tuple[Tensor, Tensor]:  # vertices [B, V, 3], joints [B, 45, 3]
        """All vertices by smplx's linear blend skinning, without translation."""
        m = self.smpl
        verts, j = lbs(betas, self.rotations(global_rot, body_pose), m.v_template, m.shapedirs, m.posedirs,
                       m.J_regressor, m.parents, m.lbs_weights, pose2rot=False)
        return verts, torch.cat([j[:, self.smpl_joints], verts[:, self.lmk]], 1)
