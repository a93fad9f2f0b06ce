"""The fused CPU kernel (relight/kernel.py, relight/_ext/fused.cpp) against the PyTorch path: values and
gradients, early termination, the screen-space gradient densification reads, and the dispatch.

Tolerances. float64 runs must agree with the PyTorch path to ~1e-10: the kernel computes the same formulas,
so only rounding (~1e-16 per operation) separates them. float32 rounds at 2^-24 = 6e-8 per operation; a
pixel composites up to ~50 Gaussians here, each adding a few roundings (and the kernel's exp differs from
torch's by ~1 ulp, its sums go in another order). Such errors add up like a random walk, to a few 1e-7 on
values in [0, 1] (measured: at most 2.4e-7): atol 3e-6. A gradient entry sums over many pixels terms with
relative errors of that size, with cancellation between them: compared to the largest entry of that
gradient, measured at most 1.7e-6 (quaternions, the longest chain); rel 3e-5. Both leave ~10x.

Early termination (a pixel stops at the Gaussian that would bring its transmittance below T_MIN = 1e-4)
is not in the PyTorch path: scenes that terminate are compared with the PyTorch path's compositing weights
cut at the same place (`terminated_reference`). In float32 a pixel whose transmittance passes within 0.1%
of T_MIN may be cut one Gaussian apart by the two; those few pixels are left out of the comparison and of
the loss (found in float64, `ambiguous`).
"""
import os

import pytest
import torch

from relight import kernel
from relight.camera import Camera, look_at
from relight.densify import ScreenGradients
from relight.gaussians import covariance_3d
from relight.projection import ALPHA_MIN, project
from relight.rasterize import TILE, blend_tiles, rasterize


@pytest.fixture(scope="module", autouse=True)
def ext():
    """The built extension (built here if setup has not); skipped, saying why, only where g++ or ninja
    cannot build it, and never in CI, where it must build."""
    try:
        return kernel.load() or kernel.build()
    except Exception as err:  # noqa: BLE001 - report any build failure
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"the fused kernel cannot be built on this machine: {type(err).__name__}: {str(err)[-300:]}")


def camera(size=(37, 22), dtype=torch.float32) -> Camera:
    return Camera.from_fov(look_at(torch.tensor([2.0, 1.0, 1.5]), torch.zeros(3)).to(dtype), 0.9, *size)


