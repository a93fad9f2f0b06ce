"""Shadows: closed forms, the deep opacity map against the exact pairwise method, its linear cost, and the cache."""
import math

import pytest
import torch

from relight import model as model_module
from relight import visibility
from relight import visibility_exact as exact_module
from relight.gaussians import Gaussians, covariance_3d
from relight.light import Light
from relight.model import RelightModel
from relight.projection import project
from relight.rasterize import tile_lists
from relight.visibility import light_camera, light_visibility, shadow_pixel_size, splat_count
from relight.visibility_exact import light_visibility_exact, transmittance_at


def iso(n, sigma):
    return torch.eye(3).expand(n, 3, 3) * sigma**2


def test_single_occluder_matches_closed_form():
    # receiver at the origin, light straight above; an isotropic occluder halfway, offset sideways by delta
    sigma, delta, o = 0.05, 0.04, 0.9
    means = torch.tensor([[0.0, 0.0, 0.0], [delta, 0.0, 1.0], [1.5, 0.0, 0.0]])
    covs = torch.stack([iso(1, 0.01)[0], iso(1, sigma)[0], iso(1, 0.01)[0]])
    opac = torch.tensor([0.5, o, 0.5])
    vis = light_visibility(means, covs, opac, Light((0.0, 0.0, 2.0)), bias=0.0, resolution=1024)
    expect = 1 - o * math.exp(-0.5 * delta**2 / sigma**2)
    assert abs(float(vis[0]) - expect) < 0.02
    assert float(vis[1]) == 1.0  # nothing between the occluder and the light
    assert float(vis[2]) > 0.999  # off to the side: unshadowed


def test_occluder_behind_receiver_casts_no_shadow():
    means = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    vis = light_visibility(means, iso(2, 0.05), torch.tensor([0.9, 0.9]), Light((0.0, 0.0, 2.0)))
    assert float(vis[0]) == 1.0 and float(vis[1]) < 0.2


def test_shadow_moves_with_the_light():
    xs = torch.linspace(-1, 1, 21)
    floor = torch.stack([xs, torch.zeros(21), torch.zeros(21)], 1)
    blob = torch.tensor([[0.0, 0.0, 0.5]])
    means = torch.cat([floor, blob])
    covs = torch.cat([iso(21, 0.02), iso(1, 0.15)])
    opac = torch.cat([torch.full((21,), 0.5), torch.tensor([0.99])])
    for lx, side in ((1.0, -1), (-1.0, 1)):  # the shadow falls on the side opposite the light
        vis = light_visibility(means, covs, opac, Light((lx, 0.0, 1.0)), bias=0.05)[:21]
        darkest = float(xs[vis.argmin()])
        assert vis.min() < 0.1 and darkest * side > 0.5
        assert vis[(xs * side) < -0.25].min() > 0.99  # the lit side (beyond the blob's soft tail)


# --- the deep opacity map against the exact pairwise reference -------------------------------------------------

EPS32 = 2.0**-24  # float32 unit round-off


def random_scene(n, seed):
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=gen) * 0.3
    covs = covariance_3d(torch.randn(n, 4, generator=gen), torch.rand(n, 3, generator=gen) * 0.04 + 0.01)
    return means, covs, torch.rand(n, generator=gen) * 0.9 + 0.05


def corner_transmittance(means, covs, opac, light, bias, res):
    """Exact transmittance at the four pixel centres around each receiver, and the bilinear weights."""
    n = means.shape[0]
    proj = project(means, covs, opac, light_camera(means, light, res))
    u = proj.means2d - 0.5
    base = u.floor()
    frac = u - base
    limits = proj.depths - torch.as_tensor(bias).expand(n)
    corners = {}
    for dx in (0, 1):
        for dy in (0, 1):
            c = torch.stack([(base[:, 0] + dx).clamp(0, res - 1), (base[:, 1] + dy).clamp(0, res - 1)], -1) + 0.5
            corners[dx, dy] = transmittance_at(proj, opac, c, limits, torch.arange(n), res)
    return corners, frac


