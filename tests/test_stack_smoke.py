"""One real call of each pinned dependency, so that a broken install fails CI."""
import math
import pickle

import numpy as np
import pytest
import torch


def test_pytorch3d_renders_a_phong_sphere_on_cpu():
    from pytorch3d.renderer import (
        FoVPerspectiveCameras,
        MeshRasterizer,
        MeshRenderer,
        PointLights,
        RasterizationSettings,
        SoftPhongShader,
        TexturesVertex,
        look_at_view_transform,
    )
    from pytorch3d.utils import ico_sphere

    mesh = ico_sphere(4)
    mesh.textures = TexturesVertex(verts_features=torch.ones_like(mesh.verts_padded()))
    dist, fov = 3.0, 60.0
    R, T = look_at_view_transform(dist=dist, elev=0, azim=0)
    cameras = FoVPerspectiveCameras(R=R, T=T, fov=fov)
    renderer = MeshRenderer(
        MeshRasterizer(cameras=cameras, raster_settings=RasterizationSettings(image_size=128)),
        SoftPhongShader(cameras=cameras, lights=PointLights(location=[[0.0, 0.0, 3.0]])))
    image = renderer(mesh)[0]
    covered = float((image[..., 3] > 0.5).float().sum())
    # a unit sphere at distance d subtends a cone of half-angle asin(1/d): its image is a disk of radius
    # tan(asin(1/d)) / tan(fov/2) in normalised units, i.e. that times 64 pixels
    radius_px = math.tan(math.asin(1 / dist)) / math.tan(math.radians(fov / 2)) * 64
    assert covered == pytest.approx(math.pi * radius_px**2, rel=0.03)
    assert float(image[64, 64, :3].mean()) > float(image[64, 64 + int(radius_px) - 2, :3].mean())  # lit centre


def test_smplx_loads_an_smpl_format_file(tmp_path):
    import smplx

    rng = np.random.default_rng(0)
    V, B = 6890, 10  # smplx picks extra keypoints by fixed vertex ids, so keep SMPL's vertex count
    kintree = np.array([[4294967295] + [max(0, (i - 1) // 2) for i in range(1, 24)], list(range(24))], dtype=np.int64)
    weights = rng.random((V, 24))
    f32 = np.float32
    model = {
        "v_template": rng.standard_normal((V, 3)).astype(f32), "shapedirs": 0.01 * rng.standard_normal((V, 3, B)).astype(f32),
        "posedirs": 0.01 * rng.standard_normal((V, 3, 207)).astype(f32), "J_regressor": (rng.random((24, V)) / V).astype(f32),
        "weights": (weights / weights.sum(1, keepdims=True)).astype(f32), "kintree_table": kintree,
        "f": rng.integers(0, V, size=(30, 3)),
    }
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(model))
    body = smplx.create(str(path), model_type="smpl")
    out = body()
    assert out.vertices.shape == (1, V, 3) and out.joints.shape[1] >= 24
    # zero pose and zero shape: the mesh is the template
    np.testing.assert_allclose(out.vertices[0].detach().numpy(), model["v_template"], atol=1e-5)


def test_mujoco_steps_and_renders_offscreen():
    from metatune.mujoco_loader import load_mujoco

    mujoco = load_mujoco()

    xml = """<mujoco><option timestep="0.01" integrator="Euler"/>
      <worldbody><light pos="0 0 3"/><geom type="plane" size="2 2 .1"/>
      <body pos="0 0 1"><freejoint/><geom type="sphere" size=".1" rgba="1 0 0 1"/></body></worldbody></mujoco>"""
    m = mujoco.MjModel.from_xml_string(xml)
    d = mujoco.MjData(m)
    n = 20
    for _ in range(n):
        mujoco.mj_step(m, d)
    # semi-implicit Euler free fall: z_n = z0 - g dt^2 n (n + 1) / 2
    assert d.qpos[2] == pytest.approx(1.0 - 9.81 * 0.01**2 * n * (n + 1) / 2, rel=1e-9)
    renderer = mujoco.Renderer(m, 64, 64)
    try:
        renderer.update_scene(d)
        frame = renderer.render()
    finally:
        renderer.close()
    assert frame.shape == (64, 64, 3) and frame.std() > 1.0


def test_theseus_implicit_least_squares():
    import theseus as th

    x = th.Vector(tensor=torch.zeros(1, 2, dtype=torch.float64), name="x")
    target = th.Variable(torch.tensor([[1.0, -2.0]], dtype=torch.float64, requires_grad=True), name="target")
    obj = th.Objective(dtype=torch.float64)
    obj.add(th.AutoDiffCostFunction([x], lambda optim_vars, aux_vars: 3 * (optim_vars[0].tensor - aux_vars[0].tensor),
                                    2, cost_weight=th.ScaleCostWeight(torch.tensor(1.0, dtype=torch.float64)),
                                    aux_vars=[target], name="fit"))
    layer = th.TheseusLayer(th.GaussNewton(obj, max_iterations=5))
    sol, _ = layer.forward({"x": torch.zeros(1, 2, dtype=torch.float64)},
                           optimizer_kwargs={"backward_mode": "implicit"})
    torch.testing.assert_close(sol["x"], target.tensor.detach())
    (g,) = torch.autograd.grad(sol["x"].sum(), target.tensor)
    torch.testing.assert_close(g, torch.ones(1, 2, dtype=torch.float64))  # x* = target


def test_cv2_writes_and_reads_png(tmp_path):
    import cv2

    img = (np.arange(32 * 48 * 3) % 251).astype(np.uint8).reshape(32, 48, 3)
    path = str(tmp_path / "a.png")
    assert cv2.imwrite(path, img)
    np.testing.assert_array_equal(cv2.imread(path), img)  # PNG is lossless
