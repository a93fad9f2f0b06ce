"""The `metatune` command: the engine's own demo plus the subcommands the domains plug in."""
from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from metatune import distributed
from metatune.errors import MetatuneError
from metatune.paths import out_dir
from metatune.verb_args import device

DOMAIN_GROUP = "metatune.domains"
EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 1, 130


def _domains() -> dict[str, ModuleType]:
    """Domain CLI modules registered under the `metatune.domains` entry-point group (light: they import
    their heavy modules only when a verb runs)."""
    found: dict[str, ModuleType] = {}
    for ep in sorted(entry_points(group=DOMAIN_GROUP), key=lambda e: e.name):
        found[ep.name] = importlib.import_module(ep.value)
    return found


def build_parser(domains: dict[str, ModuleType]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metatune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in domains.items():
        module.register(sub)
    demo = sub.add_parser("demo", help="run the main job on built-in data into runs/demo/")
    demo.add_argument("--out", type=out_dir, default=Path("runs/demo"))
    demo.add_argument("--only", nargs="*", default=None, choices=["engine", *domains],
                      help=f"parts to run (default: engine and all of {sorted(domains)})")
    demo.add_argument("--device", type=device, default="cpu", help="cpu (default), cuda or cuda:N")
    demo.set_defaults(func=lambda a: run_demo(a, domains))
    return parser


def run_demo(args: argparse.Namespace, domains: dict[str, ModuleType]) -> int:
    import json

    from metatune.atomic import write_json
    from metatune.demo import engine_demo
    from metatune.verb_args import torch_device

    device = torch_device(args.device)
    out: Path = args.out
    wanted = args.only if args.only else ["engine", *domains]
    summary: dict[str, dict] = {}
    for part in wanted:
        t0 = time.perf_counter()
        print(f"[demo] {part} -> {out / part}", flush=True)
        result = engine_demo(out / part, device) if part == "engine" else domains[part].demo(out / part,
                                                                                            device=str(device))
        result["seconds"] = round(time.perf_counter() - t0, 2)
        summary[part] = result
    write_json(out / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    return 0


def _error(message: str) -> int:
    print(f"metatune: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _internal(err: BaseException) -> int:
    """An error nobody foresaw: one line here, the whole traceback in a file."""
    with tempfile.NamedTemporaryFile("w", prefix="metatune-traceback-", suffix=".txt", delete=False) as fh:
        traceback.print_exception(type(err), err, err.__traceback__, file=fh)
    print(f"metatune: internal error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
          f"(full traceback in {fh.name}; please report it)", file=sys.stderr)
    return EXIT_INTERNAL


def _is_oom(err: BaseException) -> bool:
    text = str(err).lower()
    return isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or (
        isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text))


def main(argv: list[str] | None = None) -> int:
    """Parse, dispatch, and turn every foreseeable failure into `metatune: error: ...` with exit status 2."""
    try:
        try:
            args = build_parser(_domains()).parse_args(argv)
        except SystemExit as done:  # argparse: --help (0) or a usage error it has printed (2)
            return done.code if isinstance(done.code, int) else EXIT_ERROR
        if distributed.launched():  # by torchrun: join its process group
            distributed.init_from_env(getattr(args, "device", "cpu"))
            try:
                return int(args.func(args) or 0)
            finally:
                distributed.shutdown()
        return int(args.func(args) or 0)
    except MetatuneError as err:
        return _error(str(err))
    except KeyboardInterrupt:
        print("metatune: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:  # a path the checks up front could not foresee (a disk full, a race)
        where = f"{err.filename}: " if err.filename else ""
        return _error(f"{where}{err.strerror or err}")
    except RecursionError:
        return _error("an input is nested too deeply (JSON or pickle past Python's recursion limit)")
    except Exception as err:
        if _is_oom(err):
            return _error(f"out of memory ({str(err).splitlines()[0][:200]}); ask for a smaller size "
                          "(resolution, batch, points)")
        return _internal(err)


if __name__ == "__main__":
    sys.exit(main())
