"""`rollout` gradients: adjoint, autograd and forward sensitivity agree with each other and with
central finite differences on a damped pendulum under a PD policy (float64)."""
import pytest
import torch

import metatune as mt

DEFAULT_DTYPE = torch.float64
torch.set_default_dtype(DEFAULT_DTYPE)  # for the constants below; restored at the end of the module
DT, HORIZON = 0.02, 150


def pendulum(x, u):
    """Semi-implicit Euler step of a damped pendulum: theta'' = -g/l sin(theta) - b theta' + u."""
    th, om = x[..., 0], x[..., 1]
    om = om + DT * (-9.81 * torch.sin(th) - 0.3 * om + u[..., 0])
    return torch.stack([th + DT * om, om], dim=-1)


def pd(x, t, params):
    kp, kd = params
    target = 1.0 + 0.2 * torch.sin(0.05 * torch.as_tensor(t))  # t: an int, or a tensor under vmap
    return (kp * (target - x[..., 0]) - kd * x[..., 1]).unsqueeze(-1)


def cost(x, u, t):
    return (x[..., 0] - 1.0) ** 2 + 1e-3 * (u**2).sum(-1)


def objective(params, x0, grad):
    out = mt.rollout(pendulum, x0, pd, params, HORIZON, grad=grad, cost=cost)
    return out.cost.sum() + 0.5 * (out.states[-1] ** 2).sum() + out.states[:, :, 1].mean()


X0 = torch.tensor([[0.1, 0.0], [-0.4, 0.5], [2.0, -1.0]])
P = (torch.tensor(8.0), torch.tensor(1.5))


def grads(grad):
    params = tuple(p.clone().requires_grad_() for p in P)
    x0 = X0.clone().requires_grad_()
    val = objective(params, x0, grad)
    return val.detach(), torch.autograd.grad(val, (*params, x0))


def finite_differences(eps=1e-6):
    flat = torch.cat([torch.stack(P), X0.reshape(-1)])

    def f(z):
        return objective((z[0], z[1]), z[2:].reshape(X0.shape), "autograd")

    g = torch.zeros_like(flat)
    with torch.no_grad():
        for i in range(flat.numel()):
            e = torch.zeros_like(flat)
            e[i] = eps
            g[i] = (f(flat + e) - f(flat - e)) / (2 * eps)
    return g


REF = finite_differences()


@pytest.mark.parametrize("mode", ["adjoint", "autograd", "forward"])
def test_rollout_gradient_matches_finite_differences(mode):
    _, g = grads(mode)
    flat = torch.cat([g[0].reshape(1), g[1].reshape(1), g[2].reshape(-1)])
    torch.testing.assert_close(flat, REF, rtol=1e-6, atol=1e-7)


def test_adjoint_segments_give_the_same_gradient():
    """Segment lengths that divide the horizon and that do not (150 = 4 * 37 + 2) agree with autograd."""
    _, g_ref = grads("autograd")
    for segment in (1, 37, 150, 1000):
        params = tuple(p.clone().requires_grad_() for p in P)
        out = mt.rollout(pendulum, X0, pd, params, HORIZON, grad="adjoint", cost=cost, segment=segment)
        val = out.cost.sum() + 0.5 * (out.states[-1] ** 2).sum() + out.states[:, :, 1].mean()
        for a, b in zip(torch.autograd.grad(val, params), g_ref[:2]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["adjoint", "autograd", "forward"])
