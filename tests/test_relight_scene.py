"""Generated OLAT scenes (MuJoCo, PyTorch3D): format, light split, physics of the renders, and bad folders."""
import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch

from metatune import MetatuneError
from relight.generate_mujoco import MujocoSceneConfig, generate_mujoco_scene
from relight.generate_pytorch3d import P3DSceneConfig, generate_pytorch3d_scene
from relight.scene import group_by_light, load_scene
from relight.scene_layout import LayoutConfig
from relight.tasks import LightTask, TaskSampler

TINY = LayoutConfig(resolution=24, n_cameras=6, train_lights=3, test_lights=2, views_per_light=2)


@pytest.fixture(scope="module")
def mj_scene(tmp_path_factory):
    return generate_mujoco_scene(tmp_path_factory.mktemp("mj"), MujocoSceneConfig("glossy", TINY, n_points=300))


def test_scene_format_and_light_split(mj_scene):
    for split, n_lights in (("train", 3), ("test", 2)):
        meta = json.loads((mj_scene / f"transforms_{split}.json").read_text())
        assert meta["camera_angle_x"] == TINY.camera_angle_x
        for fr in meta["frames"]:
            assert np.array(fr["transform_matrix"]).shape == (4, 4) and len(fr["pl_pos"]) == 3
        scene = load_scene(mj_scene, split)
        assert len(group_by_light(scene.frames)) == n_lights
        az = [math.atan2(f.light.position[1], f.light.position[0]) % (2 * math.pi) for f in scene.frames]
        assert all((0 < a < math.pi) == (split == "train") for a in az)  # train on one side, test on the other
        assert scene.frames[0].image.shape == (24, 24, 3)
    assert load_scene(mj_scene).points.shape[1] == 3


def test_mujoco_point_light_falls_off_as_inverse_square(tmp_path):
    # a bare floor lit from straight above at heights 1 and 2: the centre pixel dims 4x (MuJoCo attenuation 0 0 1)
    from metatune.mujoco_loader import load_mujoco
    mujoco = load_mujoco()
    from relight.generate_mujoco import scene_xml
    cfg = MujocoSceneConfig("matte", TINY, light_power=0.8)
    xml = scene_xml(cfg).replace('<geom type="box"', '<geom type="box" rgba="0 0 0 0"')
    model = mujoco.MjModel.from_xml_string(xml.replace('<geom type="cylinder"', '<geom type="cylinder" rgba="0 0 0 0"'))
    model.geom_rgba[1:] = 0  # hide the objects, keep the floor
    data = mujoco.MjData(model)
    model.cam_pos[0] = [0.0, 0.0, 3.0]
    model.cam_quat[0] = [1.0, 0.0, 0.0, 0.0]  # looking straight down
    vals = []
    with mujoco.Renderer(model, 32, 32) as r:
        for h in (1.0, 2.0):
            model.light_pos[0] = [0.8, 0.0, h]
            model.light_dir[0] = [0.0, 0.0, -1.0]
            mujoco.mj_forward(model, data)
            r.update_scene(data, camera="cam")
            img = r.render().astype(float)
            vals.append(img[14:18, 14:18].mean())  # floor under the camera, 0.8 beside the light
    d1, d2 = math.hypot(0.8, 1.0), math.hypot(0.8, 2.0)
    expect = (1.0 / d1**2 * (1.0 / d1)) / (1.0 / d2**2 * (2.0 / d2))  # falloff times cos(incidence)
    assert abs(vals[0] / vals[1] - expect) / expect < 0.1


def test_pytorch3d_scene_has_lit_and_shadowed_floor(tmp_path):
    lay = LayoutConfig(resolution=24, n_cameras=4, train_lights=2, test_lights=1, views_per_light=2)
    root = generate_pytorch3d_scene(tmp_path / "p3d", P3DSceneConfig(layout=lay, n_points=200, shadow_res=96))
    scene = load_scene(root, "train")
    assert len(scene.frames) == 4 and scene.points.shape == (200, 3)
    img = torch.stack([f.image for f in scene.frames])
    assert img.max() > 0.3 and (img.sum(-1) == 0).any()  # lit surfaces and empty background
    for split, side in (("train", True), ("test", False)):  # lights on opposite sides of the hemisphere
        lights = [f.light.position for f in load_scene(root, split).frames]
        assert all((0 < math.atan2(p[1], p[0]) % (2 * math.pi) < math.pi) == side for p in lights)


def test_bad_scene_folders_raise_clear_errors(mj_scene, tmp_path):
    with pytest.raises(MetatuneError, match="does not exist"):
        load_scene(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MetatuneError, match="transforms_train.json"):
        load_scene(empty)
    broken = tmp_path / "broken"
    shutil.copytree(mj_scene, broken)
    (broken / "train" / "r_001.png").unlink()
    with pytest.raises(MetatuneError, match="missing image"):
        load_scene(broken)


