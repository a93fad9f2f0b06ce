"""Composable derivatives: double backward through implicit solves and rollouts (against closed forms, finite
differences and plain autograd), second-order MAML through them, and torch.func refusing with a clear error."""
import pytest
import torch

import metatune as mt

D = torch.float64


def ridge():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 5, generator=g, dtype=D)
    y = X @ torch.randn(5, generator=g, dtype=D) + 0.1 * torch.randn(40, generator=g, dtype=D)
    Xv = torch.randn(30, 5, generator=g, dtype=D)
    yv = Xv @ torch.randn(5, generator=g, dtype=D)
    return X, y, Xv, yv


@pytest.mark.parametrize("solver, kw", [("lbfgs", {"steps": 100, "lr": 1.0}),
                                        ("gd", {"steps": 3000, "lr": 0.005, "linear_solver": "neumann",
                                                "linear_steps": 5000})])
def test_second_derivative_of_the_ridge_validation_loss_in_lambda_matches_the_closed_form(solver, kw):
    X, y, Xv, yv = ridge()
    lam = torch.tensor(2.0, dtype=D, requires_grad=True)
    w = mt.solve(lambda w, l: 0.5 * ((X @ w - y) ** 2).sum() + 0.5 * l * (w * w).sum(), torch.zeros(5, dtype=D),
                 lam, solver=solver, hypergrad="implicit", tol=1e-13, **kw)
    loss = 0.5 * ((Xv @ w - yv) ** 2).sum()
    (d1,) = torch.autograd.grad(loss, lam, create_graph=True)
    (d2,) = torch.autograd.grad(d1, lam)
    # w(l) = A^-1 X^T y with A = X^T X + l I:  w' = -A^-1 w,  w'' = 2 A^-2 w
    A = X.T @ X + 2.0 * torch.eye(5, dtype=D)
    ws = torch.linalg.solve(A, X.T @ y)
    r = Xv @ ws - yv
    w1 = -torch.linalg.solve(A, ws)
    w2 = 2 * torch.linalg.solve(A, torch.linalg.solve(A, ws))
    assert float(d1) == pytest.approx(float(r @ Xv @ w1), rel=1e-8)
    assert float(d2) == pytest.approx(float((Xv @ w1) @ (Xv @ w1) + r @ Xv @ w2), rel=1e-7)


def test_second_derivative_of_a_logistic_hyperparameter_matches_finite_differences():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(60, 4, generator=g, dtype=D)
    yb = (X @ torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=D) > 0).to(D)
    Xv = torch.randn(40, 4, generator=g, dtype=D)
    yv = (Xv @ torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=D) > 0).to(D)

    def inner(w, log_lam):
        nll = torch.nn.functional.binary_cross_entropy_with_logits(X @ w, yb, reduction="sum")
        return nll + 0.5 * torch.exp(log_lam) * (w * w).sum()

    def first(log_lam, create):
        w = mt.solve(inner, torch.zeros(4, dtype=D), log_lam, solver="lbfgs", steps=100, lr=1.0, tol=1e-13,
                     hypergrad="implicit")
        outer = torch.nn.functional.binary_cross_entropy_with_logits(Xv @ w, yv, reduction="sum")
        return torch.autograd.grad(outer, log_lam, create_graph=create)[0]

    x = torch.tensor(0.3, dtype=D, requires_grad=True)
    (d2,) = torch.autograd.grad(first(x, True), x)
    eps = 1e-4
    fd = (first(torch.tensor(0.3 + eps, dtype=D, requires_grad=True), False)
          - first(torch.tensor(0.3 - eps, dtype=D, requires_grad=True), False)) / (2 * eps)
    assert float(d2) == pytest.approx(float(fd), rel=1e-5)


def pendulum():
    def step(x, u):
        return torch.stack([x[..., 0] + 0.05 * x[..., 1], x[..., 1] + 0.05 * (u[..., 0] - torch.sin(x[..., 0]))], -1)

    def policy(x, t, k):
        return -(k * x).sum(-1, keepdim=True)

    def cost(x, u, t):
        return (x ** 2).sum(-1) + 0.1 * (u ** 2).sum(-1)

    return step, policy, cost, torch.tensor([[1.0, 0.0], [0.5, -0.3]], dtype=D)


@pytest.mark.parametrize("grad", ["adjoint", "forward"])
def test_the_hessian_of_a_rollout_cost_in_the_gains_equals_autograds(grad):
    step, policy, cost, x0 = pendulum()

    def hessian(mode):
        k = torch.tensor([1.0, 0.5], dtype=D, requires_grad=True)
        out = mt.rollout(step, x0, policy, k, 60, grad=mode, cost=cost, store_states=False)
        (g,) = torch.autograd.grad(out.cost.sum(), k, create_graph=True)
        return g.detach(), torch.stack([torch.autograd.grad(g[i], k, retain_graph=True)[0] for i in range(2)])

    g_ref, h_ref = hessian("autograd")
    g, h = hessian(grad)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=0)
    assert torch.allclose(h, h.T, rtol=1e-10)


