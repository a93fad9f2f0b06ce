"""Blinn-Phong with inverse-square point lights and directional lights, against hand-computed values."""
import math

import pytest
import torch

from relight.light import Light
from relight.shading import blinn_phong


def shade(point, normal, eye, light, albedo=(0.6, 0.4, 0.2), ks=0.5, shin=10.0, amb=(0.01, 0.02, 0.03),
          intensity=(2.0, 2.0, 2.0), vis=1.0):
    return blinn_phong(torch.tensor([point]), torch.tensor([normal]), torch.tensor(eye), torch.tensor([albedo]),
                       torch.tensor([[ks]]), torch.tensor([[shin]]), torch.tensor([amb]), light,
                       torch.tensor(intensity), torch.tensor([vis]))[0]


def closed_form(n, l, v, r2, albedo, ks, shin, amb, inten, vis=1.0):
    unit = lambda a: [x / math.sqrt(sum(y * y for y in a)) for x in a]  # noqa: E731
    n, l, v = unit(n), unit(l), unit(v)
    h = unit([a + b for a, b in zip(l, v)])
    ndl = max(sum(a * b for a, b in zip(n, l)), 0.0)
    ndh = max(sum(a * b for a, b in zip(n, h)), 0.0)
    spec = ks * ndh**shin if ndl > 0 else 0.0
    return [am + vis * i / r2 * (al * ndl + spec) for am, al, i in zip(amb, albedo, inten)]


def test_point_light_matches_closed_form():
    out = shade((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (2.0, 0.0, 2.0), Light((1.0, 1.0, 3.0)))
    expect = closed_form((0, 0, 1), (1, 1, 3), (2, 0, 2), 11.0, (0.6, 0.4, 0.2), 0.5, 10.0, (0.01, 0.02, 0.03), (2, 2, 2))
    assert torch.allclose(out, torch.tensor(expect), atol=1e-6)


def test_inverse_square_falloff():
    near = shade((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 1.0), Light((0.0, 0.0, 1.0)), amb=(0, 0, 0))
    far = shade((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 1.0), Light((0.0, 0.0, 2.0)), amb=(0, 0, 0))
    assert torch.allclose(near / far, torch.full((3,), 4.0), rtol=1e-5)


def test_directional_light_has_no_falloff_and_matches_closed_form():
    d = Light((0.0, 1.0, 1.0), directional=True)
    a = shade((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 1.0), d)
    b = shade((5.0, -3.0, 0.0), (0.0, 0.0, 1.0), (6.0, -3.0, 1.0), d)
    expect = closed_form((0, 0, 1), (0, 1, 1), (1, 0, 1), 1.0, (0.6, 0.4, 0.2), 0.5, 10.0, (0.01, 0.02, 0.03), (2, 2, 2))
    assert torch.allclose(a, torch.tensor(expect), atol=1e-6) and torch.allclose(a, b, atol=1e-6)


def test_light_behind_surface_and_shadowed_points_get_only_ambient():
    amb = (0.01, 0.02, 0.03)
    below = shade((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 1.0), Light((0.0, 0.0, -1.0)), amb=amb)
    shadowed = shade((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 1.0), Light((0.0, 0.0, 1.0)), amb=amb, vis=0.0)
    assert torch.allclose(below, torch.tensor(amb)) and torch.allclose(shadowed, torch.tensor(amb))


def test_normal_is_flipped_towards_the_viewer():
    up = shade((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 2.0), Light((0.5, 0.5, 2.0)))
    down = shade((0.0, 0.0, 0.0), (0.0, 0.0, -1.0), (1.0, 0.0, 2.0), Light((0.5, 0.5, 2.0)))
    assert torch.allclose(up, down)


def test_light_power_scales_the_direct_light_per_channel():
    base = shade((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (2.0, 0.0, 2.0), Light((1.0, 1.0, 3.0)), amb=(0, 0, 0))
    tinted = shade((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (2.0, 0.0, 2.0), Light((1.0, 1.0, 3.0), power=(2.0, 1.0, 0.5)),
                   amb=(0, 0, 0))
    assert torch.allclose(tinted, base * torch.tensor([2.0, 1.0, 0.5]), rtol=1e-6)
    assert Light((1.0, 1.0, 3.0), power=(2.0, 1.0, 0.5)) == Light((1.0, 1.0, 3.0))  # one light condition


def test_a_models_directional_light_is_as_bright_as_its_point_lights():
    # a model trained under point lights at distance r: a directional light from the same direction delivers
    # what the point light delivers at the Gaussians' centre (it used to be r^2 = 5-6x brighter)
    from relight.model import RelightModel
    pts = torch.tensor([[0.0, 0.0, 0.0]])
    model = RelightModel(pts, torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([0.05]))
    direction = torch.tensor([0.3, -0.4, 1.0]) / torch.tensor([0.3, -0.4, 1.0]).norm()
    r = 2.7
    model.set_light_distance([Light(tuple((r * direction).tolist()))])
    assert float(model.light_distance) == pytest.approx(r, rel=1e-6)
    from relight.camera import Camera, look_at
    cam = Camera.from_fov(look_at(torch.tensor([2.0, 1.0, 2.0]), torch.zeros(3)), 0.7, 8, 8)
    with torch.no_grad():
        point = model.colors(cam, Light(tuple((r * direction).tolist())), model.light_init())
        sun = model.colors(cam, Light(tuple(direction.tolist()), directional=True), model.light_init())
    assert torch.allclose(point, sun, rtol=1e-5)
