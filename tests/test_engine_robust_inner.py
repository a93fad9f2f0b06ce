"""Inner loops that survive a diverging task: the trust region, backtracking, and dropping a task."""
import math

import pytest
import torch

import metatune as mt
from metatune.adaptation import inner_adapt
from metatune.batched import batched_adapt_and_score


def test_trust_region_bounds_each_update_smoothly():
    a, x0, lr = 4.0, 2.5, 1.0  # loss a x^2 / 2: the plain step lr * a * x0 = 10
    res = inner_adapt(lambda x: 0.5 * a * x[0] ** 2, (torch.tensor(x0, dtype=torch.float64),), 1,
                      (torch.tensor(lr, dtype=torch.float64),), create_graph=False, max_step=1.0)
    assert float(res.params[0].detach()) == pytest.approx(x0 - math.tanh(lr * a * x0))
    # the vmapped meta-batch applies the same rule
    tasks = torch.tensor([1.0, 2.0], dtype=torch.float64)
    _, _, after = batched_adapt_and_score(lambda t: (torch.tensor(x0, dtype=torch.float64),),
                                          lambda p, t: 0.5 * a * t * p[0] ** 2, lambda p, t: p[0],
                                          tasks, 1, (torch.tensor(lr, dtype=torch.float64),), True, 1.0)
    expect = [0.5 * a * t * (x0 - math.tanh(lr * a * t * x0)) ** 2 for t in (1.0, 2.0)]
    assert after.tolist() == pytest.approx(expect)


def test_backtracking_halves_a_step_whose_loss_fails():
    def loss(x):
        if float(x[0]) < -1.0:
            raise mt.MetatuneError("rollout diverged")
        return x[0] ** 2

    x0 = (torch.tensor(1.0, dtype=torch.float64),)
    lr = (torch.tensor(1.5, dtype=torch.float64),)  # step 3: lands on -2, fails; halved to 1.5: lands on -0.5
    res = inner_adapt(loss, x0, 1, lr, create_graph=False, backtrack=2)
    assert float(res.params[0].detach()) == pytest.approx(-0.5)
    assert res.losses == pytest.approx([1.0, 0.25])
    with pytest.raises(mt.MetatuneError, match="diverged"):
        inner_adapt(loss, x0, 1, lr, create_graph=False, backtrack=0)


def _tuner(drop, tasks):
    def inner(x, c):
        if float(c) < 0:
            raise mt.MetatuneError("rollout diverged")
        return (x - c) ** 2

    cfg = mt.MetaConfig(method="maml", inner_steps=1, inner_lr=0.1, outer_lr=0.1, meta_batch=len(tasks),
                        drop_diverging=drop, batch_tasks=False)
    return mt.MetaTuner(torch.zeros((), dtype=torch.float64), inner, sample_tasks=lambda n: list(tasks), config=cfg)


def test_a_diverging_task_is_dropped_and_counted_and_the_rest_train_as_without_it():
    tasks = [torch.tensor(v, dtype=torch.float64) for v in (1.0, -1.0, 3.0)]
    with pytest.raises(mt.MetatuneError, match="diverged"):
        _tuner(False, tasks).train(1, progress=False)
    dropping = _tuner(True, tasks)
    log = dropping.train(2, progress=False)
    assert [r["dropped_tasks"] for r in log] == [1, 1]
    kept = _tuner(False, [tasks[0], tasks[2]])
    kept_log = kept.train(2, progress=False)
    assert [r["outer_loss"] for r in log] == pytest.approx([r["outer_loss"] for r in kept_log])
    assert float(dropping.init.values[0]) == pytest.approx(float(kept.init.values[0]))
    alone = _tuner(True, [tasks[1]])  # every task diverges: the step is logged without an update ...
    assert alone.train(2, progress=False)[0]["dropped_tasks"] == 1 and float(alone.init.values[0]) == 0.0
    with pytest.raises(mt.MetatuneError, match="every task"):  # ... and the third such step in a row stops
        alone.train(1, progress=False)
