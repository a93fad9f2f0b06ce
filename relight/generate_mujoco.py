"""Render OLAT scenes with MuJoCo (off-screen; shadow-casting spot lights with 1/r^2 attenuation, specular)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from metatune.atomic import write_text
from metatune.mujoco_loader import load_mujoco
from relight.pointcloud import write_points_ply
from relight.scene import save_image, write_transforms
from relight.scene_layout import LayoutConfig, camera_poses, frame_plan

# Objects: (kind, position, size, rgba, specular, shininess). Kinds: sphere (size: radius),
# box (size: half extents), cylinder (size: radius, half height).
GLOSSY = [("sphere", (0.15, -0.1, 0.35), (0.35,), (0.8, 0.15, 0.1, 1), 1.0, 0.8),
          ("box", (-0.45, 0.4, 0.2), (0.2, 0.2, 0.2), (0.2, 0.4, 0.8, 1), 0.1, 0.2)]
MATTE = [("box", (0.2, -0.25, 0.25), (0.25, 0.25, 0.25), (0.9, 0.7, 0.2, 1), 0.0, 0.1),
         ("cylinder", (-0.4, 0.35, 0.3), (0.18, 0.3), (0.2, 0.7, 0.3, 1), 0.0, 0.1)]
PRESETS = {"glossy": GLOSSY, "matte": MATTE}


@dataclass
class MujocoSceneConfig:
    """A preset scene of objects on a floor, with its layout of cameras and lights."""
    preset: str = "glossy"
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    floor_half: float = 1.0
    light_power: float = 3.5  # diffuse colour of the light; irradiance falls as power / r^2
    n_points: int = 2500  # size of the initial point cloud (as a reconstruction would give)
    hidden_power: tuple[float, float] | None = None  # per-light power factor range (log-uniform), not written
    hidden_tint: float = 0.0  # per-light, per-channel colour factor 1 +- this (uniform), not written
    point_noise: float = 0.005


def scene_xml(cfg: MujocoSceneConfig) -> str:
    """The MJCF model of a preset: floor, objects, one shadow-casting light, one camera."""
    objs = PRESETS[cfg.preset]
    geoms = []
    for i, (kind, pos, size, rgba, spec, shin) in enumerate(objs):
        geoms.append(f'<material name="m{i}" rgba="{" ".join(map(str, rgba))}" specular="{spec}" shininess="{shin}"/>')
    bodies = [f'<geom type="{k}" pos="{" ".join(map(str, p))}" size="{" ".join(map(str, s))}" material="m{i}"/>'
              for i, (k, p, s, *_) in enumerate(objs)]
    p = cfg.light_power
    return f"""<mujoco>
  <visual><headlight ambient="0 0 0" diffuse="0 0 0" specular="0 0 0"/>
    <quality shadowsize="4096" offsamples="8"/><global offwidth="1024" offheight="1024"/></visual>
  <asset>{''.join(geoms)}<material name="floor" rgba="0.7 0.7 0.7 1" specular="0.05" shininess="0.1"/></asset>
  <worldbody>
    <light name="key" type="spot" pos="0 0 3" dir="0 0 -1" cutoff="89" exponent="0" attenuation="0 0 1"
           castshadow="true" diffuse="{p} {p} {p}" specular="{p / 3} {p / 3} {p / 3}" ambient="0.02 0.02 0.02"/>
    <geom type="plane" size="{cfg.floor_half} {cfg.floor_half} 0.1" material="floor"/>
    {''.join(bodies)}
    <camera name="cam" pos="3 0 1" xyaxes="0 1 0 0 0 1" fovy="45"/>
  </worldbody>
