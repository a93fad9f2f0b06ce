"""`metatune demo --only hmr`: render a generated person, fit it from its keypoints, score against the truth."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from hmr.body_model import BodyModel
from hmr.infer import infer
from hmr.keypoints import body25_json
from hmr.meta_fit import MetaFitConfig, MetaFitter
from hmr.metrics import mpjpe, pa_mpjpe, pve
from hmr.objective import global_rotation, unpack
from hmr.overlay import overlay
from hmr.synthetic import SyntheticConfig, make_people, make_split
from hmr.training_plot import plot_training
from metatune.atomic import write_json, write_with


def gradient_background(width: int, height: int) -> np.ndarray:  # [H, W, 3] uint8: sky-to-floor gradient
    t = np.linspace(0, 1, height)[:, None, None]
    top, bottom = np.array([200, 215, 230]), np.array([120, 110, 100])
    return np.broadcast_to((1 - t) * top + t * bottom, (height, width, 3)).astype(np.uint8)


def person_image(body: BodyModel, params: torch.Tensor,  # [1, 85]
                 width: int, height: int, focal: float) -> np.ndarray:
    """A rendered image of the body (opaque) over a gradient background."""
    o, p, b, t = unpack(params)
    with torch.no_grad():
        verts, _ = body(b, global_rotation(o), p)
    return overlay(gradient_background(width, height), verts + t[:, None], torch.as_tensor(body.faces), focal,
                   (width / 2, height / 2), opacity=1.0,
                   colours=np.array([[0.62, 0.70, 0.82]]))


def _untranslated(body: BodyModel, params: torch.Tensor):
    o, p, b, _ = unpack(params)
    with torch.no_grad():
        return body(b, global_rotation(o), p)


def run_demo(out_dir: Path, pretrain_steps: int = 1000, meta_steps: int = 15, device: str = "cpu") -> dict:
    """Writes person.png, keypoints.json, meta.pt, training.png, overlay.png, person_0.obj, result.json,
    metrics.json (and the baseline's fit under smplify/). Meta-training runs on `device`; the image, the fit
    of it (hmr infer) and the scores on the CPU."""
    with torch.random.fork_rng(devices=[]):  # the demo's own seed; the caller's global RNG is left as it was
        torch.manual_seed(0)
        return _run_demo(out_dir, pretrain_steps, meta_steps, torch.device(device))


def _run_demo(out_dir: Path, pretrain_steps: int, meta_steps: int, device: torch.device) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    body = BodyModel.load()
    data = SyntheticConfig(missing=0.1, outliers=0.0, min_width=480, max_width=640)
    person = make_people(body, 1, seed=20261122, cfg=data)
    w, h, f = int(person.width[0]), int(person.height[0]), float(person.focal[0])
    img = person_image(body, person.params, w, h, f)
    write_with(out_dir / "person.png", lambda tmp: cv2.imwrite(str(tmp), img[..., ::-1]))
    write_json(out_dir / "keypoints.json", body25_json(person.kp_xy, person.kp_conf), indent=None)

    fit_body = body if device.type == "cpu" else BodyModel.load().to(device)  # Module.to moves in place
    fitter = MetaFitter(fit_body, MetaFitConfig(pretrain_steps=pretrain_steps, meta_steps=meta_steps))
    pre = fitter.pretrain()
    hist = fitter.train()
    fitter.calibrate(make_split(fit_body, "train", 64))
    fitter.save(out_dir / "meta.pt")
    plot_training(pre, hist, out_dir / "training.png")

    metrics = {}
    for name, ckpt in (("meta_fit", out_dir / "meta.pt"), ("smplify", None)):
        sub = out_dir if name == "meta_fit" else out_dir / "smplify"
        res = infer(out_dir / "person.png", out_dir / "keypoints.json", sub, checkpoint=ckpt, baseline=ckpt is None)
        fitted = _params_from_result(res["people"][0])
        pv, pj = _untranslated(body, fitted)
        gv, gj = _untranslated(body, person.params)
        metrics[name] = {"mpjpe_mm": float(mpjpe(pj[:, :24], gj[:, :24])),
                         "pa_mpjpe_mm": float(pa_mpjpe(pj[:, :24], gj[:, :24])),
                         "pve_mm": float(pve(pv, gv, pj[:, 0], gj[:, 0])),
                         "mean_joint_std_mm": float(np.mean(res["people"][0]["joint_std_mm"][1:])),
                         "fit_loss": res["people"][0]["fit_loss"]}
    write_json(out_dir / "metrics.json", metrics)
    return {"meta_pa_mpjpe_mm": round(metrics["meta_fit"]["pa_mpjpe_mm"], 1),
            "smplify_pa_mpjpe_mm": round(metrics["smplify"]["pa_mpjpe_mm"], 1),
            "meta_mpjpe_mm": round(metrics["meta_fit"]["mpjpe_mm"], 1),
            "meta_pve_mm": round(metrics["meta_fit"]["pve_mm"], 1),
            "meta_mean_joint_std_mm": round(metrics["meta_fit"]["mean_joint_std_mm"], 1)}


def _params_from_result(person: dict) -> torch.Tensor:  # [1, 85]
    """result.json holds SMPL's global orientation; turn it back into the fit's parameter layout."""
    from pytorch3d.transforms import axis_angle_to_matrix, matrix_to_axis_angle

    rot = axis_angle_to_matrix(torch.tensor(person["global_orient"])[None])
    facing = global_rotation(torch.zeros(1, 3))
    orient = matrix_to_axis_angle(facing.transpose(1, 2) @ rot)
    rest = torch.tensor(person["body_pose"] + person["betas"] + person["transl"])[None]
    return torch.cat([orient, rest], 1)
