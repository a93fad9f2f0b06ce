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


def in_fresh_interpreter(code: str) -> None:
    """Run `code` in a new Python process (nothing imported yet) and require it to exit 0."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_parsing_every_verb_imports_no_torch():
    """--help and the input checks run before any heavy import (domain modules import on dispatch)."""
    code = ("import sys; from metatune.cli import _domains, build_parser; p = build_parser(_domains()); "
            "[p.parse_known_args(a) for a in (['robot', 'train'], ['hmr', 'train'], ['demo'])]; "
            "heavy = [m for m in ('torch', 'mujoco', 'pytorch3d', 'cv2', 'matplotlib') if m in sys.modules]; "
            "print(heavy); sys.exit(bool(heavy))")
    in_fresh_interpreter(code)


def test_the_lazy_api_names_stay_functions_after_their_modules_are_imported():
    """`metatune.solve` the function, not the module, however the modules were imported first (a demo or a
    domain importing `metatune.solve` used to shadow it: `mt.solve(...)` then failed)."""
    code = ("import sys, metatune as mt; import metatune.solve, metatune.rollout, metatune.demo; "
            "ok = callable(mt.solve) and mt.solve.__module__ == 'metatune.solve' and callable(mt.rollout) "
            "and mt.rollout.__module__ == 'metatune.rollout' and mt.MetaTuner.__name__ == 'MetaTuner'; "
            "sys.exit(0 if ok else 1)")
    in_fresh_interpreter(code)
