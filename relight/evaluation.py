"""Evaluating a trained run on the test split (unseen lights), and few-shot adaptation to one new light."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from metatune.atomic import write_text
from metatune.errors import MetatuneError
from relight.carve import foreground
from relight.light_prior import LightPrior
from relight.metrics import psnr, ssim
from relight.scene import Frame, group_by_light, load_scene, output_image_path, save_image
from relight.tasks import LightTask, TaskSampler
from relight.training import TUNER, load_checkpoint, make_tuner, render


def _write_json(path: Path, data: dict) -> None:
    # not atomic.write_json, which refuses infinities: a frame rendered exactly has PSNR inf
    write_text(path, json.dumps(data, indent=2))


def prediction_paths(folder: Path, frames: list[Frame]) -> list[Path]:
    """Where each frame's prediction goes under `folder`; all checked (inside `folder`) before any is written."""
    return [output_image_path(folder, f.file_path, f"file_path of frame {f.file_path!r}") for f in frames]


def frame_metrics(pred: torch.Tensor, frame: Frame) -> dict:
    """PSNR and SSIM of one prediction; over the frame's mask (its query pixels) where it has one. Where the
    scene marks the ground truth's cast shadows, also the PSNR inside them and over the lit object pixels
    (foreground outside the shadows)."""
    row = {"file_path": frame.file_path, "pl_pos": list(frame.light.position)}
    region = torch.ones_like(frame.image[..., 0], dtype=torch.bool) if frame.mask is None else frame.mask
    if frame.mask is None:
        row |= {"psnr": round(psnr(pred, frame.image), 4), "ssim": round(ssim(pred, frame.image), 5)}
    else:
        row |= {"psnr": round(psnr(pred[region], frame.image[region]), 4),
                "ssim": round(ssim(pred, frame.image, region), 5)}
    if frame.shadow is not None:
        fg = foreground(frame)
        shadow = frame.shadow & region
        lit = ~frame.shadow & region & (fg if fg is not None else True)
        for name, where in (("psnr_shadow", shadow), ("psnr_lit", lit)):
            row[name] = round(psnr(pred[where], frame.image[where]), 4) if bool(where.any()) else None
    return row


def _summary(per_frame: list[dict]) -> dict:
    n = len(per_frame)
    out = {"frames": n, "psnr": round(sum(f["psnr"] for f in per_frame) / n, 4),
           "ssim": round(sum(f["ssim"] for f in per_frame) / n, 5)}
    for key in ("psnr_shadow", "psnr_lit"):
        vals = [f[key] for f in per_frame if f.get(key) is not None]
        if vals:
            out[key] = round(sum(vals) / len(vals), 4)
    return out


def evaluate(run: Path, scene_dir: Path, out: Path | None = None, images: Path | None = None,
             split: str = "test", device: torch.device | str = "cpu") -> dict:
    """PSNR and SSIM of every frame of a split (test: unseen lights) rendered without adaptation on `device`,
    at the scene's own image size whatever the training resolution (the cameras' intrinsics say how)."""
    cfg, module, _ = load_checkpoint(run, device=device)
    scene = load_scene(scene_dir, split)
    targets = prediction_paths(images, scene.frames) if images is not None else None
    per_frame = []
    with torch.no_grad():
        for i, f in enumerate(scene.frames):
            f = f.to(device)
            pred = render(module, f).clamp(0, 1)
            per_frame.append(frame_metrics(pred, f))
            if targets is not None:
                save_image(targets[i], pred)
    result = {"method": cfg.method, "scene": str(scene_dir), "split": split, **_summary(per_frame),
              "per_frame": per_frame}
    if out is not None:
        _write_json(Path(out), result)
    return result


@dataclass
class AdaptResult:
    """Metrics on the query views of one light before and after adapting on its support views."""
    before: dict
    after: dict
    params: tuple  # adapted light-dependent parameters
    losses: list[float]
    predictions: list[torch.Tensor]  # adapted renders of the query views
    query: list[Frame]


def adapt(run: Path, scene_dir: Path, light_index: int = 0, views: int = 1, steps: int | None = None,
          split: str = "test", device: torch.device | str = "cpu") -> AdaptResult:
    """Adapt a run's light-dependent parameters to one light of a split from `views` of its images, on `device`,
    at the scene's own image size. A light with a single view adapts on half of its tiles and is measured on
    the other half (`tasks.tile_halves`, seeded by the light index)."""
    cfg, module, _ = load_checkpoint(run, device=device)
    if not isinstance(module, LightPrior):
        raise MetatuneError(f"a '{cfg.method}' model has no light-dependent parameters to adapt")
    scene = load_scene(scene_dir, split)
    groups = group_by_light(scene.frames)
    if not 0 <= light_index < len(groups):
        raise MetatuneError(f"light index {light_index} out of range: the {split} split has {len(groups)} lights")
    group = [f.to(device) for f in groups[light_index]]
    if len(group) == 1:
        if views != 1:
            raise MetatuneError(f"light {light_index} has a single view; adapt on it with --views 1 (half its "
                                "tiles adapt, the other half measure)")
        task = TaskSampler(group, seed=light_index).split(group)
    elif not 1 <= views < len(group):
        raise MetatuneError(f"light {light_index} has {len(group)} views; adapt needs 1 <= views < {len(group)}")
    else:
        task = LightTask(group[0].light, group[:views], group[views:])
    tuner = make_tuner(module, cfg, None, None, method="metasgd" if cfg.method == "meta" else "maml")
    if cfg.method == "meta" and (Path(run) / TUNER).is_file():
        tuner.load(Path(run) / TUNER, "relight", "meta_tuner")
    with torch.no_grad():
        before = [frame_metrics(render(module, f).clamp(0, 1), f) for f in task.query]
    res = tuner.adapt(task, steps)
    preds, after = [], []
    with torch.no_grad():
        for f in task.query:
            pred = module.model.render(f.camera, task.light, res.params).clamp(0, 1)
            preds.append(pred)
            after.append(frame_metrics(pred, f))
    return AdaptResult(_summary(before) | {"per_frame": before}, _summary(after) | {"per_frame": after},
                       res.params, res.losses, preds, task.query)
