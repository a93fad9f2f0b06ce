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


def test_amortised_initialisation_module():
    """init as an nn.Module mapping a task to parameters: the start itself is learned per task."""
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
    assert after < 0.01 * before and after < 0.05


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


torch.set_default_dtype(torch.float32)
