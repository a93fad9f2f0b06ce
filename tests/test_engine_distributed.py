"""MetaTuner.train under torchrun (gloo, CPU): 2 processes give the 1-process meta-parameters; rank 0 alone
writes the log and the checkpoint."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metatune import checkpoint

SCRIPT = Path(__file__).parent / "distributed" / "meta_train.py"


def torchrun(nproc: int, *args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("method", ["metasgd", "uncertainty"])
def test_two_processes_meta_train_to_the_one_process_parameters(tmp_path, method):
    one, two = str(tmp_path / "one.pt"), str(tmp_path / "two.pt")
    torchrun(1, str(SCRIPT), one, method)
    torchrun(2, str(SCRIPT), two, method)
    a = checkpoint.load(one, "engine", "meta_tuner")
    b = checkpoint.load(two, "engine", "meta_tuner")
    assert a["step"] == b["step"] == 4
    for key in ("init", "log_lr", "log_prior_std"):
        flat_a = torch.cat([t.reshape(-1) for t in (a[key].values() if isinstance(a[key], dict) else a[key])])
        flat_b = torch.cat([t.reshape(-1) for t in (b[key].values() if isinstance(b[key], dict) else b[key])])
        torch.testing.assert_close(flat_a, flat_b, rtol=1e-12, atol=1e-12)
    # one writer: the log has one record per step, not one per rank
    assert Path(two + ".jsonl").read_text().count("\n") == 4


@pytest.mark.parametrize("verb", [
    ["robot", "train", "--task", "pendulum", "--horizon", "20", "--robots-per-task", "2", "--inner-steps", "1",
     "--steps", "3"],
    ["hmr", "train", "--pretrain-steps", "4", "--steps", "2", "--inner-steps", "2", "--people", "4",
     "--calibration-people", "4", "--train-pool", "64"],
])
def test_a_domains_train_verb_under_torchrun_writes_once_and_equals_one_process(tmp_path, verb):
    one, two = tmp_path / "one", tmp_path / "two"
    torchrun(1, "-m", "metatune", *verb, "--out", str(one))
    torchrun(2, "-m", "metatune", *verb, "--out", str(two))
    kind = ("robot", "meta_tuner") if verb[0] == "robot" else ("hmr", "meta_fit")
    a = checkpoint.load(one / "checkpoint.pt", *kind)
    b = checkpoint.load(two / "checkpoint.pt", *kind)
    ta, tb = (s if verb[0] == "robot" else s["tuner"] for s in (a, b))
    assert ta["step"] == tb["step"]
    for key in ta["init"]:
        torch.testing.assert_close(ta["init"][key], tb["init"][key], rtol=1e-6, atol=1e-7)
    meta_lines = [line for line in (two / "log.jsonl").read_text().splitlines() if '"outer_loss"' in line]
    assert len(meta_lines) == ta["step"]  # rank 0 alone logged
    assert not list(two.glob(".*.tmp*")) and (two / "metrics.json").is_file()


def test_relight_train_under_torchrun_equals_one_process(tmp_path):
    from metatune.cli import main

    assert main(["relight", "generate", "--out", str(tmp_path / "scene"), "--resolution", "16"]) == 0
    verb = ["-m", "metatune", "relight", "train", "--scene", str(tmp_path / "scene"), "--resolution", "16",
            "--steps", "4", "--meta-steps", "2"]
    torchrun(1, *verb, "--out", str(tmp_path / "one"))
    torchrun(2, *verb, "--out", str(tmp_path / "two"))
    a = checkpoint.load(tmp_path / "one" / "checkpoint.pt", "relight", "run")
    b = checkpoint.load(tmp_path / "two" / "checkpoint.pt", "relight", "run")
    for key in a["module"]:  # float32 model: one ulp-scale differences from the all-reduce's summation order
        if key.endswith("_extra_state"):  # the shadow cache: each rank holds the lights it adapted
            continue
        torch.testing.assert_close(a["module"][key], b["module"][key], rtol=1e-5, atol=1e-5, msg=key)
    assert (tmp_path / "two" / "meta_log.jsonl").read_text().count("\n") == 2


def _rank_pids(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of the workers a torchrun launcher started (read from /proc)."""
    out = {}
    for child in Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split():
        try:
            env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"RANK="):
                out[int(item[5:])] = int(child)
    return out


def test_a_torchrun_training_resumes_after_a_rank_is_killed(tmp_path):
    import os
    import signal
    import time

    verb = ["-m", "metatune", "robot", "train", "--task", "pendulum", "--horizon", "20", "--robots-per-task", "2",
            "--inner-steps", "1", "--steps", "15"]
    torchrun(1, *verb, "--out", str(tmp_path / "whole"))
    run = tmp_path / "parts"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *verb, "--out", str(run)]
    launcher = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (run / "checkpoint.pt").exists() and time.time() < deadline and launcher.poll() is None:
        time.sleep(0.05)
    assert (run / "checkpoint.pt").exists() and launcher.poll() is None, "no checkpoint before the run ended"
    os.kill(_rank_pids(launcher.pid)[1], signal.SIGKILL)  # the rank that writes nothing
    assert launcher.wait(timeout=120) != 0
    done = checkpoint.load(run / "checkpoint.pt", "robot", "meta_tuner")["step"]
    assert 0 < done < 15
    torchrun(2, *verb, "--out", str(run))  # the same command again
    a = checkpoint.load(tmp_path / "whole" / "checkpoint.pt", "robot", "meta_tuner")
    b = checkpoint.load(run / "checkpoint.pt", "robot", "meta_tuner")
    assert a["step"] == b["step"] == 15
    for key in a["init"]:
        torch.testing.assert_close(a["init"][key], b["init"][key], rtol=1e-6, atol=1e-7)
