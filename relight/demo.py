"""The relighting part of `metatune demo`: a small generated scene, trained and evaluated on unseen lights."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from metatune.atomic import write_json
from relight.evaluation import adapt, evaluate
from relight.figures import comparison
from relight.generate_mujoco import MujocoSceneConfig, generate_mujoco_scene
from relight.scene import load_scene, save_image
from relight.scene_layout import LayoutConfig
from relight.training import TrainConfig, load_checkpoint, render, train


@dataclass
class DemoConfig:
    """Sizes that keep the demo near a minute on 2 CPU cores."""
    resolution: int = 64
    train_lights: int = 8
    test_lights: int = 3
    views_per_light: int = 3
    points: int = 1200
    fit_steps: int = 100
    meta_steps: int = 12


def run_demo(out: Path, cfg: DemoConfig | None = None, device: str = "cpu") -> dict:
    """Generate, train (meta and the plain baseline), evaluate on unseen lights, adapt to one; write PNG + JSON.
    The scene is rendered by MuJoCo on the CPU; training, evaluation and adaptation run on `device`."""
    cfg = cfg or DemoConfig()
    out.mkdir(parents=True, exist_ok=True)
    layout = LayoutConfig(resolution=cfg.resolution, train_lights=cfg.train_lights, test_lights=cfg.test_lights,
                          views_per_light=cfg.views_per_light)
    scene_dir = generate_mujoco_scene(out / "scene", MujocoSceneConfig("glossy", layout, n_points=cfg.points))
    metrics = {}
    for method in ("meta", "plain"):
        run = out / f"run_{method}"
        tc = TrainConfig(method=method, resolution=cfg.resolution, fit_steps=cfg.fit_steps,
                         meta_steps=cfg.meta_steps, max_points=cfg.points, max_gaussians=2 * cfg.points)
        summary = train(scene_dir, run, tc, progress=False, device=device)
        res = evaluate(run, scene_dir, out / f"metrics_{method}.json", out / f"pred_{method}", device=device)
        metrics[method] = {"ood_psnr": res["psnr"], "ood_ssim": res["ssim"], "train_seconds": summary["train_seconds"],
                           "ood_psnr_shadow": res.get("psnr_shadow"), "ood_psnr_lit": res.get("psnr_lit"),
                           "gaussians": summary["gaussians"]}
    test = load_scene(scene_dir, "test", cfg.resolution)
    _, module, _ = load_checkpoint(out / "run_meta", device=device)
    with torch.no_grad():
        rows = [(f.image, render(module, f.to(device)).cpu())
                for f in test.frames[: 2 * cfg.views_per_light: cfg.views_per_light]]
    save_image(out / "comparison_meta.png", comparison(rows))
    ad = adapt(out / "run_meta", scene_dir, light_index=0, views=1, device=device)
    metrics["meta_adapted_1view"] = {"query_psnr_before": ad.before["psnr"], "query_psnr_after": ad.after["psnr"]}
    write_json(out / "metrics.json", metrics)
    return {"ood_psnr_meta": metrics["meta"]["ood_psnr"], "ood_psnr_plain": metrics["plain"]["ood_psnr"],
            "ood_ssim_meta": metrics["meta"]["ood_ssim"], "ood_psnr_shadow_meta": metrics["meta"]["ood_psnr_shadow"],
            "ood_psnr_lit_meta": metrics["meta"]["ood_psnr_lit"],
            "adapt_1view_psnr": [ad.before["psnr"], ad.after["psnr"]]}