def test_second_order_maml_through_an_adjoint_rollout_equals_autograd():
    step, policy, cost, x0 = pendulum()

    def meta_gradient(mode):
        def loss(k, scale):
            return mt.rollout(step, x0 * scale, policy, k, 30, grad=mode, cost=cost).cost.sum()

        cfg = mt.MetaConfig(method="maml", inner_steps=2, inner_lr=0.01, outer_lr=0.1, meta_batch=2)
        tuner = mt.MetaTuner(torch.tensor([1.0, 0.5], dtype=D), loss, sample_tasks=lambda n: [1.0, 0.7][:n],
                             config=cfg)
        tuner.train(1, progress=False)
        return tuner.init.values[0].detach()

    torch.testing.assert_close(meta_gradient("adjoint"), meta_gradient("autograd"), rtol=1e-10, atol=0)


def test_torch_func_transforms_get_a_clear_error_naming_the_alternative():
    X, y, _, _ = ridge()

    def through_solve(lam):
        w = mt.solve(lambda w, l: 0.5 * ((X @ w - y) ** 2).sum() + 0.5 * l * (w * w).sum(), torch.zeros(5, dtype=D),
                     lam, solver="gd", steps=20, lr=0.005, hypergrad="implicit")
        return (w * w).sum()

    with pytest.raises(mt.MetatuneError, match="torch.func transforms.*torch.autograd.grad"):
        torch.func.grad(through_solve)(torch.tensor(2.0, dtype=D))
    step, policy, cost, x0 = pendulum()

    def through_rollout(mode):
        return lambda k: mt.rollout(step, x0, policy, k, 20, grad=mode, cost=cost).cost.sum()

    with pytest.raises(mt.MetatuneError, match="grad='autograd'"):
        torch.func.grad(through_rollout("adjoint"))(torch.tensor([1.0, 0.5], dtype=D))
    k = torch.tensor([1.0, 0.5], dtype=D, requires_grad=True)
    (ref,) = torch.autograd.grad(through_rollout("autograd")(k), k)
    torch.testing.assert_close(torch.func.grad(through_rollout("autograd"))(k.detach()), ref)


@pytest.mark.parametrize("backtrack", [False, True])
def test_fd_hessian_meta_gradient_equals_second_order_autograd_where_first_order_is_off(backtrack):
    """MetaConfig.fd_hessian (first-order inner steps, Hessian-vector products by differences of gradients) gives
    the exact second-order meta-gradient of the start and the Meta-SGD step sizes, trust region and a halved
    step included; on this loss the first-order one is off by tens of percent."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 3, 3, generator=g, dtype=D)
    calls = [0] * 4

    def inner(p, t):  # curvature changes along the steps; with `backtrack`, each task's first step "diverges"
        calls[t] += 1
        if backtrack and calls[t] == 2:
            raise mt.MetatuneError("diverged")
        return ((a[t] @ p - 1) ** 2).sum() + (p ** 4).sum()

    def meta_gradient(**kw):
        cfg = mt.MetaConfig(method="metasgd", inner_steps=3, inner_lr=0.05, meta_batch=4, batch_tasks=False,
                            inner_max_step=0.3, inner_backtrack=3, grad_clip=1e9, **kw)
        tuner = mt.MetaTuner(torch.full((3,), 0.45, dtype=D), inner, sample_tasks=lambda n: list(range(n)), config=cfg)
        tuner.optimizer = torch.optim.SGD(tuner.meta_parameters(), lr=0.0)  # keep the gradients, move nothing
        calls[:] = [0] * 4
        tuner.train(1, progress=False)
        return torch.cat([p.grad.flatten() for p in tuner.meta_parameters()])

    exact = meta_gradient(first_order=False)
    fd = meta_gradient(first_order=True, fd_hessian=1e-6)
    first = meta_gradient(first_order=True)
    assert torch.allclose(fd, exact, rtol=1e-5, atol=1e-8), (fd, exact)
    assert float((first - exact).norm() / exact.norm()) > 0.2


@pytest.mark.parametrize("kw", [{"first_order": False, "fd_hessian": 1e-5}, {"method": "fomaml", "fd_hessian": 0.0},
                                {"method": "uncertainty", "first_order": True, "fd_hessian": 1e-5}])
def test_fd_hessian_is_refused_where_it_does_not_apply(kw):
    with pytest.raises(mt.MetatuneError, match="fd_hessian"):
        mt.MetaConfig(**kw)
