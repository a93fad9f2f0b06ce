"""Run by tests/test_engine_distributed.py under torchrun: meta-train a small MetaTuner, rank 0 saves it."""
import sys

import torch

import metatune as mt
from metatune import distributed

CURV = torch.tensor([0.05, 0.3, 1.0, 4.0, 15.0], dtype=torch.float64)


def main(out: str, method: str) -> None:
    distributed.init_from_env()
    gen = torch.Generator().manual_seed(0)  # every rank draws the same meta-batches

    def sample(n):
        return [torch.tensor([2.0, -1.0, 0.5, 3.0, -2.0], dtype=torch.float64)
                + 0.3 * torch.randn(5, generator=gen, dtype=torch.float64) for _ in range(n)]

    def quad(x, c):
        return 0.5 * (CURV * (x - c) ** 2).sum()

    cfg = mt.MetaConfig(method=method, inner_steps=3, inner_lr=0.05, outer_lr=0.05, meta_batch=5)
    # plain SGD: a step proportional to the gradient, so a meta-gradient summed twice (or missing a rank's
    # share) changes the result, where Adam's normalisation would hide it
    tuner = mt.MetaTuner(torch.zeros(5, dtype=torch.float64), quad, sample_tasks=sample, config=cfg,
                         log_path=out + ".jsonl", optimizer=lambda groups: torch.optim.SGD(groups))
    tuner.train(4, progress=False)
    tuner.save(out)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
