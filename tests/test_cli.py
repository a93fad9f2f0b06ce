"""The `metatune` command: domains plug in through entry points; bad input exits 2 with a message."""
import subprocess
import sys

from metatune.cli import _domains, main


def test_all_domains_register_with_the_three_verbs(capsys):
    domains = _domains()
    assert set(domains) == {"robot", "hmr", "relight"}
    for name in domains:
        assert main([name, "--help"]) == 0
        text = capsys.readouterr().out
        for verb in ("train", "adapt", "evaluate"):
            assert verb in text, (name, verb)


def test_unknown_demo_part_is_a_clear_error(capsys, tmp_path):
    assert main(["demo", "--only", "nonsense", "--out", str(tmp_path / "demo")]) == 2
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "metatune.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout
