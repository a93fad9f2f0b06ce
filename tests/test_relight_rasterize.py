"""The tiled CPU rasterizer against the slow reference, finite-difference gradients, and the transfer matrix."""
import importlib.util

import pytest
import torch
from marks import needs_cuda, needs_gsplat

from relight.camera import Camera, look_at
from relight.densify import ScreenGradients
from relight.gaussians import covariance_3d
from relight.projection import BLUR, NEAR, Projected, project, project_one
from relight.rasterize import rasterize
from relight.rasterize_reference import rasterize_reference
from relight.transfer import transfer


def scene(n: int, seed: int, dtype=torch.float32, size=(21, 17)):
    gen = torch.Generator().manual_seed(seed)
    means = (torch.randn(n, 3, generator=gen) * 0.3).to(dtype)
    quats = torch.randn(n, 4, generator=gen).to(dtype)
    scales = (torch.rand(n, 3, generator=gen) * 0.12 + 0.03).to(dtype)
    opac = (torch.rand(n, generator=gen) * 0.8 + 0.1).to(dtype)
    colors = torch.rand(n, 3, generator=gen).to(dtype)
    cam = Camera.from_fov(look_at(torch.tensor([2.0, 1.0, 1.5]), torch.zeros(3)).to(dtype), 0.9, *size)
    return means, quats, scales, opac, colors, cam


def test_tiled_matches_reference_with_background_and_odd_size():
    means, quats, scales, opac, colors, cam = scene(40, 0)
    bg = torch.tensor([0.2, 0.1, 0.3])
    img, alpha = rasterize(means, quats, scales, opac, colors, cam, bg)
    ref, ref_alpha = rasterize_reference(means, quats, scales, opac, colors, cam, bg)
    assert img.shape == (17, 21, 3) and alpha.shape == (17, 21)
    assert torch.allclose(img, ref, atol=1e-5)
    assert torch.allclose(alpha, ref_alpha, atol=1e-5)
    assert alpha.max() > 0.5  # the scene is actually visible


def test_gaussians_behind_camera_are_culled_and_empty_image_is_background():
    means, quats, scales, opac, colors, cam = scene(5, 1)
    behind = cam.position + 2.0 * (cam.position / cam.position.norm())
    img, alpha = rasterize(behind.expand(5, 3).clone(), quats, scales, opac, colors, cam, torch.ones(3) * 0.5)
    assert torch.all(alpha == 0) and torch.allclose(img, torch.full_like(img, 0.5))


def test_projection_matches_single_gaussian_reference():
    means, quats, scales, opac, _, cam = scene(10, 2)
    covs = covariance_3d(quats, scales)
    proj = project(means, covs, opac, cam)
    for i in range(10):
        uv, cov2d, z = project_one(means[i], covs[i], cam)
        inv = torch.linalg.inv(cov2d)
        assert torch.allclose(proj.means2d[i], uv, atol=1e-4)
        assert torch.allclose(proj.conics[i], torch.stack([inv[0, 0], inv[0, 1], inv[1, 1]]), rtol=1e-4, atol=1e-4)
        assert torch.isclose(proj.depths[i], z)


def test_gradients_match_finite_differences():
    means, quats, scales, opac, colors, cam = scene(6, 3, torch.float64, size=(12, 10))
    weights = torch.rand(10, 12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))

    def f(m, q, s, o, c):
        img, _ = rasterize(m, q, s, o, c, cam)
        return (img * weights).sum()

    inputs = tuple(t.clone().requires_grad_() for t in (means, quats, scales, opac, colors))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_transfer_matrix_reproduces_render_and_colour_gradient():
    means, quats, scales, opac, colors, cam = scene(60, 4, size=(24, 19))
    bg = torch.tensor([0.3, 0.0, 0.1])
    img, _ = rasterize(means, quats, scales, opac, colors, cam, bg)
    tr = transfer(means, quats, scales, opac, cam)
    c = colors.clone().requires_grad_()
    lin = tr.apply(c, bg)
    assert torch.allclose(lin, img, atol=1e-5)
    c2 = colors.clone().requires_grad_()
    rasterize(means, quats, scales, opac, c2, cam, bg)[0].sum().backward()
    lin.sum().backward()
    assert torch.allclose(c.grad, c2.grad, atol=1e-5)


def test_tile_lists_match_brute_force_overlap():
    from relight.rasterize import tile_lists
    gen = torch.Generator().manual_seed(5)
    m2d = torch.rand(300, 2, generator=gen) * 80 - 10  # some off-screen
    radii = torch.randint(0, 12, (300,), generator=gen).float()
    lists = tile_lists(m2d, radii, 6, 5, 8)
    for ty in range(5):
        for tx in range(6):
            lo, hi = ((m2d - radii[:, None]) / 8).floor(), ((m2d + radii[:, None]) / 8).floor()
            hit = (lo[:, 0] <= tx) & (hi[:, 0] >= tx) & (lo[:, 1] <= ty) & (hi[:, 1] >= ty) & (radii > 0)
            assert torch.equal(lists[ty * 6 + tx], hit.nonzero().squeeze(-1))


def test_backend_selection_cpu_torch_cuda_gsplat_or_a_clear_error(monkeypatch):
    from metatune import MetatuneError
    from relight import rasterize as rz
    assert rz.select_backend(torch.device("cpu")) == "torch"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gsplat" else real(name, *a))
    with pytest.raises(MetatuneError, match="needs gsplat"):
        rz.select_backend(torch.device("cuda"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "gsplat" else real(name, *a))
    assert rz.select_backend(torch.device("cuda")) == "gsplat"
    assert rz.select_backend(torch.device("cpu")) == "torch"


def test_rasterize_dispatches_on_the_selected_backend(monkeypatch):
    from relight import rasterize as rz
    means, quats, scales, opac, colors, cam = scene(5, 3)
    monkeypatch.setattr(rz, "_rasterize_gsplat", lambda *a: ("gsplat", a[5]))
    assert rz.rasterize(means, quats, scales, opac, colors, cam)[0].shape == (17, 21, 3)  # CPU: our code
    monkeypatch.setattr(rz, "select_backend", lambda device: "gsplat")
    assert rz.rasterize(means, quats, scales, opac, colors, cam) == ("gsplat", cam)


def _screen_gradients(means, quats, scales, opac, colors, cam, device: str) -> ScreenGradients:
    """Densification's statistics of one render and backward of a sum of squares."""
    sg = ScreenGradients(len(means))
    m = means.to(device).requires_grad_()
    img, _ = rasterize(m, *(t.to(device) for t in (quats, scales, opac, colors)), cam.to(device), watch=sg)
    (img ** 2).sum().backward()
    sg.collect(cam.width, cam.height)
    return sg


def test_the_gsplat_path_hands_densification_gsplat_s_screen_means_and_radii(monkeypatch):
    """gsplat runs only on CUDA. Here a function with gsplat 1.5's signature and unpacked outputs (meta's
    means2d, conics and depths [C, N, ...], radii [C, N, 2] int32) computed by our projection stands in for it,
    to check what the adapter hands the densifier and how it calls gsplat; the CUDA test below runs gsplat."""
    import sys
    import types

    from relight import rasterize as rz
    means, quats, scales, opac, colors, cam = scene(40, 0)
    calls = []

    def rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, near_plane,
                      eps2d, backgrounds, packed):
        calls.append((viewmats, Ks, width, height, near_plane, eps2d, packed))
        proj = project(means, covariance_3d(quats, scales), opacities, cam)
        means2d = proj.means2d[None]  # as in gsplat, the tensor meta hands out is the one the render reads
        img, alpha = rz.rasterize_projected(Projected(means2d[0], proj.conics, proj.depths, proj.radii), opacities,
                                            colors, width, height, backgrounds)
        r = proj.radii.to(torch.int32)
        meta = {"means2d": means2d, "conics": proj.conics[None], "depths": proj.depths[None],
                "radii": torch.stack([r, r], -1)[None]}
        return img[None], alpha[None, ..., None], meta

    want = _screen_gradients(means, quats, scales, opac, colors, cam, "cpu")
    monkeypatch.setitem(sys.modules, "gsplat", types.SimpleNamespace(rasterization=rasterization))
    monkeypatch.setattr(rz, "select_backend", lambda device: "gsplat")
    got = _screen_gradients(means, quats, scales, opac, colors, cam, "cpu")
    view, K, width, height, near, eps2d, packed = calls[0]
    assert torch.equal(view[0], cam.viewmat()) and torch.equal(K[0], cam.K()) and (width, height) == (21, 17)
    assert (near, eps2d, packed) == (NEAR, BLUR, False)
    assert float(got.seen.sum()) > 0 and float(got.total.max()) > 0
    assert torch.equal(got.seen, want.seen)  # want: the CPU default (the fused kernel where it is built)
    assert torch.allclose(got.total, want.total, rtol=1e-4, atol=1e-4 * float(want.total.max()))
    assert torch.allclose(got.radius, want.radius, atol=1.0 / 21)


@needs_cuda
@needs_gsplat
def test_gsplat_hands_densification_the_cpu_screen_gradients_on_cuda():
    scn = scene(40, 0)
    cpu, gpu = (_screen_gradients(*scn, dev) for dev in ("cpu", "cuda"))
    assert float(gpu.total.max()) > 0
    on = (cpu.seen > 0) & (gpu.seen > 0)  # gsplat also culls Gaussians wholly outside the image
    assert torch.allclose(gpu.mean()[on], cpu.mean()[on], rtol=0.02, atol=1e-3 * float(cpu.mean().max()))
    # gsplat's radius is the larger half-extent of the cut-off ellipse's box, ours its major semi-axis
    r_gpu, r_cpu, px = gpu.radius[on], cpu.radius[on], 1.0 / 21
    assert torch.all(r_gpu <= r_cpu + px) and torch.all(r_gpu >= r_cpu / 2 ** 0.5 - px)


@needs_cuda
@needs_gsplat
def test_gsplat_matches_the_cpu_rasterizer_on_cuda():
    from relight import kernel
    means, quats, scales, opac, colors, cam = scene(40, 0)
    img, alpha = rasterize(*(t.cuda() for t in (means, quats, scales, opac, colors)), cam.to("cuda"))
    for backend in ("torch", "fused") if kernel.is_built() else ("torch",):  # our PyTorch code and our kernel
        ref, ref_alpha = rasterize(means, quats, scales, opac, colors, cam, backend=backend)
        assert torch.allclose(img.cpu(), ref, atol=2e-3) and torch.allclose(alpha.cpu(), ref_alpha, atol=2e-3), backend
