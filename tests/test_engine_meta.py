"""MetaTuner: after meta-training, a few inner steps on unseen tasks reach a loss far below the same
steps from the untrained start; uncertainty-aware updates give the Laplace std; checkpoints round-trip."""
import json

import pytest
import torch

import metatune as mt

DEFAULT_DTYPE = torch.float64
torch.set_default_dtype(DEFAULT_DTYPE)  # for the constants below; restored at the end of the module
CURV = torch.tensor([0.05, 0.3, 1.0, 4.0, 15.0])  # curvatures spanning 300x: one step size cannot fit all
MU = torch.tensor([2.0, -1.0, 0.5, 3.0, -2.0])


def sample(n, gen):
    return [MU + 0.3 * torch.randn(5, generator=gen) for _ in range(n)]


def quad(x, c):
    return 0.5 * (CURV * (x - c) ** 2).sum()


def make(method, **kw):
    gen = torch.Generator().manual_seed(0)
    cfg = mt.MetaConfig(method=method, inner_steps=3, inner_lr=0.05, outer_lr=0.05, meta_batch=4, **kw)
    return mt.MetaTuner(torch.zeros(5), quad, sample_tasks=lambda n: sample(n, gen), config=cfg)


UNSEEN = sample(20, torch.Generator().manual_seed(123))


@pytest.mark.parametrize("method", ["maml", "fomaml", "metasgd", "uncertainty"])
def test_meta_training_makes_few_steps_adapt(method):
    tuner = make(method)
    before = tuner.evaluate(UNSEEN)["inner_loss_by_step"][-1]
    tuner.train(150, progress=False)
    after = tuner.evaluate(UNSEEN)["inner_loss_by_step"][-1]
    # the tasks' spread alone costs E[0.5 sum CURV (0.3 z)^2] = 0.045 * sum(CURV) ~ 0.91 at the mean start
    assert after < 0.05 * before, (before, after)
    assert after < 1.0


def test_meta_sgd_learns_inverse_curvature_step_sizes():
    tuner = make("metasgd", step_outer_lr=0.05)
    assert len(tuner.meta_parameters()) == 2  # the start and the log step sizes, before any training
    tuner.train(300, progress=False)
    lr = tuner.step_sizes()
    # on the stiffest coordinates one step of size 1/curvature solves the task exactly
    assert torch.allclose(lr[-2:] * CURV[-2:], torch.ones(2), atol=0.25), lr * CURV


def test_step_sizes_have_their_own_outer_learning_rate():
    tuner = make("metasgd", step_outer_lr=0.0)
    torch.testing.assert_close(make("maml").step_sizes(), torch.full((5,), 0.05))
    before = [p.detach().clone() for p in tuner.meta_parameters()]
    tuner.train(5, progress=False)
    start, log_lr = tuner.meta_parameters()
    assert not torch.equal(start.detach(), before[0]) and torch.equal(log_lr.detach(), before[1])


def test_uncertainty_std_is_the_laplace_posterior_and_collapsed_parameters_freeze():
    cfg = mt.MetaConfig(method="uncertainty", inner_steps=4, inner_lr=0.05, prior_std=2.0, freeze_ratio=0.3)
    tuner = mt.MetaTuner(torch.zeros(5), quad, config=cfg)
    res = tuner.adapt(MU)
    # diagonal Hessian: Hutchinson probes are exact, so std = (1/prior_var + curvature)^-1/2
    torch.testing.assert_close(res.std, (1 / 4.0 + CURV) ** -0.5)
    expect_frozen = (1 / 4.0 + CURV) ** -0.5 / 2.0 < 0.3
    assert torch.equal(res.frozen[0], expect_frozen)
    assert res.frozen[0].any() and not res.frozen[0].all()