def bilinear(corners, frac):
    fx, fy = frac[:, 0], frac[:, 1]
    top = corners[0, 0] + fx * (corners[1, 0] - corners[0, 0])
    bottom = corners[0, 1] + fx * (corners[1, 1] - corners[0, 1])
    return top + fy * (bottom - top)


def round_off(n):
    # |d log T| <= (n - 1) u |log T| for a float32 sum of n same-sign terms, and T |log T| <= 1/e
    return n * EPS32 / math.e + 1e-6


SCENES = [(Light((1.5, 1.0, 2.0)), 0.0), (Light((1.5, 1.0, 2.0)), 0.03), (Light((-0.3, 0.5, 1.0), True), 0.02)]


@pytest.mark.parametrize("light,bias", SCENES)
def test_equals_the_exact_transmittance_interpolated_from_pixel_centres(light, bias):
    # depth is exact (bins at the occluders' own depths), so the only approximation is in the image:
    # the result is the bilinear interpolation of the exact transmittance at the four neighbouring pixel centres
    means, covs, opac = random_scene(400, 1)
    res = 64
    vis = light_visibility(means, covs, opac, light, bias=bias, resolution=res)
    corners, frac = corner_transmittance(means, covs, opac, light, bias, res)
    assert (vis - bilinear(corners, frac)).abs().max() <= round_off(400)


@pytest.mark.parametrize("light,bias", SCENES)
def test_error_against_the_exact_method_is_bounded_by_the_pixel_spread(light, bias):
    # a convex combination of the four corner values differs from T at the receiver by at most their spread
    means, covs, opac = random_scene(400, 2)
    res = 64
    vis = light_visibility(means, covs, opac, light, bias=bias, resolution=res)
    exact = light_visibility_exact(means, covs, opac, light, bias=bias, resolution=res)
    corners, _ = corner_transmittance(means, covs, opac, light, bias, res)
    spread = torch.stack([(t - exact).abs() for t in corners.values()]).max(0).values
    assert ((vis - exact).abs() - spread).max() <= round_off(400)


def test_per_gaussian_bias_and_chunking(monkeypatch):
    means, covs, opac = random_scene(300, 3)
    light = Light((1.0, -1.5, 2.0))
    bias = torch.rand(300, generator=torch.Generator().manual_seed(4)) * 0.05
    whole = light_visibility(means, covs, opac, light, bias=bias, resolution=48)
    monkeypatch.setattr(visibility, "CHUNK", 97)  # many chunks, boundaries inside Gaussians' footprints
    assert torch.equal(light_visibility(means, covs, opac, light, bias=bias, resolution=48), whole)
    corners, frac = corner_transmittance(means, covs, opac, light, bias, 48)
    assert (whole - bilinear(corners, frac)).abs().max() <= round_off(300)


def test_receivers_with_nothing_nearer_see_the_whole_light():
    means, covs, opac = random_scene(400, 5)
    light = Light((1.5, 1.0, 2.0))
    bias = 0.02
    vis = light_visibility(means, covs, opac, light, bias=bias, resolution=64)
    depth = project(means, covs, opac, light_camera(means, light, 64)).depths
    alone = depth - bias <= depth.min()  # no Gaussian strictly nearer than its depth minus the bias
    assert alone.sum() >= 1 and bool((vis[alone] == 1.0).all())


def grid(half, spacing, z):
    xs = torch.arange(-half, half + 1e-9, spacing)
    x, y = torch.meshgrid(xs, xs, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1), torch.full((x.numel(),), z)], -1)


def layer_transmittance_bound(opacity):
    """Max over a grid cell (spacing = sigma = 1) of the light let through by the cell's four nearest splats."""
    a, b = torch.meshgrid(torch.linspace(0, 1, 101), torch.linspace(0, 1, 101), indexing="ij")
    t = torch.ones_like(a)
    for cx, cy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        t = t * (1 - opacity * torch.exp(-0.5 * ((a - cx) ** 2 + (b - cy) ** 2)))
    return float(t.max())