def test_tasks_have_disjoint_support_and_query(mj_scene):
    frames = load_scene(mj_scene).frames
    sampler = TaskSampler(frames, support_views=1, seed=0)
    for task in sampler(20):
        assert not {f.file_path for f in task.support} & {f.file_path for f in task.query}
        assert all(f.light == task.light for f in task.support + task.query)
    with pytest.raises(MetatuneError, match="must differ"):
        LightTask(frames[0].light, frames[:1], frames[:1])
    singles = [frames[0], frames[2], frames[4]]  # one view per light: split into disjoint halves of its tiles
    for task in TaskSampler(singles, seed=1)(10):
        (s,), (q,) = task.support, task.query
        assert s.image is q.image and s.light == q.light == task.light
        assert not bool((s.mask & q.mask).any()) and bool((s.mask | q.mask).all())  # disjoint, every pixel
        assert abs(int(s.mask.sum()) - int(q.mask.sum())) <= 8 * 8  # halves, to one tile
    half = singles[0]
    with pytest.raises(MetatuneError, match="disjoint pixels"):  # overlapping pixel sets of one view are refused
        LightTask(half.light, [dataclasses.replace(half, mask=torch.ones_like(half.image[..., 0], dtype=torch.bool))],
                  [dataclasses.replace(half, mask=torch.ones_like(half.image[..., 0], dtype=torch.bool))])
    tiny = dataclasses.replace(half, camera=half.camera.resized(8, 8), image=half.image[:8, :8])
    with pytest.raises(MetatuneError, match="too small to split"):  # checked when the sampler is made
        TaskSampler([tiny])


def test_bleed_scene_colour_bleeding_follows_the_light():
    # white sphere between a red wall (y > 0) and a green one (y < 0): a light on the +y side lights the
    # green wall's inner face, which bleeds green onto the sphere; a light on the -y side bleeds red
    from relight.camera import Camera, look_at
    from relight.generate_pytorch3d import render_view, vertex_indirect
    from relight.interreflection import bounce_transfer
    from relight.light import Light
    from relight.scene_bleed import bleed_mesh, face_patches
    mesh = bleed_mesh(cell=0.1)
    centres, normals, areas, _ = face_patches(mesh)
    transfer = bounce_transfer(mesh.verts, mesh.normals, centres, normals, areas, mesh.solids)
    assert float(transfer.sum(1).max()) <= 1.0  # no receiver gathers more than its whole hemisphere
    cfg = P3DSceneConfig(preset="bleed", light_power=5.0, shadow_res=96, shadow_offset=0.02)
    sphere = mesh.mats[:, 3] > 0  # the only specular part
    for y, (more, less) in ((2.0, (1, 0)), (-2.0, (0, 1))):
        ind = vertex_indirect(mesh, transfer, Light((0.0, y, 1.5)), cfg)[sphere].mean(0)
        assert ind[more] > 2 * ind[less]
    cam = Camera.from_fov(look_at(torch.tensor([3.0, 0.0, 1.5]), torch.tensor([0.0, 0.0, 0.2])), 0.75, 32, 32)
    light = Light((0.0, -2.0, 1.5))
    lit = render_view(mesh, cam, light, cfg, vertex_indirect(mesh, transfer, light, cfg))
    local = render_view(mesh, cam, light, cfg)
    assert (lit >= local - 1e-6).all() and float((lit - local)[..., 0].max()) > 0.05  # red light added


def test_generators_mark_the_cast_shadows(mj_scene, tmp_path):
    # MuJoCo: the pixels its own renderer brightens when the light stops casting shadows
    frames = load_scene(mj_scene, "test").frames
    for f in frames:
        assert f.shadow is not None and f.shadow.shape == f.image.shape[:2]
        frac = float(f.shadow.float().mean())
        assert 0.0 < frac < 0.5
        lit_floor = f.image.max(-1).values[~f.shadow & (f.image.max(-1).values > 0)]
        assert float(f.image[f.shadow].max(-1).values.mean()) < float(lit_floor.median())  # shadows are dark
    # PyTorch3D: surface facing the light but behind the shadow map's nearest surface
    root = generate_pytorch3d_scene(tmp_path / "p3d", P3DSceneConfig(layout=TINY, n_points=0))
    assert not (root / "points3d.ply").exists()
    for f in load_scene(root, "test").frames:
        assert f.shadow is not None and 0.0 < float(f.shadow.float().mean()) < 0.5


def test_shadow_and_lit_psnr_are_measured_on_their_own_pixels():
    from relight.camera import Camera, look_at
    from relight.evaluation import frame_metrics
    from relight.light import Light
    from relight.scene import Frame
    img = torch.full((16, 16, 3), 0.5)
    img[:, :4] = 0.0  # background
    shadow = torch.zeros(16, 16, dtype=torch.bool)
    shadow[8:, 8:] = True
    cam = Camera.from_fov(look_at(torch.tensor([0.0, -3.0, 1.0]), torch.zeros(3)), 0.7, 16, 16)
    frame = Frame("f", img, cam, Light((0.0, 0.0, 3.0)), shadow=shadow)
    pred = img.clone()
    pred[shadow] += 0.1  # wrong only in the shadow: lit is exact, shadow 20 dB
    row = frame_metrics(pred, frame)
    assert row["psnr_lit"] == float("inf") and row["psnr_shadow"] == pytest.approx(20.0, abs=1e-3)
    pred[:, :2] = 1.0  # background errors count in neither (the background is not lit object)
    row = frame_metrics(pred, frame)
    assert row["psnr_lit"] == float("inf") and row["psnr"] < 20.0