def scene(n: int, seed: int, channels: int = 3, dtype=torch.float32, size=(37, 22)):
    """Random Gaussians around the origin, a tenth of them behind the camera, a tenth off-screen (some of
    these reaching into the image), one below the alpha cut-off."""
    gen = torch.Generator().manual_seed(seed)
    cam = camera(size, dtype)
    means = torch.randn(n, 3, generator=gen, dtype=torch.float64) * 0.35
    k = max(1, n // 10)
    eye, fwd = cam.position.double(), -cam.c2w[:3, 2].double()
    right = cam.c2w[:3, 0].double()
    means[:k] = eye - (0.5 + torch.rand(k, 1, generator=gen, dtype=torch.float64)) * fwd  # behind
    means[k:2 * k] += right * (1.0 + 1.5 * torch.rand(k, 1, generator=gen, dtype=torch.float64))  # off to the side
    quats = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    shrink = min(1.0, (60 / n) ** 0.5)  # more Gaussians, smaller: no pixel gets near-opaque
    scales = (torch.rand(n, 3, generator=gen, dtype=torch.float64) * 0.1 + 0.02) * shrink
    opac = torch.rand(n, generator=gen, dtype=torch.float64) * 0.8 + 0.1
    opac[-1] = 0.5 * ALPHA_MIN
    colors = torch.rand(n, channels, generator=gen, dtype=torch.float64)
    return [t.to(dtype) for t in (means, quats, scales, opac, colors)], cam


def stack(n: int, seed: int, channels: int = 3, dtype=torch.float32, size=(30, 21)):
    """Near-opaque Gaussians piled along the view axis (opacity 0.9-0.99, large), random ones in front:
    most pixels reach T < 1e-4 after a few layers and terminate."""
    gen = torch.Generator().manual_seed(seed)
    cam = camera(size, dtype)
    fwd = -cam.c2w[:3, 2].double()
    depth = torch.linspace(-0.6, 0.6, n, dtype=torch.float64)[torch.randperm(n, generator=gen)]
    means = depth[:, None] * fwd + 0.08 * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    quats = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    scales = torch.rand(n, 3, generator=gen, dtype=torch.float64) * 0.2 + 0.15
    opac = torch.rand(n, generator=gen, dtype=torch.float64) * 0.09 + 0.9
    colors = torch.rand(n, channels, generator=gen, dtype=torch.float64)
    return [t.to(dtype) for t in (means, quats, scales, opac, colors)], cam


def terminated_reference(means, quats, scales, opac, colors, cam, bg):
    """The PyTorch path's compositing weights (blend_tiles) with each pixel cut where 3DGS cuts it: a
    Gaussian counts while the transmittance after it stays >= T_MIN. Also returns, per pixel, the smallest
    |T_after / T_MIN - 1| over its Gaussians (how close the cut was)."""
    proj = project(means, covariance_3d(quats, scales), opac, cam)
    w_, h_ = cam.width, cam.height
    blends, tx, ty = blend_tiles(proj, opac, w_, h_)
    nc = colors.shape[1]
    out = torch.zeros(ty * tx, TILE * TILE, nc, dtype=colors.dtype) + bg
    alpha = torch.zeros(ty * tx, TILE * TILE, dtype=colors.dtype)
    margin = torch.full((ty * tx, TILE * TILE), float("inf"), dtype=torch.float64)
    for b in blends:
        t_after = 1 - torch.cumsum(b.weights.detach(), -1)
        keep = (t_after >= kernel.T_MIN).to(b.weights.dtype)
        w = b.weights * keep
        col = w @ colors[b.gaussians] + (1 - w.sum(-1))[..., None] * bg
        rel = torch.where(b.weights.detach() > 0, (t_after.double() / kernel.T_MIN - 1).abs(), float("inf"))
        idx = torch.tensor(b.tiles)
        out = out.index_put((idx,), col)
        alpha = alpha.index_put((idx,), w.sum(-1))
        margin[idx] = rel.min(-1).values
    def image(x):  # noqa: E306 - [tiles, P, ...] -> [H, W, ...]
        x = x.reshape(ty, tx, TILE, TILE, *x.shape[2:]).transpose(1, 2)
        return x.reshape(ty * TILE, tx * TILE, *x.shape[4:])[:h_, :w_]
    return image(out), image(alpha), image(margin)


def render_and_grads(fn, params, cam, bg, weights, weights_alpha):
    """Image, alpha and the gradients of sum(weights * image) + sum(weights_alpha * alpha)."""
    inputs = [t.clone().requires_grad_() for t in params]
    img, alpha = fn(*inputs, cam, bg)
    ((img * weights).sum() + (alpha * weights_alpha).sum()).backward()
    return img.detach(), alpha.detach(), [t.grad for t in inputs]


def loss_weights(cam, channels, dtype, seed=7):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(cam.height, cam.width, channels, generator=gen).to(dtype) - 0.3,
            torch.rand(cam.height, cam.width, generator=gen).to(dtype) - 0.3)


def assert_close_grads(got, want, rel):
    for name, g, w in zip(("means", "quats", "scales", "opacities", "colors"), got, want):
        scale = float(w.abs().max())
        assert scale > 0, name
        err = float((g - w).abs().max())
        assert err <= rel * scale, f"{name}: max |diff| {err:.3g} > {rel} x {scale:.3g}"


@pytest.mark.parametrize("n,channels,size,seed", [(8, 3, (37, 22), 0), (60, 3, (37, 22), 1), (300, 3, (45, 19), 2),
                                                  (60, 1, (22, 37), 3), (150, 1, (40, 33), 4)])