def test_plane_above_a_plane_casts_its_shadow():
    # a square of Gaussians (sigma = spacing = 0.05, opacity 0.9) at height 1 over a floor at 0, light at height 3
    top, floor = grid(0.3, 0.05, 1.0), grid(1.0, 0.05, 0.0)
    means = torch.cat([top, floor])
    n_top = top.shape[0]
    covs = torch.cat([iso(n_top, 0.05), iso(floor.shape[0], 0.02)])
    opac = torch.full((means.shape[0],), 0.9)
    light, bias, res = Light((0.0, 0.0, 3.0)), 0.05, 128
    vis = light_visibility(means, covs, opac, light, bias=bias, resolution=res)
    exact = light_visibility_exact(means, covs, opac, light, bias=bias, resolution=res)
    assert bool((vis[:n_top] == 1.0).all())  # the top plane: nothing between it and the light
    cam = light_camera(means, light, res)
    pixel = 3.0 / cam.fx  # one light-view pixel on the floor (distance 3): the reach of the bilinear look-up
    # the floor sees the top magnified 1.5x (3 / (3 - 1)): the square's shadow is [-0.45, 0.45]^2, each splat's
    # cut-off (alpha = 1/255 at sqrt(2 ln(0.9 * 255)) sigma) reaches 1.5 * 0.05 * 3.29 beyond it
    reach = floor[:, :2].abs().max(-1).values
    outside = reach > 1.5 * (0.3 + 0.05 * math.sqrt(2 * math.log(0.9 * 255))) + pixel
    assert bool((vis[n_top:][outside] == 1.0).all()) and bool((exact[n_top:][outside] == 1.0).all())
    # at least one spacing inside the square, every point is under a full cell of four splats
    core = reach < 1.5 * (0.3 - 0.05) - pixel
    bound = layer_transmittance_bound(0.9)
    assert core.sum() > 100 and outside.sum() > 100
    assert float(vis[n_top:][core].max()) <= bound and float(exact[n_top:][core].max()) <= bound
    corners, _ = corner_transmittance(means, covs, opac, light, bias, res)
    spread = torch.stack([(t - exact).abs() for t in corners.values()]).max(0).values
    assert ((vis - exact).abs() - spread).max() <= round_off(means.shape[0])


def test_opaque_slab_blocks_the_light():
    # 4 layers of Gaussians (opacity 0.99, sigma = grid spacing h): every point of a layer is within h / sqrt(2)
    # of a centre, so one splat there has alpha >= 0.99 exp(-1/4) and each layer lets through <= 1 - 0.99 e^-1/4
    h = 0.04
    layers = [grid(0.4, h, 1.0 + 0.1 * k) for k in range(4)]
    receivers = grid(0.2, 0.05, 0.0)
    means = torch.cat(layers + [receivers])
    n_slab = sum(layer.shape[0] for layer in layers)
    covs = torch.cat([iso(n_slab, h), iso(receivers.shape[0], 0.01)])
    opac = torch.cat([torch.full((n_slab,), 0.99), torch.full((receivers.shape[0],), 0.5)])
    vis = light_visibility(means, covs, opac, Light((0.0, 0.0, 1.0), directional=True), bias=0.02, resolution=128)
    assert float(vis[n_slab:].max()) <= (1 - 0.99 * math.exp(-0.25)) ** 4
    assert bool((vis[n_slab - layers[-1].shape[0]: n_slab] == 1.0).all())  # the top layer is lit


def dyadic_scene(n, seed):
    # coordinates on a 1/256 grid: sums are exact in float32, so copies of the scene give the same light camera
    means, covs, opac = random_scene(n, seed)
    return torch.round(means * 256) / 256, covs, opac


