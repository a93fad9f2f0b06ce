"""Bad input to `solve` gets a MetatuneError that names the problem, not a traceback from inside torch."""
import pytest
import torch

import metatune as mt


def quad(x, h):
    return ((x - h) ** 2).sum()


@pytest.mark.parametrize("call,match", [
    (lambda: mt.solve(quad, torch.zeros(3), torch.ones(4)), "shape mismatch"),
    (lambda: mt.solve(lambda x, h: (x - h) ** 2, torch.zeros(3), torch.ones(3)), "must return a scalar"),
    (lambda: mt.solve(lambda x, h: ((x - h) ** 2).sum(), torch.zeros(3), torch.ones(3), hypergrad="magic"), "unknown hypergrad mode"),
    (lambda: mt.solve(quad, torch.zeros(3), torch.ones(3), solver="newton"), "unknown solver"),
    (lambda: mt.solve(quad, torch.zeros(3), torch.ones(3), linear_solver="lu"), "unknown linear_solver"),
    (lambda: mt.solve(quad, [1.0, 2.0], torch.ones(3)), "init must be a Tensor"),
    (lambda: mt.solve(lambda x, h: torch.log(x - 10).sum(), torch.zeros(3), torch.ones(3), hypergrad="none"), "NaN"),
    (lambda: mt.solve(quad, torch.zeros(3), torch.ones(3), lr=10.0, steps=500, hypergrad="none"), "NaN/Inf at iteration"),
    (lambda: mt.solve(lambda x, h: x.sum() * h, torch.zeros(3), torch.ones(()), solver="gauss_newton",
                      hypergrad="none"), "residual vector|must return"),
    (lambda: mt.solve_least_squares(lambda x, h: x - h, torch.zeros(3), torch.ones(3), backward="fast"), "unknown backward mode"),
    (lambda: mt.solve_least_squares(lambda x, h: x - h, torch.zeros(3), torch.ones(4)), "shape mismatch"),
])
def test_bad_input(call, match):
    with pytest.raises(mt.MetatuneError, match=match):
        call()


def test_implicit_refuses_a_saddle():
    """At a saddle point the implicit function theorem's CG solve has no positive-definite system."""
    h = torch.tensor([1.0, 1.0], requires_grad=True)
    x = mt.solve(lambda x, h: (h * torch.tensor([1.0, -1.0]) * x * x).sum(), torch.zeros(2), h, steps=1)
    with pytest.raises(mt.MetatuneError, match="not positive definite"):
        (x.sum() + (x * h).sum()).backward()


def test_plain_minimisation_without_hparams():
    x = mt.solve(lambda x, h: ((x - 3.0) ** 2).sum(), torch.zeros(2), None, solver="lbfgs", lr=1.0, steps=20)
    torch.testing.assert_close(x, torch.full((2,), 3.0))