def test_float32_values_and_gradients_match_the_pytorch_path(n, channels, size, seed):
    params, cam = scene(n, seed, channels, size=size)
    bg = torch.linspace(0.1, 0.4, channels)
    wi, wa = loss_weights(cam, channels, torch.float32)
    ref = render_and_grads(lambda *a: rasterize(*a, backend="torch"), params, cam, bg, wi, wa)
    got = render_and_grads(kernel.rasterize_fused, params, cam, bg, wi, wa)
    assert float(ref[1].max()) < 1 - 1e-3  # nothing terminates: the plain PyTorch path is the reference
    assert float(ref[1].max()) > 0.3  # and the scene is visible
    assert got[0].shape == (size[1], size[0], channels) and got[1].shape == (size[1], size[0])
    assert torch.allclose(got[0], ref[0], atol=3e-6) and torch.allclose(got[1], ref[1], atol=3e-6)
    assert_close_grads(got[2], ref[2], 3e-5)


@pytest.mark.parametrize("maker,n,channels", [(scene, 80, 3), (scene, 40, 1), (stack, 40, 3), (stack, 25, 2)])
def test_float64_matches_the_pytorch_path_to_rounding(maker, n, channels):
    params, cam = maker(n, 5, channels, dtype=torch.float64)
    bg = torch.linspace(0.2, 0.5, channels, dtype=torch.float64)
    wi, wa = loss_weights(cam, channels, torch.float64)
    ref = render_and_grads(lambda *a: terminated_reference(*a)[:2], params, cam, bg, wi, wa)
    got = render_and_grads(kernel.rasterize_fused, params, cam, bg, wi, wa)
    assert torch.allclose(got[0], ref[0], atol=1e-10) and torch.allclose(got[1], ref[1], atol=1e-10)
    assert_close_grads(got[2], ref[2], 1e-9)


@pytest.mark.parametrize("n,channels,seed", [(40, 3, 0), (80, 1, 1)])
def test_early_termination_matches_the_cut_reference_and_stops_where_3dgs_does(n, channels, seed):
    params, cam = stack(n, seed, channels)
    bg = torch.full((channels,), 0.7)
    _, _, margin = terminated_reference(*(t.double() for t in params), cam, bg.double())
    clear = (margin > 1e-3).float()  # pixels whose cut both precisions place alike
    assert clear.mean() > 0.95
    wi, wa = loss_weights(cam, channels, torch.float32)
    wi, wa = wi * clear[..., None], wa * clear
    ref = render_and_grads(lambda *a: terminated_reference(*a)[:2], params, cam, bg, wi, wa)
    got = render_and_grads(kernel.rasterize_fused, params, cam, bg, wi, wa)
    inside = clear.bool()
    assert torch.allclose(got[0][inside], ref[0][inside], atol=3e-6)
    assert torch.allclose(got[1][inside], ref[1][inside], atol=3e-6)
    assert_close_grads(got[2], ref[2], 3e-5)
    # termination happened: the uncut PyTorch path goes on, and differs by what was left behind the cut, at
    # most the transmittance there (< T_MIN / (1 - ALPHA_MAX)) times |colour - background| <= 1
    plain, plain_alpha = rasterize(*params, cam, bg, backend="torch")
    assert float((plain_alpha - got[1]).max()) > 0 and float((1 - plain_alpha).min()) < kernel.T_MIN
    assert float((1 - got[1]).min()) >= kernel.T_MIN * (1 - 1e-3)
    left = (1 - got[1])[..., None]
    assert float((plain - got[0]).abs().max()) > 1e-5
    assert bool(((plain - got[0]).abs() <= left + 3e-6).all())


