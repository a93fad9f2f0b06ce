"""One-bounce interreflection against closed-form form factors, with and without occluders."""
import math

import torch

from relight.interreflection import Box, Sphere, bounce_irradiance, bounce_transfer, segments_blocked


def square_emitter(side: float, height: float, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n x n patches of a side x side square at z = height, centred over the origin, facing down."""
    c = (torch.arange(n, dtype=torch.float64) + 0.5) / n * side - side / 2
    gx, gy = torch.meshgrid(c, c, indexing="ij")
    centres = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.full((n * n,), height, dtype=torch.float64)], -1)
    normals = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand(n * n, 3)
    areas = torch.full((n * n,), (side / n) ** 2, dtype=torch.float64)
    return centres, normals, areas


def corner_form_factor(a: float, b: float, c: float) -> float:
    """Differential area to a parallel a x b rectangle at distance c, its normal through a corner (closed form)."""
    x, y = a / c, b / c
    return (x / math.sqrt(1 + x * x) * math.atan(y / math.sqrt(1 + x * x))
            + y / math.sqrt(1 + y * y) * math.atan(x / math.sqrt(1 + y * y))) / (2 * math.pi)


ORIGIN = torch.zeros(1, 3, dtype=torch.float64)
UP = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)


def test_parallel_square_matches_the_closed_form_form_factor():
    side, d = 1.0, 0.6
    expect = 4 * corner_form_factor(side / 2, side / 2, d)
    got = float(bounce_transfer(ORIGIN, UP, *square_emitter(side, d, 48), solids=[]).sum())
    assert abs(got - expect) / expect < 0.005
    # radiance 0.5 in red only: the gathered irradiance is 0.5 F in red, nothing else
    t = bounce_transfer(ORIGIN, UP, *square_emitter(side, d, 48), solids=[])
    e = bounce_irradiance(t, torch.tensor([[0.5, 0.0, 0.0]], dtype=torch.float64).expand(48 * 48, 3))
    assert torch.allclose(e[0], torch.tensor([0.5 * expect, 0.0, 0.0], dtype=torch.float64), rtol=0.005)


def test_one_coaxial_disk_patch_is_exact_and_a_huge_emitter_gives_the_full_hemisphere():
    radius, d = 0.3, 0.5
    t = bounce_transfer(ORIGIN, UP, torch.tensor([[0.0, 0.0, d]], dtype=torch.float64),
                        torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64),
                        torch.tensor([math.pi * radius**2], dtype=torch.float64), solids=[])
    assert abs(float(t) - radius**2 / (d**2 + radius**2)) < 1e-12
    big = float(bounce_transfer(ORIGIN, UP, *square_emitter(40.0, 1.0, 400), solids=[]).sum())
    assert abs(big - 4 * corner_form_factor(20.0, 20.0, 1.0)) < 0.005 and 0.99 < big <= 1.0  # nearly the hemisphere


def test_a_box_blocking_half_the_emitter_halves_the_irradiance():
    side, d = 1.0, 0.6
    emitter = square_emitter(side, d, 48)
    free = float(bounce_transfer(ORIGIN, UP, *emitter, solids=[]).sum())
    half = Box((0.0, -10.0, 0.4 * d), (10.0, 10.0, 0.6 * d))  # every segment to a patch with x > 0 crosses it
    got = float(bounce_transfer(ORIGIN, UP, *emitter, solids=[half]).sum())
    assert abs(got - free / 2) / free < 1e-9


def test_a_sphere_on_the_axis_removes_the_form_factor_of_its_shadow_disk():
    side, d, rho = 1.0, 0.6, 0.1
    emitter = square_emitter(side, d, 96)
    free = float(bounce_transfer(ORIGIN, UP, *emitter, solids=[]).sum())
    got = float(bounce_transfer(ORIGIN, UP, *emitter, solids=[Sphere((0.0, 0.0, d / 2), rho)]).sum())
    sin_half = rho / (d / 2)  # the sphere subtends a cone of this sine of half-angle; its disk's form factor is sin^2
    assert abs((free - got) - sin_half**2) / sin_half**2 < 0.03


def test_points_on_a_solid_surface_are_not_blocked_by_it_but_segments_through_it_are():
    box = Box((-0.5, -0.5, 0.0), (0.5, 0.5, 1.0))
    starts = torch.tensor([[0.0, 0.0, 1.0], [0.0, -0.5, 0.5]])  # on the top and on a side
    ends = torch.tensor([[0.3, 0.2, 2.0], [0.0, -2.0, 1.5], [0.0, 2.0, 0.5]])
    blocked = segments_blocked(starts, ends, [box])
    assert blocked.tolist() == [[False, False, True], [True, False, True]]  # side -> over the top crosses the box
    ball = Sphere((0.0, 0.0, 0.0), 1.0)
    blocked = segments_blocked(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, -3.0]]),
                               [ball])
    assert blocked.tolist() == [[False, True]]
