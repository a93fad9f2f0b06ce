"""Generate a named OLAT scene preset with MuJoCo or PyTorch3D."""
from __future__ import annotations

from pathlib import Path

from metatune import MetatuneError
from relight.scene_layout import LayoutConfig

PRESETS = ("glossy", "matte", "p3d", "bleed")
LAYOUTS = ("olat", "moving")


def generate_scene(out: Path, preset: str = "glossy", resolution: int = 64, seed: int = 0,
                   layout: LayoutConfig | None = None, layout_name: str = "olat", points: bool = True) -> Path:
    """Write scene `preset` (glossy, matte: MuJoCo; p3d, bleed (with interreflection): PyTorch3D) into `out`.

    Layout `olat`: 16 training lights seen from 4 views each; `moving`: one view per light (MetaGS, NRHints).
    Without `points` the scene has no points3d.ply (training starts from random points).
    """
    if layout_name not in LAYOUTS:
        raise MetatuneError(f"unknown layout {layout_name!r}; choose from {LAYOUTS}")
    if layout is None:
        layout = (LayoutConfig.moving(resolution, seed) if layout_name == "moving"
                  else LayoutConfig(resolution=resolution, seed=seed))
    n_points = {} if points else {"n_points": 0}
    if preset == "p3d":
        from relight.generate_pytorch3d import P3DSceneConfig, generate_pytorch3d_scene
        return generate_pytorch3d_scene(Path(out), P3DSceneConfig(layout=layout, **n_points))
    if preset == "bleed":
        from relight.generate_pytorch3d import P3DSceneConfig, generate_pytorch3d_scene
        cfg = P3DSceneConfig(layout=layout, preset="bleed", light_power=5.0, shadow_offset=0.02, **n_points)
        return generate_pytorch3d_scene(Path(out), cfg)
    if preset in ("glossy", "matte"):
        from relight.generate_mujoco import MujocoSceneConfig, generate_mujoco_scene
        return generate_mujoco_scene(Path(out), MujocoSceneConfig(preset=preset, layout=layout, **n_points))
    raise MetatuneError(f"unknown scene preset {preset!r}; choose from {PRESETS}")