def test_save_load_round_trip_and_json_log(tmp_path):
    log = tmp_path / "log.jsonl"
    tuner = make("metasgd")
    tuner.log_path = log
    tuner.train(5, progress=False)
    tuner.save(tmp_path / "ckpt.pt")
    other = make("metasgd").load(tmp_path / "ckpt.pt")
    a, b = tuner.adapt(UNSEEN[0]), other.adapt(UNSEEN[0])
    torch.testing.assert_close(a.params, b.params)
    lines = [json.loads(s) for s in log.read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(5)) and all("outer_loss" in r for r in lines)
    other.train(2, progress=False)  # resumes with its optimizer state
    assert other.step_count == 7


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_amortised_initialisation_module(seed):
    """init as an nn.Module mapping a task to parameters: the start itself is learned per task."""
    with torch.random.fork_rng(devices=[]):  # the layer's initial weights: seeded here, not by test order
        torch.manual_seed(seed)
        net = torch.nn.Linear(5, 5).double()
    gen = torch.Generator().manual_seed(1)

    class Task:
        def __init__(self, c):
            self.c, self.features = c, c + 0.01 * torch.randn(5, generator=gen)


    class Init(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, task):
            return self.net(task.features)

    tuner = mt.MetaTuner(Init(), lambda x, task: quad(x, task.c), sample_tasks=lambda n: [Task(c) for c in sample(n, gen)],
                         config=mt.MetaConfig(method="maml", inner_steps=1, inner_lr=0.01, outer_lr=0.02, meta_batch=8))
    tasks = [Task(c) for c in UNSEEN]
    before = tuner.evaluate(tasks)["outer_loss"]
    tuner.train(300, progress=False)
    after = tuner.evaluate(tasks)["outer_loss"]
    # the best fixed start (the task mean) leaves ~0.91 of task spread; a start read off the task beats it
    # by far whatever the layer's initial weights (measured 0.03-0.055 over seeds; the bound leaves room)
    assert after < 0.01 * before and after < 0.1


def test_per_parameter_outer_learning_rates_custom_optimizer_and_resume(tmp_path):
    """init_lr gives each named init parameter its own outer lr; the optimizer factory builds the outer
    optimizer; a checkpoint restores that layout, and a tuner with another layout is told so."""
    class Init(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))

        def forward(self, task):
            return torch.cat([self.a, self.b])

    gen = torch.Generator().manual_seed(0)
    built = []

    def sgd(groups):
        built.append([(len(g["params"]), g["lr"]) for g in groups])
        return torch.optim.SGD(groups, lr=1.0)

    def tuner(lr_b):
        return mt.MetaTuner(Init(), quad, sample_tasks=lambda n: sample(n, gen),
                            config=mt.MetaConfig(method="metasgd", inner_steps=0, outer_lr=0.1, step_outer_lr=0.0,
                                                 meta_batch=1, grad_clip=1e9),
                            init_lr=lambda name: lr_b if name == "b" else 0.1,
                            optimizer=sgd)

    t = tuner(0.0)
    with pytest.raises(mt.MetatuneError, match="first adapt/train"):
        t.step_sizes()
    t.prepare(UNSEEN[0])  # creates the step sizes without adapting
    assert t.step_sizes().shape == (5,)
    t.train(1, progress=False)
    assert built[-1] == [(1, 0.1), (1, 0.0), (1, 0.0)]  # a, b, step sizes
    init = t.init
    assert not torch.equal(init.a.detach(), torch.zeros(2)) and torch.equal(init.b.detach(), torch.zeros(3))
    # plain SGD, zero inner steps: the first outer step of `a` is -lr * dquad/da at 0 = lr * CURV * c
    first = sample(1, torch.Generator().manual_seed(0))[0]
    torch.testing.assert_close(init.a.detach(), 0.1 * CURV[:2] * first[:2])
    t.save(tmp_path / "t.pt")
    resumed = tuner(0.0).load(tmp_path / "t.pt")
    assert isinstance(resumed.optimizer, torch.optim.SGD) and built[-1] == [(1, 0.1), (1, 0.0), (1, 0.0)]
    with pytest.raises(mt.MetatuneError, match="does not fit this tuner's parameter groups"):
        tuner(0.1).load(tmp_path / "t.pt")  # a and b share one group here: another layout


@pytest.mark.parametrize("kw,match", [
    (dict(method="reptile"), "unknown meta-learning method"),
])
def test_bad_config(kw, match):
    with pytest.raises(mt.MetatuneError, match=match):
        mt.MetaConfig(**kw)


def test_train_without_sampler_and_bad_checkpoint(tmp_path):
    tuner = mt.MetaTuner(torch.zeros(5), quad)
    with pytest.raises(mt.MetatuneError, match="needs sample_tasks"):
        tuner.train(1)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(mt.MetatuneError, match="cannot read checkpoint"):
        tuner.load(tmp_path / "bad.pt")
    with pytest.raises(mt.MetatuneError, match="checkpoint not found"):
        tuner.load(tmp_path / "missing.pt")



