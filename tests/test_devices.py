"""--device on every domain's train/adapt/evaluate and in `metatune demo`.

Here (no GPU): a CUDA device that is not there is one `metatune: error:` line and exit status 2 for every
verb, before anything is written; a checkpoint loads onto the device of the tuner that reads it. With CUDA
(the tests marked `needs_cuda`, run by scripts/gpu_check.sh): each domain trains and evaluates on the GPU and
agrees with the same run on the CPU.
"""
import json
from pathlib import Path

import pytest
import torch
from marks import needs_cuda, needs_gsplat

import metatune as mt
from metatune import checkpoint
from metatune.cli import main


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


@pytest.fixture
def places(tmp_path) -> dict[str, str]:
    """Existing paths for the arguments the parser checks (the verbs stop at --device, before reading them)."""
    (tmp_path / "run").mkdir()
    (tmp_path / "scene").mkdir()
    (tmp_path / "kp.json").write_text("{}")
    (tmp_path / "img.png").write_bytes(b"")
    return {"run": str(tmp_path / "run"), "scene": str(tmp_path / "scene"), "kp": str(tmp_path / "kp.json"),
            "img": str(tmp_path / "img.png"), "out": str(tmp_path / "out")}


VERBS = [
    ["robot", "train", "--out", "{out}"],
    ["robot", "adapt", "--task", "pendulum", "--out", "{out}"],
    ["robot", "evaluate", "--task", "pendulum", "--out", "{out}"],
    ["hmr", "train", "--out", "{out}"],
    ["hmr", "adapt", "--keypoints", "{kp}", "--width", "64", "--height", "64", "--out", "{out}"],
    ["hmr", "evaluate", "--checkpoint", "{run}", "--out", "{out}"],
    ["relight", "train", "--scene", "{scene}", "--out", "{out}"],
    ["relight", "evaluate", "--checkpoint", "{run}", "--scene", "{scene}", "--out", "{out}"],
    ["relight", "adapt", "--checkpoint", "{run}", "--scene", "{scene}", "--out", "{out}"],
    ["relight", "render", "--checkpoint", "{run}", "--light", "1", "1", "1", "--out", "{out}.png"],
    ["demo", "--out", "{out}"],
]


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: " ".join(v[:2]))
def test_a_cuda_device_that_is_not_here_is_one_line_and_exit_2(verb, places, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # what a machine without CUDA answers
    argv = [a.format(**places) for a in verb] + ["--device", "cuda"]
    code, err = run(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("metatune: error: --device cuda: no CUDA device is available"), err
    assert not Path(places["out"]).exists() and not Path(places["out"] + ".png").exists()


def test_a_cuda_index_past_the_last_device_names_how_many_there_are(places, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code, err = run(["robot", "train", "--out", places["out"], "--device", "cuda:3"], capsys)
    assert code == 2 and "--device cuda:3: only 1 CUDA device(s) here" in err, err


def test_hmr_infer_says_it_runs_on_the_cpu(places, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # refused even where a GPU is
    code, err = run(["hmr", "infer", places["img"], "--keypoints", places["kp"], "--out", places["out"],
                     "--device", "cuda"], capsys)
    assert code == 2 and "hmr infer runs on the CPU" in err and "hmr adapt" in err, err


def _quadratic_tuner(init: torch.Tensor) -> mt.MetaTuner:
    """Meta-SGD on quadratics whose centres are drawn on the CPU (one seed) and put on the init's device."""
    gen = torch.Generator().manual_seed(0)

    def sample(n: int) -> list[torch.Tensor]:
        return [torch.randn(3, generator=gen, dtype=torch.float64).to(init.device) for _ in range(n)]

    return mt.MetaTuner(init, lambda x, c: ((x - c) ** 2).sum(), sample_tasks=sample,
                        config=mt.MetaConfig(method="metasgd", inner_steps=2, meta_batch=2))


def test_a_checkpoint_loads_onto_the_device_of_the_tuner_reading_it(tmp_path):
    # the meta device holds no data but keeps devices apart as CUDA does: anything left on the CPU shows
    cpu = _quadratic_tuner(torch.zeros(3, dtype=torch.float64))
    cpu.train(2, progress=False)
    cpu.save(tmp_path / "t.pt")
    other = _quadratic_tuner(torch.zeros(3, dtype=torch.float64, device="meta"))
    other.load(tmp_path / "t.pt")
    assert other.log_lr is not None and other.optimizer is not None
    assert {p.device.type for p in other.meta_parameters()} == {"meta"}
    assert {t.device.type for s in other.optimizer.state.values() for k, t in s.items() if k != "step"} == {"meta"}


# ---- on a GPU ---------------------------------------------------------------------------------------------------
@needs_cuda
def test_engine_meta_trains_on_cuda_like_on_the_cpu(tmp_path):
    runs = {}
    for dev in ("cpu", "cuda"):
        tuner = _quadratic_tuner(torch.zeros(3, dtype=torch.float64, device=dev))
        tuner.train(3, progress=False)
        tuner.save(tmp_path / f"{dev}.pt")
        runs[dev] = tuner
    assert runs["cuda"].log_lr is not None and runs["cuda"].log_lr[0].device.type == "cuda"
    back = _quadratic_tuner(torch.zeros(3, dtype=torch.float64, device="cuda")).load(tmp_path / "cpu.pt")
    assert back.log_lr is not None and back.log_lr[0].device.type == "cuda"
    for a, b in zip(runs["cpu"].meta_parameters(), runs["cuda"].meta_parameters()):
        torch.testing.assert_close(a.detach(), b.detach().cpu(), rtol=1e-9, atol=1e-12)


ROBOT_TRAIN = ["robot", "train", "--task", "pendulum", "--horizon", "20", "--robots-per-task", "2",
               "--inner-steps", "1", "--steps", "2"]
HMR_TRAIN = ["hmr", "train", "--pretrain-steps", "4", "--steps", "2", "--inner-steps", "2", "--people", "4",
             "--calibration-people", "4", "--train-pool", "64"]


@needs_cuda
@pytest.mark.parametrize("domain", ["robot", "hmr"])
def test_a_domain_trains_and_evaluates_on_cuda_as_on_the_cpu(domain, tmp_path, capsys):
    train = ROBOT_TRAIN if domain == "robot" else HMR_TRAIN
    evaluate = (["robot", "evaluate", "--robots", "2", "--steps", "1"] if domain == "robot"
                else ["hmr", "evaluate", "--people", "4"])
    for dev in ("cpu", "cuda"):
        assert run([*train, "--out", str(tmp_path / dev), "--device", dev], capsys)[0] == 0
        assert run([*evaluate, "--checkpoint", str(tmp_path / dev), "--out", str(tmp_path / f"eval_{dev}"),
                    "--device", dev], capsys)[0] == 0
        assert (tmp_path / f"eval_{dev}" / "metrics.json").is_file()
    if domain == "robot":  # float64 rollouts: the meta-learned gains agree closely
        a, b = (checkpoint.load(tmp_path / dev / "checkpoint.pt", "robot", "meta_tuner") for dev in ("cpu", "cuda"))
        for key in a["init"]:
            torch.testing.assert_close(a["init"][key], b["init"][key], rtol=1e-6, atol=1e-9)
    else:  # float32 bodies and Adam steps of the size of the learning rate: compare what the fits score
        a, b = (json.loads((tmp_path / f"eval_{dev}" / "metrics.json").read_text())["summary"] for dev in ("cpu", "cuda"))
        for method in ("regressor_only", "meta_fit"):
            assert abs(a[method]["pa_mpjpe_mm"] - b[method]["pa_mpjpe_mm"]) <= 0.02 * a[method]["pa_mpjpe_mm"]
    # a checkpoint written on the GPU evaluates on the CPU
    assert run([*evaluate, "--checkpoint", str(tmp_path / "cuda"), "--out", str(tmp_path / "back"),
                "--device", "cpu"], capsys)[0] == 0


@needs_cuda
def test_robot_adapts_through_mujoco_with_its_gains_on_cuda(tmp_path, capsys):
    code, _ = run(["robot", "adapt", "--task", "pendulum", "--robots", "1", "--steps", "1", "--physics", "mujoco",
                   "--backend", "mujoco", "--out", str(tmp_path), "--device", "cuda"], capsys)
    assert code == 0 and (tmp_path / "metrics.json").is_file()


@needs_cuda
@needs_gsplat
def test_relight_trains_evaluates_and_adapts_on_cuda(tmp_path, capsys):
    scene = str(tmp_path / "scene")
    assert run(["relight", "generate", "--out", scene, "--resolution", "16"], capsys)[0] == 0
    run_dir = str(tmp_path / "run")
    assert run(["relight", "train", "--scene", scene, "--resolution", "16", "--steps", "4", "--meta-steps", "2",
                "--out", run_dir, "--device", "cuda"], capsys)[0] == 0
    for verb in ("evaluate", "adapt"):
        assert run(["relight", verb, "--checkpoint", run_dir, "--scene", scene, "--out", str(tmp_path / verb),
                    "--device", "cuda"], capsys)[0] == 0
    assert (tmp_path / "evaluate" / "metrics.json").is_file() and (tmp_path / "adapt" / "adapt.json").is_file()


@needs_cuda
def test_the_engine_demo_runs_on_cuda(tmp_path, capsys):
    assert run(["demo", "--only", "engine", "--out", str(tmp_path), "--device", "cuda"], capsys)[0] == 0
    assert (tmp_path / "engine" / "sine_few_shot.png").is_file()


def test_gpu_check_without_a_venv_or_a_bundle_says_how_to_make_one(tmp_path):
    """On a machine with neither .venv nor the device bundle, scripts/gpu_check.sh stops at once with one line
    naming scripts/gpu_bundle.sh (the bundle it would install lies in $GPU_BUNDLE, here an empty folder)."""
    import os
    import subprocess
    root = Path(__file__).resolve().parents[1]
    for script in ("gpu_check.sh", "gpu_env.sh", "gpu_bundle.sh"):
        assert subprocess.run(["bash", "-n", str(root / "scripts" / script)]).returncode == 0, script
    env = {**os.environ, "PY": str(tmp_path / "no-python"), "GPU_BUNDLE": str(tmp_path)}
    done = subprocess.run(["bash", str(root / "scripts" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "scripts/gpu_bundle.sh" in done.stderr, done.stderr
    assert "[gpu_check]" not in done.stdout  # stopped before any step