def test_splatted_pairs_grow_linearly_with_the_number_of_gaussians():
    means, covs, opac = dyadic_scene(500, 6)
    light = Light((1.5, 1.0, 2.0))
    res = 64
    one = splat_count(means, covs, opac, light, res)
    four = splat_count(means.repeat(4, 1), covs.repeat(4, 1, 1), opac.repeat(4), light, res)
    assert four == 4 * one  # every Gaussian splats its own footprint: no term couples two Gaussians
    radii = project(means, covs, opac, light_camera(means, light, res)).radii
    assert one <= int(((2 * radii + 1) ** 2).sum())  # at most its cut-off square each
    # the pairwise reference compares receivers with occluders tile by tile: 16x the work for 4x the Gaussians
    def comparisons(m, c, o):
        proj = project(m, c, o, light_camera(m, light, res))
        tiles = (res + exact_module.TILE - 1) // exact_module.TILE
        occ = [t.numel() for t in tile_lists(proj.means2d, proj.radii, tiles, tiles, exact_module.TILE)]
        cell = (proj.means2d / exact_module.TILE).floor().long().clamp(0, tiles - 1)
        rec = torch.bincount(cell[:, 1] * tiles + cell[:, 0], minlength=tiles * tiles)
        return int((rec * torch.tensor(occ)).sum())
    assert comparisons(means.repeat(4, 1), covs.repeat(4, 1, 1), opac.repeat(4)) == 16 * comparisons(means, covs, opac)


def test_slope_scaled_bias_closed_form():
    # a flat receiver of largest scale s lit at angle theta from its normal: k s (1 + min(tan theta, cap))
    k, cap = visibility.SELF_SHADOW_SCALES, visibility.SELF_SHADOW_MAX_SLOPE
    angles = torch.tensor([0.0, 0.5, 1.0, 1.4, math.pi / 2])
    to_light = torch.stack([torch.sin(angles), torch.zeros(5), torch.cos(angles)], -1)
    normals = torch.tensor([0.0, 0.0, -1.0]).expand(5, 3)  # either sign of the normal
    bias = visibility.slope_scaled_bias(torch.full((5,), 0.1), normals, to_light)
    expected = k * 0.1 * (1 + torch.tan(angles).clamp(0, cap))
    expected[-1] = k * 0.1 * (1 + cap)  # grazing: capped
    torch.testing.assert_close(bias, expected, rtol=1e-5, atol=1e-6)


def sampled_floor_and_ball_model(centre, n_floor=3000, seed=0):
    """A model's own start on a floor of random points in [-1, 1]^2 (flat Gaussians, scale = point spacing) and a
    ball of radius 0.15 sampled on its surface around `centre`."""
    from relight.pointcloud import estimate_normals
    gen = torch.Generator().manual_seed(seed)
    floor = torch.cat([torch.rand(n_floor, 2, generator=gen) * 2 - 1, torch.zeros(n_floor, 1)], -1)
    d = torch.randn(600, 3, generator=gen)
    ball = centre + 0.15 * d / d.norm(dim=-1, keepdim=True)
    points = torch.cat([floor, ball])
    normals, spacing = estimate_normals(points)
    return RelightModel(points, normals, spacing), n_floor


@pytest.mark.parametrize("elevation", [80, 45, 30, 15])
def test_a_lit_floor_does_not_shadow_itself_and_a_ball_still_shadows_it(elevation):
    # the floor's own splats, seen from a low light, lie in front of their neighbours: a band of twice the largest
    # scale (the earlier bias) left the lit floor at mean transmittance 0.88 at 45 degrees and 0.48 at 15
    theta = math.radians(90 - elevation)
    light = Light((3 * math.sin(theta), 0.0, 3 * math.cos(theta)))
    lx, lz = light.position[0], light.position[2]
    height = 0.35  # on the line from the light to the floor point (-0.3, 0, 0): its shadow lands on the floor
    centre = torch.tensor([-0.3 + height / lz * (lx + 0.3), 0.0, height])
    model, n_floor = sampled_floor_and_ball_model(centre)
    vis = model.visibility(light)[:n_floor]
    floor = model.gaussians.means.detach()[:n_floor]
    # the ball's shadow on the floor, in closed form: points whose ray to the light passes within r of the centre
    to_light = torch.tensor(light.position) - floor
    t = ((centre - floor) * to_light).sum(-1) / (to_light * to_light).sum(-1)
    miss = (floor + t[:, None].clamp(0, 1) * to_light - centre).norm(dim=-1)
    away = (miss > 0.15 + 0.15) & (floor[:, :2].abs() < 0.9).all(-1)  # clear of the ball's shadow and the edges
    umbra = miss < 0.15 - 0.06
    assert away.sum() > 1000 and umbra.sum() > 5
    assert float(vis[away].mean()) >= 0.99 and float(torch.quantile(vis[away], 0.01)) >= 0.6
    assert float(vis[umbra].max()) <= 0.1


