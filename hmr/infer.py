"""Image + keypoints -> per-person meshes (.obj), an overlay (.png) and result.json, written atomically."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from pytorch3d.io import save_obj

from hmr.body_model import BodyModel
from hmr.joint_uncertainty import joint_std_mm
from hmr.keypoints import Keypoints, read_keypoints, select_people
from hmr.meta_fit import MetaFitter
from hmr.objective import FitProblem, FitWeights, fit_loss, global_rotation, laplace_std, posed_joints, unpack
from hmr.overlay import overlay
from hmr.smplify import SmplifyConfig, smplify
from hmr.synthetic import fit_problem
from metatune.atomic import staged_folder, write_json
from metatune.errors import MetatuneError


@dataclass
class PeopleFit:
    params: torch.Tensor        # [P, 85]
    param_std: torch.Tensor     # [P, 85]
    joint_std_mm: torch.Tensor  # [P, 24]
    loss: torch.Tensor          # [P]
    method: str


def read_image(path: str | Path) -> np.ndarray:  # [H, W, 3] uint8 RGB
    path = Path(path)
    if not path.is_file():
        raise MetatuneError(f"image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise MetatuneError(f"cannot read image {path} (not an image file OpenCV can decode)")
    return img[..., ::-1].copy()


def fit_people(body: BodyModel, prob: FitProblem, fmt: str, checkpoint: str | Path | None = None,
               smplify_cfg: SmplifyConfig | None = None, steps: int | None = None) -> PeopleFit:
    """The meta-learned fit when a checkpoint is given (BODY_25), else SMPLify-style with a Laplace std."""
    weights = FitWeights()
    if checkpoint is not None:
        if fmt != "body25":
            raise MetatuneError("the meta-learned checkpoint takes BODY_25 keypoints; fit COCO-17 without --checkpoint")
        fitter = MetaFitter.load(body, checkpoint)
        res = fitter.fit(prob, steps)
        params, std, jstd, method = res.params, res.param_std, res.joint_std_mm, "meta"
        weights = fitter.weights
    else:
        params = smplify(body, prob, weights, smplify_cfg).detach()
        std = laplace_std(body, params, prob, weights)
        jstd, method = joint_std_mm(body, params, std), "smplify"
    with torch.no_grad():
        loss = fit_loss(body, params, prob, weights)
    return PeopleFit(params, std, jstd, loss, method)


def _person_json(body: BodyModel, fit: PeopleFit, i: int, joints: torch.Tensor, index: int) -> dict:
    from pytorch3d.transforms import matrix_to_axis_angle
    orient, pose, betas, transl = (t[i] for t in unpack(fit.params))
    std = fit.param_std[i]
    return {
        "index_in_keypoints": index,
        "global_orient": matrix_to_axis_angle(global_rotation(orient[None]))[0].tolist(),
        "body_pose": pose.tolist(), "betas": betas.tolist(), "transl": transl.tolist(),
        "joints3d": joints[i, :24].tolist(),
        "joint_std_mm": fit.joint_std_mm[i].tolist(),
        "param_std": {"orient": std[:3].tolist(), "body_pose": std[3:72].tolist(), "betas": std[72:82].tolist(),
                      "transl": std[82:].tolist()},
        "fit_loss": float(fit.loss[i]),
    }


def infer(image: str | Path, keypoints: str | Path, out_dir: str | Path, model: str | Path | None = None,
          checkpoint: str | Path | None = None, render_px: int = 160,
          smplify_cfg: SmplifyConfig | None = None, steps: int | None = None) -> dict:
    """Fit every person with enough confident keypoints; write person_<i>.obj, overlay.png, result.json.
    steps: adaptation steps of the meta-learned fit (default: the checkpoint's)."""
    img = read_image(image)
    h, w = img.shape[:2]
    kp: Keypoints = read_keypoints(keypoints)
    kp, kept = select_people(kp, w, h)
    body = BodyModel.load(model)
    prob = fit_problem(body, kp.xy, kp.conf, kp.joint_map, torch.full((len(kept),), float(w)),
                       torch.full((len(kept),), float(h)))
    fit = fit_people(body, prob, kp.fmt, checkpoint, smplify_cfg, steps)
    orient, pose, betas, transl = unpack(fit.params)
    with torch.no_grad():
        verts, _ = body(betas, global_rotation(orient), pose)
        verts = verts + transl[:, None]
        joints = posed_joints(body, fit.params)
    faces = torch.as_tensor(body.faces)
    result = {"image": str(image), "keypoints": str(keypoints), "keypoint_format": kp.fmt, "method": fit.method,
              "model": str(model) if model else "generated", "model_type": body.kind,
              "body_pose_layout": "SMPL: 23 joints x axis-angle" if body.kind == "smpl"
              else "first 63 values: the model's 21 body joints; the last 6 (SMPL's hands) unused",
              "camera": {"focal": float(prob.focal[0]), "centre": prob.centre[0].tolist(), "width": w, "height": h},
              "people": [_person_json(body, fit, i, joints, kept[i]) for i in range(len(kept))]}

    with staged_folder(Path(out_dir), stale=("person_*.obj",)) as tmp:  # no person of an earlier run is left
        for i in range(len(kept)):
            save_obj(str(tmp / f"person_{i}.obj"), verts[i], faces)
        ov = overlay(img, verts, faces, float(prob.focal[0]), tuple(prob.centre[0].tolist()), render_px=render_px)
        if not cv2.imwrite(str(tmp / "overlay.png"), ov[..., ::-1]):
            raise MetatuneError(f"could not write {Path(out_dir) / 'overlay.png'}")
        write_json(tmp / "result.json", result, indent=1)
    return result
