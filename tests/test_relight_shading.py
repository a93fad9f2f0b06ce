"""Blinn-Phong with inverse-square point lights and directional lights, against hand-computed values."""
import math

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
