"""Shadows: one occluder against the closed-form transmittance, and shadows that move with the light."""
import math

import torch

from relight.light import Light
from relight.visibility import light_visibility


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