def test_a_tuner_never_touches_the_global_rng_and_owns_its_probes():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tuner = make("uncertainty", seed=7)
    tuner.adapt(UNSEEN[0], steps=2)  # curvature probes draw from the tuner's generator
    assert torch.equal(torch.rand(3), expected)
    a = make("uncertainty", seed=7).adapt(UNSEEN[0], steps=2).std
    b = make("uncertainty", seed=7).adapt(UNSEEN[0], steps=2).std
    assert torch.equal(a, b)


def test_a_nan_meta_gradient_stops_training_before_the_update_and_is_never_saved(tmp_path):
    def poisoned(x, c):  # the query loss: finite value, NaN gradient (0 times sqrt's infinite slope at 0)
        return quad(x, c) + 0.0 * torch.sqrt((x - x.detach()).abs()).sum()

    gen = torch.Generator().manual_seed(0)
    tuner = mt.MetaTuner(torch.zeros(5), quad, poisoned, sample_tasks=lambda n: sample(n, gen),
                         config=mt.MetaConfig(method="metasgd", inner_steps=1, meta_batch=2))
    before = [p.detach().clone() for p in tuner.meta_parameters()]
    with pytest.raises(mt.MetatuneError, match="meta-training step 0: the meta-gradient of .* is not finite"):
        tuner.train(1, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, tuner.meta_parameters()))
    with torch.no_grad():
        tuner.log_lr[0].fill_(float("nan"))
    with pytest.raises(mt.MetatuneError, match="non-finite values; nothing was saved"):
        tuner.save(tmp_path / "t.pt")
    assert not (tmp_path / "t.pt").exists()


def test_checkpoints_name_their_domain_and_detect_corruption(tmp_path):
    tuner = make("metasgd")
    tuner.save(tmp_path / "t.pt", domain="robot", kind="meta_tuner")
    with pytest.raises(mt.MetatuneError, match="is a robot 'meta_tuner' checkpoint, not a engine"):
        make("metasgd").load(tmp_path / "t.pt")
    make("metasgd").load(tmp_path / "t.pt", domain="robot", kind="meta_tuner")
    blob = bytearray((tmp_path / "t.pt").read_bytes())
    at = blob.find(b"log_lr")  # a byte of the payload, same length
    blob[at] = ord("L")
    (tmp_path / "t.pt").write_bytes(bytes(blob))
    with pytest.raises(mt.MetatuneError, match="corrupted"):
        make("metasgd").load(tmp_path / "t.pt", domain="robot", kind="meta_tuner")


@pytest.mark.parametrize("method", ["maml", "fomaml", "metasgd"])
def test_a_meta_batch_adapted_in_one_vmap_equals_the_loop(method):
    def run(batch_tasks):
        gen = torch.Generator().manual_seed(0)
        cfg = mt.MetaConfig(method=method, inner_steps=3, inner_lr=0.05, outer_lr=0.05, meta_batch=6,
                            batch_tasks=batch_tasks)
        tuner = mt.MetaTuner(torch.zeros(5), quad, sample_tasks=lambda n: sample(n, gen), config=cfg)
        hist = tuner.train(5, progress=False)
        return [p.detach() for p in tuner.meta_parameters()], hist

    (batched, hb), (looped, hl) = run(True), run(False)
    for a, b in zip(batched, looped):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(hb, hl):
        assert a == pytest.approx(b, rel=1e-12)


def test_losses_vmap_cannot_trace_fall_back_to_the_loop():
    def branchy(x, c):  # data-dependent Python control flow: vmap refuses it, the loop runs it
        return quad(x, c) if float(c.sum()) > -100 else quad(2 * x, c)

    gen = torch.Generator().manual_seed(0)
    tuner = mt.MetaTuner(torch.zeros(5), branchy, sample_tasks=lambda n: sample(n, gen),
                         config=mt.MetaConfig(method="metasgd", inner_steps=1, meta_batch=3))
    tuner.train(2, progress=False)
    assert tuner._vmap_failed and tuner.step_count == 2
    forced = mt.MetaTuner(torch.zeros(5), branchy, sample_tasks=lambda n: sample(n, gen),
                          config=mt.MetaConfig(method="metasgd", inner_steps=1, meta_batch=3, batch_tasks=True))
    with pytest.raises(mt.MetatuneError, match="batch_tasks=True: the losses cannot be vmapped"):
        forced.train(1, progress=False)

torch.set_default_dtype(torch.float32)
