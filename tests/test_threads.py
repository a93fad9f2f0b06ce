"""The thread count of a verb: --threads, or the CPUs other processes leave idle."""
import os

import pytest

from metatune import threads


def test_requested_count_wins():
    assert threads.choose_threads(3) == 3


@pytest.mark.parametrize("load, cpus, expect", [(0.0, 4, 4), (1.2, 4, 3), (2.0, 2, 1), (9.0, 2, 1), (0.4, 1, 1)])
def test_default_leaves_the_busy_cpus_to_others(monkeypatch, load, cpus, expect):
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(threads, "available_cpus", lambda: cpus)
    assert threads.choose_threads(None) == expect


def test_apply_sets_torch(monkeypatch):
    import torch
    before = torch.get_num_threads()
    try:
        assert threads.apply_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_cli_refuses_a_zero_thread_count():
    from metatune.cli import main
    assert main(["relight", "evaluate", "--checkpoint", ".", "--scene", ".", "--out", "x", "--threads", "0"]) == 2