def test_gradients_with_early_termination_match_finite_differences():
    params, cam = stack(6, 3, 2, dtype=torch.float64, size=(12, 10))
    bg = torch.tensor([0.3, 0.6], dtype=torch.float64)
    weights = torch.rand(10, 12, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    alpha_ref = kernel.rasterize_fused(*params, cam, bg)[1]
    assert float((1 - alpha_ref).min()) < 1e-3  # deep enough that some pixels terminate

    def f(m, q, s, o, c, b):
        img, alpha = kernel.rasterize_fused(m, q, s, o, c, cam, b)
        return (img * weights).sum() + alpha.sum()

    inputs = tuple(t.clone().requires_grad_() for t in (*params, bg))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_projection_matches_project_with_culling_and_radii():
    (means, quats, scales, opac, _), cam = scene(200, 6)
    ref = project(means, covariance_3d(quats, scales), opac, cam)
    got = kernel.project_fused(means, quats, scales, opac, cam)
    assert torch.equal(got.radii > 0, ref.radii > 0)
    assert int((ref.radii == 0).sum()) >= 21  # the ones behind the camera and the transparent one are culled
    vis = ref.radii > 0
    assert float((got.radii - ref.radii)[vis].abs().max()) <= 1  # ceil of equal values but for rounding
    assert float((got.radii != ref.radii).float().mean()) < 0.02
    assert torch.allclose(got.means2d, ref.means2d, rtol=1e-5, atol=1e-3)
    assert torch.allclose(got.conics[vis], ref.conics[vis], rtol=1e-4, atol=1e-6)
    assert torch.allclose(got.depths, ref.depths, atol=1e-6)


def test_watch_gives_densification_the_same_screen_gradients_on_both_paths():
    (means, quats, scales, opac, colors), cam = scene(120, 8)
    stats = {}
    for backend in ("torch", "fused"):
        sg = ScreenGradients(120)
        for view in range(2):  # two renders, collected together, as a densifying step does
            c = camera().resized(37, 22) if view == 0 else Camera.from_fov(
                look_at(torch.tensor([-1.5, 2.0, 1.0]), torch.zeros(3)), 0.9, 37, 22)
            m = means.clone().requires_grad_()
            img, _ = rasterize(m, quats, scales, opac, colors, c, watch=sg, backend=backend)
            (img ** 2).sum().backward()
        sg.collect(37, 22)
        stats[backend] = sg
    t, f = stats["torch"], stats["fused"]
    assert torch.equal(t.seen, f.seen) and t.seen.max() == 2
    assert float(t.total.max()) > 0
    assert torch.allclose(f.total, t.total, rtol=1e-4, atol=1e-4 * float(t.total.max()))
    assert torch.allclose(f.radius, t.radius, atol=1.0 / 37)


def test_watch_means2d_is_the_projection_and_needs_no_grad_without_parameters():
    (means, quats, scales, opac, colors), cam = scene(30, 9)
    seen = []
    rasterize(means, quats, scales, opac, colors, cam, watch=seen.append)  # nothing requires grad
    assert not seen[0].means2d.requires_grad
    ref = project(means, covariance_3d(quats, scales), opac, cam)
    assert torch.allclose(seen[0].means2d, ref.means2d, rtol=1e-5, atol=1e-3)
    assert torch.equal(seen[0].radii > 0, ref.radii > 0)


def test_dispatch_fused_by_default_torch_when_forced_or_unsupported(monkeypatch):
    from metatune import MetatuneError
    from relight import rasterize as rz
    calls = []
    real = kernel.rasterize_fused
    monkeypatch.setattr(kernel, "rasterize_fused", lambda *a: calls.append(a) or real(*a))
    (means, quats, scales, opac, colors), cam = scene(20, 10)
    args = (means, quats, scales, opac, colors, cam)
    fused = rz.rasterize(*args)
    assert len(calls) == 1
    torch_img = rz.rasterize(*args, backend="torch")
    assert len(calls) == 1 and torch.allclose(fused[0], torch_img[0], atol=3e-6)
    monkeypatch.setenv(rz.BACKEND_ENV, "torch")
    rz.rasterize(*args)
    assert len(calls) == 1
    rz.rasterize(*args, backend="fused")  # the argument wins over the variable
    assert len(calls) == 2
    monkeypatch.setenv(rz.BACKEND_ENV, "fast")
    with pytest.raises(MetatuneError, match="unknown CPU rasterizer 'fast'"):
        rz.rasterize(*args)
    monkeypatch.delenv(rz.BACKEND_ENV)
    wide = colors.repeat(1, 20)  # 60 channels: more than the kernel's buffers hold, so the PyTorch path
    assert rz.rasterize(means, quats, scales, opac, wide, cam)[0].shape[-1] == 60 and len(calls) == 2
    with pytest.raises(MetatuneError, match="takes CPU tensors"):
        rz.rasterize(means, quats, scales, opac, wide, cam, backend="fused")
    monkeypatch.setattr(kernel, "load", lambda: None)  # not built: the PyTorch path, or a clear error
    rz.rasterize(*args)
    assert len(calls) == 2
    with pytest.raises(MetatuneError, match="not available"):
        rz.rasterize(*args, backend="fused")
