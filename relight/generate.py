"""Generate a named OLAT scene preset with MuJoCo or PyTorch3D."""
from __future__ import annotations

from pathlib import Path

from metatune import MetatuneError
from relight.scene_layout import LayoutConfig

PRESETS = ("glossy", "matte", "p3d", "bleed")


def generate_scene(out: Path, preset: str = "glossy", resolution: int = 64, seed: int = 0,
                   layout: LayoutConfig | None = None) -> Path:
    """Write scene `preset` (glossy, matte: MuJoCo; p3d, bleed (with interreflection): PyTorch3D) into `out`."""
    layout = layout or LayoutConfig(resolution=resolution, seed=seed)
    if preset == "p3d":
        from relight.generate_pytorch3d import P3DSceneConfig, generate_pytorch3d_scene
        return generate_pytorch3d_scene(Path(out), P3DSceneConfig(layout=layout))
    if preset == "bleed":
        from relight.generate_pytorch3d import P3DSceneConfig, generate_pytorch3d_scene
        cfg = P3DSceneConfig(layout=layout, preset="bleed", light_power=5.0, shadow_offset=0.02)
        return generate_pytorch3d_scene(Path(out), cfg)
    if preset in ("glossy", "matte"):
        from relight.generate_mujoco import MujocoSceneConfig, generate_mujoco_scene
        return generate_mujoco_scene(Path(out), MujocoSceneConfig(preset=preset, layout=layout))
    raise MetatuneError(f"unknown scene preset {preset!r}; choose from {PRESETS}")
