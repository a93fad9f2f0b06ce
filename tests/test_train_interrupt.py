"""SIGKILL and SIGINT during `metatune robot train` and `metatune hmr train`, then the same command again: the
final checkpoint equals an uninterrupted run's, tensor for tensor. A locked run folder is refused; a non-finite
pretraining step stops before anything is saved; a finished run is reported, another refused, --force restarts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

from metatune.checkpoint import check_finite, load
from metatune.cli import main
from metatune.run_folder import RunFolder

REPO = Path(__file__).resolve().parents[1]
# One thread each: the uninterrupted and the interrupted run go side by side on a small machine, and every
# process does the same arithmetic in the same order.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ROBOT = ["robot", "train", "--task", "pendulum", "--horizon", "20", "--robots-per-task", "1", "--inner-steps", "1",
         "--steps", "12"]   # checkpointed every 5 steps
HMR = ["hmr", "train", "--pretrain-steps", "4", "--pretrain-checkpoint-every", "2", "--steps", "6",
       "--checkpoint-every", "1", "--inner-steps", "2", "--people", "4", "--calibration-people", "4",
       "--train-pool", "64"]


def _start(argv: list[str], out: Path) -> subprocess.Popen:
    """`python -m metatune ARGV --out OUT`, its output into OUT.<n>.txt (a file, so no pipe fills and blocks it)."""
    n = len(list(out.parent.glob(f"{out.name}.*.txt")))
    fh = (out.parent / f"{out.name}.{n}.txt").open("w")
    # SIGINT back to its default in the child: a suite started in the background by a non-interactive shell
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler (the run would finish)
    proc = subprocess.Popen([sys.executable, "-m", "metatune", *argv, "--out", str(out)], cwd=REPO, env=ENV,
                            stdout=fh, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    fh.close()
    proc.output = fh.name  # type: ignore[attr-defined]
    return proc


def _output(proc: subprocess.Popen) -> str:
    return Path(proc.output).read_text()  # type: ignore[attr-defined]


def _finish(proc: subprocess.Popen, timeout: float = 180) -> None:
    assert proc.wait(timeout) == 0, _output(proc)[-3000:]


def _wait_until(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> None:
    """Poll until `ready()`, failing if the process ends first (then there was nothing left to interrupt)."""
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"it ended (exit {proc.returncode}) before it could be interrupted:\n" \
                                    f"{_output(proc)[-3000:]}"
        assert time.monotonic() < end, "no checkpoint in time"
        time.sleep(0.01)


def _leaves(state: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(state, dict):
        for k, v in state.items():
            yield from _leaves(v, f"{key}.{k}")
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            yield from _leaves(v, f"{key}[{i}]")
    else:
        yield key, state


def _assert_same_state(a: dict, b: dict) -> int:
    """Every tensor bit-identical and every other value equal; returns how many tensors were compared."""
    la, lb = dict(_leaves(a)), dict(_leaves(b))
    assert la.keys() == lb.keys(), sorted(la.keys() ^ lb.keys())
    tensors = 0
    for key, va in la.items():
        if isinstance(va, torch.Tensor):
            tensors += 1
            assert va.dtype == lb[key].dtype and torch.equal(va, lb[key]), f"{key} differs"
        else:
            assert va == lb[key], f"{key}: {va!r} != {lb[key]!r}"
    return tensors


def _no_temporaries(out: Path) -> None:
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]


def test_robot_train_killed_then_run_again_equals_an_uninterrupted_run(tmp_path):
    whole, parts = _start(ROBOT, tmp_path / "whole"), _start(ROBOT, tmp_path / "parts")
    _wait_until(parts, (tmp_path / "parts" / "checkpoint.pt").is_file)
    parts.send_signal(signal.SIGKILL)
    assert parts.wait(30) == -signal.SIGKILL
    log_before = (tmp_path / "parts" / "log.jsonl").read_text()
    assert log_before.count("\n") >= 5                 # the steps up to the first checkpoint at least
    _finish(_start(ROBOT, tmp_path / "parts"))
    _finish(whole)
    a = load(tmp_path / "whole" / "checkpoint.pt", "robot", "meta_tuner")
    b = load(tmp_path / "parts" / "checkpoint.pt", "robot", "meta_tuner")
    assert b["step"] == 12 and _assert_same_state(a, b) > 3
    log = (tmp_path / "parts" / "log.jsonl").read_text()
    assert log.startswith(log_before)                  # appended, never truncated
    assert {json.loads(line)["step"] for line in log.splitlines() if "step" in line} == set(range(12))
    assert json.loads((tmp_path / "parts" / "metrics.json").read_text())["resumed"] is True


def test_hmr_train_killed_then_interrupted_then_run_again_equals_an_uninterrupted_run(tmp_path, capsys):
    out = tmp_path / "parts"
    whole, parts = _start(HMR, tmp_path / "whole"), _start(HMR, out)
    # SIGKILL during pretraining, once its first checkpoint (step 2 of 4: optimizer and schedule mid-way) exists
    _wait_until(parts, (out / "checkpoint.pt").is_file)
    parts.send_signal(signal.SIGKILL)
    assert parts.wait(30) == -signal.SIGKILL
    first = load(out / "checkpoint.pt", "hmr", "meta_fit")["training"]
    assert not first["finished"] and first["pretrain_step"] == 2 and first["pretrain_optimizer"] is not None

    # the same command resumes; SIGINT it during meta-training, once a meta-training step is checkpointed
    again = _start(HMR, out)
    seen = {"mtime": 0}

    def meta_checkpointed() -> bool:
        mtime = (out / "checkpoint.pt").stat().st_mtime_ns
        if mtime == seen["mtime"]:
            return False
        seen["mtime"] = mtime
        state = load(out / "checkpoint.pt", "hmr", "meta_fit")
        # a meta-training step is saved and most of the run is still ahead (a meta step takes a fraction of a
        # second: interrupting at the last one raced the run's end)
        return 1 <= state["tuner"]["step"] <= 2 and not state["training"]["finished"]

    _wait_until(again, meta_checkpointed)
    again.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    assert again.wait(30) == 130
    assert time.monotonic() - t0 < 10 and "metatune: interrupted" in _output(again)
    _no_temporaries(out)
    state = load(out / "checkpoint.pt", "hmr", "meta_fit")
    check_finite(state, "the interrupted run's checkpoint")
    assert not state["training"]["finished"] and state["training"]["pretrain_optimizer"] is None
    # what infer/adapt/evaluate load is refused while the run is unfinished, saying how to finish it
    assert main(["hmr", "evaluate", "--checkpoint", str(out), "--out", str(tmp_path / "ev")]) == 2
    assert "unfinished hmr train run" in capsys.readouterr().err

    _finish(_start(HMR, out))
    _finish(whole)
    a = load(tmp_path / "whole" / "checkpoint.pt", "hmr", "meta_fit")
    b = load(out / "checkpoint.pt", "hmr", "meta_fit")
    assert b["training"]["finished"] and b["tuner"]["step"] == 6 and b["training"]["pretrain_step"] == 4
    assert _assert_same_state(a, b) > 10
    _no_temporaries(out)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {r["step"] for r in records if r.get("phase") == "pretrain"} == set(range(4))
    assert {r["step"] for r in records if "outer_loss" in r} == set(range(6))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed"] and metrics["calibration"] == a["fit"]["calibration"]


def test_a_second_process_on_a_locked_run_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    with RunFolder(out).lock():
        proc = _start(HMR, out)
        assert proc.wait(60) == 2
    assert "is in use by another metatune process" in _output(proc)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]    # nothing written by the refused process


@pytest.fixture
def quick_scale(monkeypatch):
    """The fit's units measured as 1 (what they are matters not here; measuring them takes seconds), on one
    thread (two spin against each other on a busy 2-core machine)."""
    import hmr.meta_fit as meta_fit

    monkeypatch.setattr(meta_fit, "curvature_scale", lambda *args: torch.ones(85))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield meta_fit
    torch.set_num_threads(threads)


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_a_non_finite_pretraining_step_stops_before_anything_non_finite_is_saved(tmp_path, capsys, monkeypatch,
                                                                                 quick_scale, where):
    real = quick_scale.MetaFitter._outer_loss
    calls = []

    def poisoned(self, u, task):
        loss = real(self, u, task)
        calls.append(len(calls))
        if len(calls) <= 3:        # pretraining steps 0, 1 (checkpointed) and 2 are fine
            return loss
        if where == "loss":
            return loss * float("nan")
        return loss + (u * 0).sqrt().sum()   # a finite loss (+0) whose gradient is 0 * inf = NaN

    monkeypatch.setattr(quick_scale.MetaFitter, "_outer_loss", poisoned)
    out = tmp_path / "run"
    assert main([*HMR, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pretraining step 3" in err
    assert ("the loss is nan" if where == "loss" else "the gradient of regressor.net.") in err
    state = load(out / "checkpoint.pt", "hmr", "meta_fit")
    check_finite(state, "the last checkpoint")           # raises on a NaN anywhere in it
    assert state["training"]["pretrain_step"] == 2
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1, 2]          # the poisoned step is neither applied nor logged


def test_a_finished_run_is_reported_another_refused_and_force_starts_afresh(tmp_path, capsys, quick_scale):
    out = tmp_path / "run"
    argv = [*HMR, "--pretrain-steps", "2", "--steps", "1", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    log = (out / "log.jsonl").read_text()
    checkpoint = (out / "checkpoint.pt").read_bytes()
    assert main(argv) == 0                                  # run again: reported, nothing trained or written
    assert "already complete" in capsys.readouterr().out
    assert (out / "log.jsonl").read_text() == log and (out / "checkpoint.pt").read_bytes() == checkpoint
    assert main([*argv, "--seed", "1"]) == 2
    assert "holds another run (seed: stored 0, given 1)" in capsys.readouterr().err
    assert main([*argv, "--seed", "1", "--force"]) == 0
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    assert json.loads((out / "metrics.json").read_text())["resumed"] is False
    new_log = (out / "log.jsonl").read_text()
    assert new_log.startswith(log) and "restarted with --force" in new_log
    assert load(out / "checkpoint.pt", "hmr", "meta_fit")["fit"]["config"]["seed"] == 1
