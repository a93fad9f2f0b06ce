"""Bad inputs through the `metatune` command line: each ends in one `metatune: error:` line (or argparse's usage
error) with a non-zero exit, no Python traceback, and nothing half-written."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metatune import checkpoint
from metatune.cli import main


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def leftovers(folder: Path) -> list[str]:
    """Temporary files an interrupted or refused write would leave."""
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name]


@pytest.fixture
def files(tmp_path):
    """A file where a folder is wanted, an existing folder, a foreign .pt, a truncated and a corrupted
    checkpoint, checkpoints and run folders of each domain (headers only: loading must stop at the header)."""
    f = {"file": tmp_path / "a_file.txt", "folder": tmp_path / "a_folder"}
    f["file"].write_text("x")
    f["folder"].mkdir()
    f["foreign"] = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, f["foreign"])
    good = checkpoint.save(tmp_path / "good.pt", {"w": torch.zeros(3)}, "relight", "run")
    f["truncated"] = tmp_path / "truncated.pt"
    f["truncated"].write_bytes(good.read_bytes()[:100])
    blob = bytearray(good.read_bytes())
    at = blob.rfind(b"\x00\x00\x00\x00\x00\x00")  # inside the payload's zero bytes: a flipped bit, same length
    blob[at] = 1
    f["corrupted"] = tmp_path / "corrupted_run" / "checkpoint.pt"
    f["corrupted"].parent.mkdir()
    f["corrupted"].write_bytes(bytes(blob))
    for domain, kind in (("relight", "run"), ("robot", "meta_tuner"), ("hmr", "meta_fit")):
        run = tmp_path / f"{domain}_run"
        run.mkdir()
        checkpoint.save(run / "checkpoint.pt", {"w": torch.zeros(1)}, domain, kind)
        (run / "config.json").write_text(json.dumps({"domain": domain, "verb": "train"}))
        f[domain] = run
    f["deep"] = tmp_path / "deep.json"
    f["deep"].write_text("[" * 100_000 + "]" * 100_000)
    f["nan_light"] = ["nan", "0", "1"]
    return f


def domain_cases(f: dict, tmp: Path) -> list[tuple[list[str], str]]:
    out = str(tmp / "out")
    return [
        # output paths
        (["robot", "adapt", "--task", "pendulum", "--out", str(f["file"])], "is a file"),
        (["robot", "train", "--task", "pendulum", "--out", str(f["file"] / "sub")], "is a file, not a folder"),
        (["hmr", "evaluate", "--checkpoint", str(f["hmr"]), "--out", str(f["file"])], "is a file"),
        (["relight", "export", "--checkpoint", str(f["relight"]), "--out", str(f["folder"])], "is a folder"),
        (["relight", "render", "--checkpoint", str(f["relight"]), "--light", "1", "1", "1", "--out",
          str(tmp / "x.jpg")], "give a .png name"),
        (["demo", "--out", str(f["file"])], "is a file"),
        # inputs that are missing or of the wrong kind
        (["hmr", "infer", str(tmp / "none.png"), "--keypoints", str(f["file"]), "--out", out], "file not found"),
        (["hmr", "infer", str(f["folder"]), "--keypoints", str(f["file"]), "--out", out], "is a folder"),
        (["relight", "train", "--scene", str(f["file"]), "--out", out], "is a file; give a folder"),
        # checkpoints of another domain or kind, foreign, truncated, corrupted
        (["robot", "evaluate", "--checkpoint", str(f["relight"]), "--out", out], "is a 'relight' run, not a robot"),
        (["robot", "evaluate", "--checkpoint", str(f["hmr"] / "checkpoint.pt"), "--out", out], "not a robot"),
        (["hmr", "evaluate", "--checkpoint", str(f["robot"]), "--out", out], "is a robot 'meta_tuner' checkpoint"),
        (["hmr", "evaluate", "--checkpoint", str(f["foreign"]), "--out", out], "is not a metatune checkpoint"),
        (["relight", "export", "--checkpoint", str(f["hmr"]), "--out", str(tmp / "g.ply")], "not a relight"),
        (["hmr", "evaluate", "--checkpoint", str(f["truncated"]), "--out", out], "cannot read checkpoint"),
        (["relight", "evaluate", "--checkpoint", str(f["corrupted"]), "--scene", str(f["folder"]), "--out", out],
         "corrupted"),
        # numbers that make no sense
        (["relight", "generate", "--out", out, "--resolution", "0"], "must be in [8, 4096]"),
        (["relight", "generate", "--out", out, "--resolution", "100000"], "must be in [8, 4096]"),
        (["relight", "generate", "--out", out, "--resolution", "-3"], "must be >= 0"),
        (["relight", "render", "--checkpoint", str(f["relight"]), "--light", *f["nan_light"], "--out",
          str(tmp / "r.png")], "must be finite"),
        (["robot", "train", "--robots-per-task", "0", "--out", out], "must be >= 1"),
        (["robot", "train", "--dt", "nan", "--out", out], "must be finite"),
        (["robot", "train", "--inner-lr", "0", "--out", out], "must be in (0"),
        (["robot", "adapt", "--task", "pendulum", "--steps", "-1", "--out", out], "must be >= 0"),
        (["hmr", "train", "--steps", "0", "--out", out], "must be >= 1"),
        (["relight", "train", "--scene", str(f["folder"]), "--out", out, "--steps", "1.5"], "not an integer"),
        (["robot", "adapt", "--task", "pendulum", "--device", "tpu", "--out", out], "not a device"),
        # no such GPU here or on a GPU machine (which has fewer than 100): refused before anything runs
        (["robot", "adapt", "--task", "pendulum", "--device", "cuda:99", "--out", out], "--device cuda:99"),
        # a JSON nested past Python's recursion limit
        (["hmr", "adapt", "--keypoints", str(f["deep"]), "--width", "100", "--height", "100", "--out", out],
         "nested too deeply"),
    ]


CASE_IDS = [f"case{i}" for i in range(29)]


@pytest.mark.parametrize("index", range(29), ids=CASE_IDS)
def test_bad_input_is_one_clear_line_and_writes_nothing(index, files, tmp_path, capsys):
    cases = domain_cases(files, tmp_path)
    assert len(cases) == len(CASE_IDS)
    argv, message = cases[index]
    code, err = run(argv, capsys)
    assert code == 2, (argv, err)
    assert message in err, (argv, err)
    assert err.strip().splitlines()[-1].startswith(("metatune: error:", "metatune ")), err
    assert not (tmp_path / "out").exists(), argv
    assert not leftovers(tmp_path), argv


def test_an_unwritable_output_folder_is_an_error_not_a_traceback(tmp_path, capsys):
    # /proc refuses new entries even to root (for whom permission bits mean nothing)
    code, err = run(["robot", "adapt", "--task", "pendulum", "--steps", "0", "--out", "/proc/metatune_out"], capsys)
    assert code == 2 and err.startswith("metatune: error:") and "/proc" in err


def test_a_missing_parent_is_created(tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "run"
    code, _ = run(["robot", "adapt", "--task", "pendulum", "--steps", "0", "--out", str(out)], capsys)
    assert code == 0 and (out / "metrics.json").is_file() and not leftovers(tmp_path)


def test_an_unforeseen_error_is_one_line_and_a_traceback_file(monkeypatch, tmp_path, capsys):
    import envs.cli

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(envs.cli, "_adapt_or_evaluate", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    code, err = run(["robot", "adapt", "--task", "pendulum", "--out", str(tmp_path / "o")], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "internal error: ZeroDivisionError: a bug" in lines[0]
    saved = Path(lines[0].split("full traceback in ")[1].split(";")[0])
    assert saved.parent == tmp_path and "ZeroDivisionError" in saved.read_text()


def test_the_console_script_reports_a_bad_path_with_status_2():
    done = subprocess.run([sys.executable, "-m", "metatune", "hmr", "infer", "/nonexistent.png", "--keypoints",
                           "/nonexistent.json", "--out", "/tmp/never"], capture_output=True, text=True)
    assert done.returncode == 2 and "file not found: /nonexistent.png" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_run_folder_sheds_a_killed_writers_temporaries_and_reads_a_cut_log(tmp_path):
    from metatune.run_folder import RunFolder

    run = RunFolder(tmp_path / "run")
    run.append_log({"step": 0, "outer_loss": 1.0})
    with run.log.open("a") as fh:
        fh.write('{"step": 1, "outer_lo')  # the process died mid-line
    (tmp_path / "run" / ".checkpoint.abc.tmp.pt").write_bytes(b"half")
    with run.lock():
        assert not list((tmp_path / "run").glob(".*.tmp*"))
    assert run.read_log() == [{"step": 0, "outer_loss": 1.0}]