def test_final_state_only_gives_the_same_cost_gradient(mode):
    params = tuple(p.clone().requires_grad_() for p in P)
    full = mt.rollout(pendulum, X0, pd, params, HORIZON, grad="autograd", cost=cost)
    g_ref = torch.autograd.grad(full.cost.sum() + full.states[-1].sum(), params)
    out = mt.rollout(pendulum, X0, pd, params, HORIZON, grad=mode, cost=cost, segment=37, store_states=False)
    assert out.states.shape == (1, 3, 2)
    torch.testing.assert_close(out.states[0], full.states[-1].detach())
    for a, b in zip(torch.autograd.grad(out.cost.sum() + out.states[-1].sum(), params), g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_modes_agree_to_machine_precision():
    v_ref, g_ref = grads("autograd")
    for mode in ("adjoint", "forward"):
        v, g = grads(mode)
        torch.testing.assert_close(v, v_ref, rtol=1e-12, atol=1e-12)
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def coupled_pd(x, t, params):
    """A policy in which batch elements interact (through the batch mean): block-diagonal Jacobians are wrong."""
    kp, kd = params
    return (kp * (1.0 + 0.5 * x[..., 0].mean() - x[..., 0]) - kd * x[..., 1]).unsqueeze(-1)


def stepwise_pd(x, t, params):
    """A policy vmap cannot run over time (Python control flow on t): the adjoint must go step by step."""
    kp, kd = params
    target = 1.2 if t < 70 else 0.8
    return (kp * (target - x[..., 0]) - kd * x[..., 1]).unsqueeze(-1)


@pytest.mark.parametrize("policy,blocks", [(pd, True), (coupled_pd, False), (stepwise_pd, None)])
@pytest.mark.parametrize("store", [True, False])
def test_vectorized_adjoint_matches_autograd(policy, blocks, store, monkeypatch):
    """The time-vectorized adjoint (per-element Jacobian blocks; dense Jacobians once the random check finds
    coupled batch elements; step by step when vmap cannot trace the policy) equals autograd to rounding."""
    rollout_module = __import__("sys").modules["metatune.rollout"]
    done = []  # the block-diagonal flag each vectorized segment ended with
    real = rollout_module._segment_vectorized

    def spy(*args):
        out = real(*args)
        done.append(out[2])
        return out

    monkeypatch.setattr(rollout_module, "_segment_vectorized", spy)
    got = {}
    for mode, vectorize in (("autograd", None), ("adjoint", True)):
        params = tuple(p.clone().requires_grad_() for p in P)
        x0 = X0.clone().requires_grad_()
        out = mt.rollout(pendulum, x0, policy, params, HORIZON, grad=mode, cost=cost, segment=40,
                         store_states=store, vectorize=vectorize)
        val = out.cost.sum() + out.states[-1, :, 0].pow(2).sum() + out.states[:, :, 1].mean()
        got[mode] = torch.autograd.grad(val, (*params, x0))
    for a, b in zip(got["adjoint"], got["autograd"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    if blocks is None:
        assert done == []  # vmap could not trace the policy: every segment went step by step
    else:
        assert len(done) >= 4 and all(d == blocks for d in done)  # 150 steps in segments of 40


def wide_features(x, t, params):
    """A PD policy plus 20,000 radial features per batch element: large per-step operations."""
    kp, kd = params
    centres = torch.linspace(-3.0, 3.0, 20000)
    bump = torch.exp(-((x[..., :1] - centres) ** 2)).mean(-1)
    return (kp * (1.0 - x[..., 0]) - kd * x[..., 1] + 1e-3 * bump).unsqueeze(-1)


@pytest.mark.parametrize("policy,vectorized", [(pd, True), (wide_features, False)])
def test_default_vectorizes_only_small_steps(policy, vectorized, monkeypatch):
    """By default the adjoint vectorizes over time when a step's graph is small (per-operation overhead
    dominates) and goes step by step when its operations are large; either way it equals autograd."""
    rollout_module = __import__("sys").modules["metatune.rollout"]
    calls = []
    real = rollout_module._segment_vectorized
    monkeypatch.setattr(rollout_module, "_segment_vectorized", lambda *a: calls.append(1) or real(*a))
    got = {}
    for mode in ("adjoint", "autograd"):
        params = tuple(p.clone().requires_grad_() for p in P)
        out = mt.rollout(pendulum, X0, policy, params, 40, grad=mode, cost=cost, store_states=False)
        got[mode] = torch.autograd.grad(out.cost.sum(), params)
    for a, b in zip(got["adjoint"], got["autograd"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert bool(calls) == vectorized


def test_states_match_an_explicit_loop_and_cost_is_none_without_cost_fn():
    out = mt.rollout(pendulum, X0, pd, P, 20, grad="adjoint")
    x = X0
    for t in range(20):
        x = pendulum(x, pd(x, t, P))
        torch.testing.assert_close(out.states[t + 1], x)
    assert out.cost is None and out.states.shape == (21, 3, 2)


def test_single_tensor_params_and_unbatched_state():
    K = torch.tensor([6.0, 1.0], requires_grad=True)

    def lin(x, t, k):
        return -(k * (x - torch.tensor([1.0, 0.0]))).sum(-1, keepdim=True)

    out = mt.rollout(pendulum, torch.tensor([0.0, 0.0]), lin, K, 50, grad="adjoint", cost=cost)
    (g_adj,) = torch.autograd.grad(out.cost, K)
    out2 = mt.rollout(pendulum, torch.tensor([0.0, 0.0]), lin, K, 50, grad="autograd", cost=cost)
    (g_ag,) = torch.autograd.grad(out2.cost, K)
    torch.testing.assert_close(g_adj, g_ag)


def test_divergence_names_the_step():
    def unstable(x, u):
        return 3.0 * x + u

    with pytest.raises(mt.MetatuneError, match="diverged: non-finite state at step"):
        mt.rollout(unstable, torch.tensor([1.0]), lambda x, t, p: p * x, torch.tensor([1e300]), 50)


@pytest.mark.parametrize("bad,match", [
    (dict(grad="reverse"), "unknown grad mode"),
    (dict(horizon=0), "horizon must be"),
    (dict(step=lambda x, u: x[..., :1]), "step returned a state of shape"),
    (dict(params=[1.0, 2.0]), "params must be a Tensor"),
    (dict(cost=lambda x, u, t: x), "cost must return one value per batch element"),
])
def test_bad_input_names_the_problem(bad, match):
    kw = dict(step=pendulum, x0=X0, policy=pd, params=P, horizon=5) | bad
    with pytest.raises(mt.MetatuneError, match=match):
        mt.rollout(kw.pop("step"), kw.pop("x0"), kw.pop("policy"), kw.pop("params"), kw.pop("horizon"), **kw)


torch.set_default_dtype(torch.float32)