</mujoco>"""


def surface_points(cfg: MujocoSceneConfig, rng: np.random.Generator) -> np.ndarray:  # [P, 3]
    """Points on the visible surfaces (floor, objects), area-weighted, with noise."""
    objs = PRESETS[cfg.preset]
    samples = []
    for kind, pos, size, *_ in objs:
        c = np.array(pos)
        if kind == "sphere":
            v = rng.normal(size=(4000, 3))
            samples.append((c + size[0] * v / np.linalg.norm(v, axis=1, keepdims=True), 4 * math.pi * size[0] ** 2))
        elif kind == "box":
            h = np.array(size)
            faces = []
            for ax in range(3):
                for sgn in (-1, 1):
                    u = rng.uniform(-1, 1, size=(1500, 3)) * h
                    u[:, ax] = sgn * h[ax]
                    faces.append(c + u)
            samples.append((np.concatenate(faces), 8 * (h[0] * h[1] + h[1] * h[2] + h[0] * h[2])))
        else:  # cylinder along z
            r, hh = size
            a = rng.uniform(0, 2 * math.pi, 4000)
            side = np.stack([r * np.cos(a), r * np.sin(a), rng.uniform(-hh, hh, 4000)], 1)
            rr = r * np.sqrt(rng.uniform(0, 1, 1000))
            b = rng.uniform(0, 2 * math.pi, 1000)
            top = np.stack([rr * np.cos(b), rr * np.sin(b), np.full(1000, hh)], 1)
            samples.append((c + np.concatenate([side, top]), 2 * math.pi * r * 2 * hh + math.pi * r * r))
    f = cfg.floor_half
    floor = np.concatenate([rng.uniform(-f, f, size=(8000, 2)), np.zeros((8000, 1))], 1)
    samples.append((floor, 4 * f * f))
    area = np.array([a for _, a in samples])
    counts = np.maximum((cfg.n_points * area / area.sum()).astype(int), 1)
    pts = []
    for (cloud, _), n in zip(samples, counts):
        inside_other = np.zeros(len(cloud), bool)
        for kind, pos, size, *_ in objs:  # drop points hidden inside another object or under the floor
            d = cloud - np.array(pos)
            if kind == "sphere":
                inside_other |= np.linalg.norm(d, axis=1) < size[0] - 1e-3
            elif kind == "box":
                inside_other |= (np.abs(d) < np.array(size) - 1e-3).all(1)
            else:
                inside_other |= (np.hypot(d[:, 0], d[:, 1]) < size[0] - 1e-3) & (np.abs(d[:, 2]) < size[1] - 1e-3)
        cloud = cloud[~inside_other & (cloud[:, 2] > -1e-3)]
        pts.append(cloud[rng.choice(len(cloud), size=min(n, len(cloud)), replace=False)])
    pts = np.concatenate(pts)
    return (pts + rng.normal(scale=cfg.point_noise, size=pts.shape)).astype(np.float32)


SHADOW_STEP = 0.02  # a pixel is in cast shadow where removing shadows brightens it by more than this


def _render(renderer, data, resolution: int, supersample: int) -> np.ndarray:  # [H, W, 3] in [0, 1]
    renderer.update_scene(data, camera="cam")
    img = renderer.render().astype(np.float32) / 255.0
    return img.reshape(resolution, supersample, resolution, supersample, 3).mean((1, 3))


def shadow_mask(img: np.ndarray, unshadowed: np.ndarray) -> np.ndarray:  # [H, W] float 0/1
    """Cast-shadow pixels: those that the same render without shadow casting shows brighter."""
    return ((unshadowed - img).max(-1) > SHADOW_STEP).astype(np.float32)


def generate_mujoco_scene(out: Path, cfg: MujocoSceneConfig | None = None) -> Path:
    """Write a full OLAT scene (both splits, images, points3d.ply) rendered by MuJoCo into `out`."""
    from metatune import MetatuneError
    mujoco = load_mujoco()

    cfg = cfg or MujocoSceneConfig()
    if cfg.preset not in PRESETS:
        raise MetatuneError(f"unknown MuJoCo scene preset {cfg.preset!r}; choose from {sorted(PRESETS)}")
    lay = cfg.layout
    out.mkdir(parents=True, exist_ok=True)
    model = mujoco.MjModel.from_xml_string(scene_xml(cfg))
    data = mujoco.MjData(model)
    model.cam_fovy[0] = math.degrees(lay.camera_angle_x)  # square images: vertical fov = horizontal fov
    poses = camera_poses(lay)
    supersample = 2
    renderer = mujoco.Renderer(model, lay.resolution * supersample, lay.resolution * supersample)
    hidden: dict[tuple, np.ndarray] = {}  # light -> its RGB power factor (all ones unless the config varies them)
    rng_hidden = np.random.default_rng(lay.seed + 100)
    try:
        for split in ("train", "test"):
            (out / split).mkdir(exist_ok=True)
            frames = []
            plan = frame_plan(lay, split)
            for i, (ci, light) in enumerate(tqdm(plan, desc=f"mujoco {split}", leave=False)):
                c2w = poses[ci]
                model.cam_pos[0] = c2w[:3, 3]
                quat = np.zeros(4)
                mujoco.mju_mat2Quat(quat, np.ascontiguousarray(c2w[:3, :3]).reshape(-1))
                model.cam_quat[0] = quat
                lp = np.array(light)
                model.light_pos[0] = lp
                model.light_dir[0] = (np.array([0.0, 0.0, 0.2]) - lp) / np.linalg.norm(np.array([0.0, 0.0, 0.2]) - lp)
                factor = hidden.setdefault(tuple(light), light_factor(cfg, rng_hidden))
                model.light_diffuse[0] = cfg.light_power * factor
                model.light_specular[0] = cfg.light_power / 3 * factor
                mujoco.mj_forward(model, data)
                img = _render(renderer, data, lay.resolution, supersample)
                model.light_castshadow[0] = 0  # the same frame without cast shadows: where it is brighter
                unshadowed = _render(renderer, data, lay.resolution, supersample)
                model.light_castshadow[0] = 1
                name = f"{split}/r_{i:03d}"
                save_image(out / f"{name}.png", img)
                save_image(out / f"{name}_shadow.png", shadow_mask(img, unshadowed)[..., None].repeat(3, -1))
                frames.append({"file_path": f"./{name}", "transform_matrix": c2w.tolist(), "pl_pos": list(light),
                               "shadow_mask": f"./{name}_shadow"})
            write_transforms(out / f"transforms_{split}.json", lay.camera_angle_x, frames)
    finally:
        renderer.close()
    if cfg.n_points > 0:  # 0: no point cloud (a capture without a reconstruction)
        write_points_ply(out / "points3d.ply", surface_points(cfg, np.random.default_rng(lay.seed)))
    if cfg.hidden_power is not None or cfg.hidden_tint:  # for the analysis only: no loader reads it
        write_text(out / "hidden_lights.json", json.dumps([{"pl_pos": list(k), "rgb_factor": v.tolist()}
                                                           for k, v in hidden.items()], indent=1))
    return out


def light_factor(cfg: MujocoSceneConfig, rng: np.random.Generator) -> np.ndarray:  # [3]
    """A light's hidden RGB power factor: log-uniform power in `hidden_power` times a tint 1 +- `hidden_tint`."""
    power = 1.0 if cfg.hidden_power is None else math.exp(rng.uniform(*np.log(cfg.hidden_power)))
    return power * (1.0 + rng.uniform(-cfg.hidden_tint, cfg.hidden_tint, 3)) if cfg.hidden_tint else np.full(3, power)