def test_negative_bias_is_refused():
    means, covs, opac = random_scene(10, 7)
    with pytest.raises(ValueError):
        light_visibility(means, covs, opac, Light((1.0, 1.0, 2.0)), bias=-0.01)


# --- RelightModel.visibility: computed once per light, recomputed when the geometry has moved enough -----------

def floor_and_blob_model():
    xs = torch.linspace(-1, 1, 15)
    x, y = torch.meshgrid(xs, xs, indexing="ij")
    floor = torch.stack([x.reshape(-1), y.reshape(-1), torch.zeros(x.numel())], -1)
    points = torch.cat([floor, torch.tensor([[0.0, 0.0, 0.5]])])
    normals = torch.tensor([0.0, 0.0, 1.0]).expand_as(points)
    return RelightModel(points, normals, torch.full((points.shape[0],), 0.15))


@pytest.fixture
def counted(monkeypatch):
    calls = []

    def counting(*args, **kw):
        calls.append(1)
        return light_visibility(*args, **kw)
    monkeypatch.setattr(model_module, "light_visibility", counting)
    return calls


def test_visibility_is_reused_until_the_geometry_moves_beyond_the_threshold(counted):
    model, light = floor_and_blob_model(), Light((1.0, 0.5, 2.0))
    g = model.gaussians
    first = model.visibility(light)
    assert len(counted) == 1 and model.visibility(light) is first
    distance = model._snapshot.distance
    radius = float((g.means - g.means.mean(0)).norm(dim=-1).max())
    assert distance == pytest.approx(model_module.STALE_PIXELS * 2 * radius / model_module.SHADOW_RES)
    assert distance <= model_module.STALE_PIXELS * shadow_pixel_size(g.means, light) * (1 + 1e-6)  # no coarser
    with torch.no_grad():
        g.means[-1] += torch.tensor([0.9 * distance, 0.0, 0.0])  # within the threshold
        g.opacity_logits += 0.01  # opacity change ~0.0016
        g.log_scales += 0.02  # covariance x 1.04: within 1 +- 0.136
    assert model.visibility(light) is first and len(counted) == 1
    with torch.no_grad():
        g.means[-1] += torch.tensor([0.2 * distance, 0.0, 0.0])  # 1.1 x the threshold from the snapshot
    second = model.visibility(light)
    assert len(counted) == 2 and second is not first
    with torch.no_grad():  # from the renewed snapshot: the covariances through their Cholesky factors
        bias = visibility.slope_scaled_bias(g.scales.max(-1).values, g.normals(), light.incidence(g.means)[0])
        torch.testing.assert_close(second, light_visibility(g.means, g.covariances(), g.opacities, light, bias=bias),
                                   rtol=0, atol=1e-5)


@pytest.mark.parametrize("change,recomputes", [("opacity", True), ("scale", True), ("rotation", True),
                                               ("small rotation", False)])
