"""Image (+ optional keypoints) -> per-person meshes (.obj), an overlay (.png), the keypoints used and result.json,
written atomically. Without --keypoints the built-in detector (hmr.detector) finds the people."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from pytorch3d.io import save_obj

from hmr.body_model import BodyModel
from hmr.camera import default_focal
from hmr.fit_quality import fit_quality
from hmr.keypoints import Keypoints, body25_json, from_layout, read_keypoints, select_people
from hmr.objective import global_rotation, posed_joints, unpack
from hmr.overlay import overlay
from hmr.people_fit import PeopleFit, fit_people
from hmr.smplify import SmplifyConfig
from hmr.synthetic import fit_problem
from metatune.atomic import staged_folder, write_json
from metatune.errors import MetatuneError

# Camera frames a mesh can be written in: OpenCV's (x right, y down, z forward) or a viewer's y-up one.
FRAMES = {"camera": (1.0, 1.0, 1.0), "y-up": (1.0, -1.0, -1.0)}


def read_image(path: str | Path) -> np.ndarray:  # [H, W, 3] uint8 RGB
    path = Path(path)
    if not path.is_file():
        raise MetatuneError(f"image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise MetatuneError(f"cannot read image {path} (not an image file OpenCV can decode)")
    return img[..., ::-1].copy()


def _person_json(fit: PeopleFit, i: int, joints: torch.Tensor, index: int, quality: dict) -> dict:
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
        "quality": quality,
    }


def warn(message: str) -> None:
    print(f"metatune: warning: {message}", file=sys.stderr)


def image_focal(image: str | Path, width: int, height: int, focal: float | None = None,
                fov: float | None = None) -> tuple[float, str]:
    """The focal length in pixels and where it came from: --focal, --fov, the photo's EXIF, else the default."""
    from hmr.camera import focal_from_fov
    from hmr.exif_focal import exif_focal_px

    if focal is not None:
        return focal, "--focal"
    if fov is not None:
        return focal_from_fov(fov, width, height), "--fov"
    exif = exif_focal_px(image)
    if exif is not None:
        return exif, "exif"
    return float(default_focal(width, height)), "default (1.2 x the longer side)"


def find_keypoints(img: np.ndarray,  # [H, W, 3] uint8 RGB
                   keypoints: str | Path | None, boxes: list[tuple[float, float, float, float]] | None = None,
                   max_people: int = 4) -> Keypoints:
    """The keypoints of a file, else those the built-in detector finds."""
    if keypoints is not None:
        return read_keypoints(keypoints)
    from hmr.detector import detect_people

    det = detect_people(img, max_people=max_people, boxes=boxes)
    if len(det) == 0:
        where = f"in the {len(boxes)} boxes given" if boxes else "in the image"
        raise MetatuneError(f"the built-in detector found no person {where}; pass --keypoints or --boxes")
    return from_layout(det.xy, det.conf, "mediapipe33")


def infer(image: str | Path, keypoints: str | Path | None, out_dir: str | Path, model: str | Path | None = None,
          checkpoint: str | Path | None = None, baseline: bool = False,
          smplify_cfg: SmplifyConfig | None = None, steps: int | None = None, focal: float | None = None,
          fov: float | None = None, frame: str = "camera", boxes: list[tuple[float, float, float, float]] | None = None,
          max_people: int = 4) -> dict:
    """Fit every person with enough confident keypoints; write person_<i>.obj, overlay.png, keypoints.json
    (BODY_25, what was fitted) and result.json. steps: adaptation steps of the meta-learned fit (default: the
    checkpoint's)."""
    t0 = time.perf_counter()
    img = read_image(image)
    h, w = img.shape[:2]
    kp, kept, notes = select_people(find_keypoints(img, keypoints, boxes, max_people), w, h)
    t_detect = time.perf_counter() - t0
    for note in notes:
        warn(note)
    f, focal_source = image_focal(image, w, h, focal, fov)
    body = BodyModel.load(model)
    n = len(kept)
    prob = fit_problem(body, kp.xy, kp.conf, kp.joint_map, torch.full((n,), float(w)), torch.full((n,), float(h)),
                       focal=torch.full((n,), f))
    fit = fit_people(body, prob, checkpoint, baseline, smplify_cfg, steps)
    orient, pose, betas, transl = unpack(fit.params)
    with torch.no_grad():
        verts, _ = body(betas, global_rotation(orient), pose)
        verts = verts + transl[:, None]
        joints = posed_joints(body, fit.params)
    quality = fit_quality(body, fit.params, prob, verts, fit.loss)
    axes = torch.tensor(FRAMES[frame])
    faces = torch.as_tensor(body.faces)
    result = {"image": str(image), "keypoints": str(keypoints) if keypoints else "detected (BlazePose)",
              "keypoint_format": kp.fmt, "method": fit.method, "frame": frame,
              "model": str(model) if model else "generated", "model_type": body.kind,
              "body_pose_layout": "SMPL: 23 joints x axis-angle" if body.kind == "smpl"
              else "first 63 values: the model's 21 body joints; the last 6 (SMPL's hands) unused",
              "camera": {"focal": f, "focal_source": focal_source, "centre": prob.centre[0].tolist(), "width": w,
                         "height": h},
              "people": [_person_json(fit, i, joints * axes, kept[i], quality[i]) for i in range(n)]}

    with staged_folder(Path(out_dir), stale=("person_*.obj",)) as tmp:  # no person of an earlier run is left
        t0 = time.perf_counter()
        ov = overlay(img, verts, faces, f, tuple(prob.centre[0].tolist()))
        t_overlay = time.perf_counter() - t0
        if not cv2.imwrite(str(tmp / "overlay.png"), ov[..., ::-1]):
            raise MetatuneError(f"could not write {Path(out_dir) / 'overlay.png'}")
        for i in range(n):
            save_obj(str(tmp / f"person_{i}.obj"), verts[i] * axes, faces)
        write_json(tmp / "keypoints.json", body25_json(kp.xy, kp.conf))
        result["seconds"] = {"keypoints": t_detect, **fit.seconds, "overlay": t_overlay}
        write_json(tmp / "result.json", result, indent=1)
    return result
