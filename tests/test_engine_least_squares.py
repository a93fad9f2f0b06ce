"""`solve_least_squares` (theseus) hypergradients against central finite differences and `solve`."""
import pytest
import torch

import metatune as mt

DEFAULT_DTYPE = torch.float64
torch.set_default_dtype(DEFAULT_DTYPE)  # for the constants below; restored at the end of the module

T = torch.linspace(0, 1, 12)
Y = 1.5 * torch.exp(-0.8 * T) + 0.05 * torch.sin(7 * T)


def residual(p, w):
    """Weighted residuals of y = a exp(b t): hparams are the per-point weights."""
    a, b = p[0], p[1]
    return w.sqrt() * (a * torch.exp(b * T) - Y)


def outer(p):
    return (p[0] - 1.4) ** 2 + (p[1] + 0.7) ** 2


def fd_grad(w0, eps=1e-6):
    g = torch.zeros_like(w0)
    for i in range(w0.numel()):
        e = torch.zeros_like(w0)
        e[i] = eps
        fp = outer(mt.solve_least_squares(residual, torch.tensor([1.0, 0.0]), w0 + e, steps=50))
        fm = outer(mt.solve_least_squares(residual, torch.tensor([1.0, 0.0]), w0 - e, steps=50))
        g[i] = (fp - fm) / (2 * eps)
    return g


W0 = torch.linspace(0.5, 1.5, 12)
FD = fd_grad(W0)


@pytest.mark.parametrize("backward,rtol", [("unroll", 1e-5)])
def test_theseus_unrolled_hypergradient_matches_finite_differences(backward, rtol):
    w = W0.clone().requires_grad_()
    p = mt.solve_least_squares(residual, torch.tensor([1.0, 0.0]), w, backward=backward, steps=50)
    (g,) = torch.autograd.grad(outer(p), w)
    torch.testing.assert_close(g, FD, rtol=rtol, atol=rtol * float(FD.abs().max()))


def test_theseus_implicit_uses_gauss_newton_hessian_while_engine_is_exact():
    """On a fit whose residual is not zero at the optimum, theseus's implicit mode differentiates with
    J^T J instead of the Hessian: a few percent off finite differences. The engine's implicit mode
    with the Gauss-Newton solver uses exact Hessian-vector products and matches them."""
    w = W0.clone().requires_grad_()
    g_th = torch.autograd.grad(outer(mt.solve_least_squares(residual, torch.tensor([1.0, 0.0]), w, steps=50)), w)[0]
    g_mt = torch.autograd.grad(outer(mt.solve(residual, torch.tensor([1.0, 0.0]), w, solver="gauss_newton",
                                              lr=1.0, steps=50)), w)[0]
    torch.testing.assert_close(g_mt, FD, rtol=1e-5, atol=1e-5 * float(FD.abs().max()))
    rel_th = float((g_th - FD).norm() / FD.norm())
    assert 1e-4 < rel_th < 0.1


def test_solutions_agree_with_engine_gauss_newton():
    p_th = mt.solve_least_squares(residual, torch.tensor([1.0, 0.0]), W0, steps=50)
    p_mt = mt.solve(residual, torch.tensor([1.0, 0.0]), W0, solver="gauss_newton", lr=1.0, steps=50, hypergrad="none")
    torch.testing.assert_close(p_th, p_mt, rtol=1e-8, atol=1e-10)


# Weighted polynomial least squares: residuals linear in the parameters, so J^T J is the exact Hessian and
# every backward mode has the closed form x* = (A^T W A)^-1 A^T W y to match.
A = torch.stack([torch.ones_like(T), T, T**2], dim=1)


def poly_residual(c, w):
    return w.sqrt() * (A @ c - Y)


def poly_closed_form_grad(w0):
    w = w0.clone().requires_grad_()
    c = torch.linalg.solve(A.T @ (w[:, None] * A), A.T @ (w * Y))
    return torch.autograd.grad(((c - torch.tensor([1.0, -1.0, 0.5])) ** 2).sum(), w)[0]


@pytest.mark.parametrize("backward,rtol", [("implicit", 1e-8), ("unroll", 1e-8), ("truncated", 1e-8), ("dlm", 2e-2)])
def test_theseus_backward_modes_match_weighted_least_squares_closed_form(backward, rtol):
    ref = poly_closed_form_grad(W0)
    w = W0.clone().requires_grad_()
    c = mt.solve_least_squares(poly_residual, torch.zeros(3), w, backward=backward, steps=5)
    (g,) = torch.autograd.grad(((c - torch.tensor([1.0, -1.0, 0.5])) ** 2).sum(), w)
    torch.testing.assert_close(g, ref, rtol=rtol, atol=rtol * float(ref.abs().max()))


def test_batched_problems_solve_independently():
    inits = torch.tensor([[1.0, 0.0], [2.0, -1.0]])
    ws = torch.stack([W0, W0.flip(0)])

    def res_b(p, w):
        return w.sqrt() * (p[:, :1] * torch.exp(p[:, 1:] * T) - Y)

    pb = mt.solve_least_squares(res_b, inits, ws, steps=50)
    for i in range(2):
        torch.testing.assert_close(pb[i], mt.solve_least_squares(residual, inits[i], ws[i], steps=50), rtol=1e-7, atol=1e-9)


torch.set_default_dtype(torch.float32)