def test_opacity_and_shape_changes_beyond_their_thresholds_recompute(counted, change, recomputes):
    model, light = floor_and_blob_model(), Light((1.0, 0.5, 2.0))
    g = model.gaussians
    model.visibility(light)
    with torch.no_grad():
        if change == "opacity":  # 0.8 -> 0.86
            g.opacity_logits[3] = math.log(0.86 / 0.14)
        elif change == "scale":  # covariance x 1.21 along every axis: beyond 1 +- 0.136
            g.log_scales[3] += math.log(1.1)
        else:  # a flat Gaussian (scales 1 : 1 : 0.25) tilted about x: the thin axis sees the big one
            angle = 0.05 if change == "rotation" else 0.002
            # whitened covariance I + angle (s1 / s3 - s3 / s1) [[0, 1], [1, 0]] in (y, z): eigenvalues 1 +- 3.75 angle,
            # 0.19 (> 0.136) or 0.0075
            g.quats[3] = torch.tensor([math.cos(angle / 2), math.sin(angle / 2), 0.0, 0.0])
    model.visibility(light)
    assert len(counted) == (2 if recomputes else 1)


def test_a_changed_number_of_gaussians_recomputes(counted):
    model, light = floor_and_blob_model(), Light((1.0, 0.5, 2.0))
    model.visibility(light)
    g = model.gaussians
    model.gaussians = Gaussians(torch.cat([g.means.detach(), torch.tensor([[0.5, 0.5, 0.5]])]), 0.1, 0.8)
    vis = model.visibility(light)
    assert len(counted) == 2 and vis.shape == (len(g) + 1,)


def test_lights_computed_from_one_geometry_share_its_snapshot(counted):
    model = floor_and_blob_model()
    lights = [Light((1.0, 0.5, 2.0)), Light((-1.0, 0.5, 2.0)), Light((0.0, 1.0, 1.0), directional=True)]
    for light in lights * 2:
        model.visibility(light)
    assert len(counted) == 3 and set(model._vis_cache) == set(lights)


def test_a_lights_shadows_do_not_depend_on_when_it_was_first_asked_for(counted):
    # two ranks of a distributed run adapt different lights; the same geometry must give them the same shadows
    a, b = floor_and_blob_model(), floor_and_blob_model()
    first, second = Light((1.0, 0.5, 2.0)), Light((-1.0, 0.5, 2.0))
    for m in (a, b):  # both ranks render at every step (fitting, their share of a meta-batch)
        m.visibility(first)
    a.visibility(second)  # rank a also adapted `second` before the geometry moved a little; rank b did not
    for m in (a, b):
        with torch.no_grad():
            m.gaussians.means[-1] += torch.tensor([0.5 * a._snapshot.distance, 0.0, 0.0])  # within the threshold
    assert torch.equal(a.visibility(second), b.visibility(second))


def test_the_cache_travels_with_the_state_dict(counted):
    model, light = floor_and_blob_model(), Light((1.0, 0.5, 2.0))
    first = model.visibility(light)
    with torch.no_grad():
        model.gaussians.means[-1] += torch.tensor([0.5 * model._snapshot.distance, 0.0, 0.0])
    state = model.state_dict()
    restored = floor_and_blob_model()
    restored.load_state_dict(state)  # the moved geometry and the visibility computed before the move
    assert torch.equal(restored.visibility(light), first) and len(counted) == 1
    old = {k: v for k, v in state.items() if k != "_extra_state"}  # a checkpoint from before the cache was saved
    fresh = floor_and_blob_model()
    fresh.load_state_dict(old)
    fresh.visibility(light)
    assert len(counted) == 2


def test_differentiable_in_the_opacities():
    # the depth order and the cut-offs are piecewise constant; within them the map is smooth in the alphas
    # (not tested in the means: the light camera follows the means and is held fixed by autograd)
    means, covs, opac = random_scene(40, 8)
    light = Light((1.5, 1.0, 2.0))

    def vis(o):
        return light_visibility(means.double(), covs.double(), o, light, bias=0.02, resolution=32)
    assert torch.autograd.gradcheck(vis, (opac.double().requires_grad_(),), eps=1e-6, atol=1e-5)
