"""Hypergradients of `solve` against the ridge-regression closed form and finite differences."""
import pytest
import torch

import metatune as mt

DEFAULT_DTYPE = torch.float64
torch.set_default_dtype(DEFAULT_DTYPE)  # for the constants below; restored at the end of the module


def ridge_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(40, 5, generator=g)
    y = X @ torch.randn(5, generator=g) + 0.1 * torch.randn(40, generator=g)
    Xv = torch.randn(30, 5, generator=g)
    yv = Xv @ torch.randn(5, generator=g)
    return X, y, Xv, yv


def ridge_closed_form(X, y, Xv, yv, lam):
    """Outer loss and d outer / d lam from w* = (X^T X + lam I)^-1 X^T y, dw*/dlam = -(X^T X + lam I)^-1 w*."""
    A = X.T @ X + lam * torch.eye(X.shape[1])
    w = torch.linalg.solve(A, X.T @ y)
    r = Xv @ w - yv
    dw = -torch.linalg.solve(A, w)
    return 0.5 * r @ r, (Xv.T @ r) @ dw


def ridge_inner(w, lam, X, y):
    r = X @ w - y
    return 0.5 * r @ r + 0.5 * lam * w @ w


CASES = [
    ("gd", "unroll", {}),
    ("gd", "truncated", {"truncate": 300}),
    ("gd", "implicit", {"linear_solver": "cg"}),
    ("gd", "implicit", {"linear_solver": "neumann", "linear_steps": 5000}),
    ("adam", "implicit", {"steps": 3000, "lr": 0.05}),
    ("lbfgs", "implicit", {"steps": 100, "lr": 1.0}),
    ("gauss_newton", "implicit", {"steps": 3, "lr": 1.0}),
    ("gauss_newton", "unroll", {"steps": 3, "lr": 1.0}),
]


@pytest.mark.parametrize("solver,mode,opts", CASES, ids=[f"{s}-{m}-{o.get('linear_solver', '')}" for s, m, o in CASES])
def test_ridge_hypergradient_matches_closed_form(solver, mode, opts):
    X, y, Xv, yv = ridge_data()
    lam = torch.tensor(2.0, requires_grad=True)
    L = torch.linalg.eigvalsh(X.T @ X).max() + 2.0
    kw = {"steps": 600, "lr": float(1.0 / L)} | opts
    if solver == "gauss_newton":
        def inner(w, lam):  # residual form of the same objective
            return torch.cat([X @ w - y, lam.sqrt() * w])
    else:
        def inner(w, lam):
            return ridge_inner(w, lam, X, y)
    w = mt.solve(inner, torch.zeros(5), lam, solver=solver, hypergrad=mode, **kw)
    outer = 0.5 * ((Xv @ w - yv) ** 2).sum()
    (grad,) = torch.autograd.grad(outer, lam)
    ref_outer, ref_grad = ridge_closed_form(X, y, Xv, yv, 2.0)
    # What the solver guarantees is stationarity, not a bit pattern (Adam at a constant step settles in a
    # rounding-dependent neighbourhood of w*). With the inner loss mu-strongly convex, |w - w*| <= |grad f(w)| / mu,
    # and the outer loss is quadratic in w, so its error is bounded by |g*| d + |Xv^T Xv| d^2 / 2.
    wd = w.detach()
    A = X.T @ X + 2.0 * torch.eye(5)
    stationarity = float((A @ wd - X.T @ y).norm())
    assert stationarity <= 1e-6 * float((X.T @ y).norm()), "the solver did not reach the optimum"
    d = stationarity / float(torch.linalg.eigvalsh(A).min())
    w_star = torch.linalg.solve(A, X.T @ y)
    g_star = float((Xv.T @ (Xv @ w_star - yv)).norm())
    bound = g_star * d + 0.5 * float(torch.linalg.matrix_norm(Xv.T @ Xv, 2)) * d * d
    assert abs(float(outer.detach()) - float(ref_outer)) <= max(bound, 1e-9 * float(ref_outer))
    if mode == "implicit":  # the implicit theorem at the returned point: -(Xv^T r(w))^T A^-1 dgrad/dlam, dgrad/dlam = w
        ref_grad = -(Xv.T @ (Xv @ wd - yv)) @ torch.linalg.solve(A, wd)
    assert float(grad) == pytest.approx(float(ref_grad), rel=1e-6)


def test_hypergradient_none_is_detached_and_unroll_reaches_init():
    X, y, _, _ = ridge_data()
    lam = torch.tensor(1.0, requires_grad=True)
    w = mt.solve(lambda w, l: ridge_inner(w, l, X, y), torch.zeros(5), lam, hypergrad="none", lr=0.01, steps=5)
    assert not w.requires_grad
    init = torch.zeros(5, requires_grad=True)
    w = mt.solve(lambda w, l: ridge_inner(w, l, X, y), init, lam, hypergrad="unroll", lr=0.01, steps=2)
    (g_init,) = torch.autograd.grad(w.sum(), init)
    # two GD steps: w2 = (I - aA)^2 w0 + ..., so d sum(w2)/d w0 = (I - aA)^2 1 with A = X^T X + lam I
    M = torch.eye(5) - 0.01 * (X.T @ X + torch.eye(5))
    torch.testing.assert_close(g_init, M.T @ M.T @ torch.ones(5))


def logistic_problem():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(60, 4, generator=g)
    yb = (X @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.5 * torch.randn(60, generator=g) > 0).double()
    Xv = torch.randn(40, 4, generator=g)
    yv = (Xv @ torch.tensor([1.0, -2.0, 0.5, 0.0]) > 0).double()

    def inner(params, log_lam):
        w, b = params
        z = X @ w + b
        nll = torch.nn.functional.binary_cross_entropy_with_logits(z, yb, reduction="sum")
        return nll + 0.5 * torch.exp(log_lam) * (w * w).sum()

    def outer(params):
        w, b = params
        return torch.nn.functional.binary_cross_entropy_with_logits(Xv @ w + b, yv, reduction="sum")

    return inner, outer


@pytest.mark.parametrize("mode", ["implicit", "unroll"])
def test_logistic_regression_hypergradient_matches_finite_differences(mode):
    inner, outer = logistic_problem()
    init = (torch.zeros(4), torch.zeros(()))
    kw = dict(solver="lbfgs", steps=60, lr=1.0) if mode == "implicit" else dict(solver="gd", steps=1500, lr=0.02)

    def f(log_lam):
        return outer(mt.solve(inner, init, log_lam, hypergrad=mode, **kw))

    log_lam = torch.tensor(0.3, requires_grad=True)
    (grad,) = torch.autograd.grad(f(log_lam), log_lam)
    eps = 1e-4
    with torch.no_grad():
        fd = (outer(mt.solve(inner, init, torch.tensor(0.3 + eps), hypergrad="none", **kw))
              - outer(mt.solve(inner, init, torch.tensor(0.3 - eps), hypergrad="none", **kw))) / (2 * eps)
    assert float(grad) == pytest.approx(float(fd), rel=1e-5)


def test_solve_returns_info_and_stops_at_tol():
    X, y, _, _ = ridge_data()
    _, info = mt.solve(lambda w, l: ridge_inner(w, l, X, y), torch.zeros(5), torch.tensor(1.0),
                       solver="lbfgs", lr=1.0, steps=500, tol=1e-10, return_info=True)
    assert info.steps < 500 and info.grad_norm < 1e-10


torch.set_default_dtype(torch.float32)
