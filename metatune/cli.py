"""The `metatune` command: the engine's own demo plus the subcommands the domains plug in."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from metatune.errors import MetatuneError

DOMAIN_GROUP = "metatune.domains"


def _domains() -> dict[str, ModuleType]:
    """Domain CLI modules registered under the `metatune.domains` entry-point group."""
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
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.add_argument("--only", nargs="*", default=None,
                      help=f"domains to run (default: engine and all of {sorted(domains)})")
    demo.set_defaults(func=lambda a: run_demo(a, domains))
    return parser


def run_demo(args: argparse.Namespace, domains: dict[str, ModuleType]) -> int:
    from metatune.demo import engine_demo

    out: Path = args.out
    wanted = args.only if args.only is not None else ["engine", *domains]
    unknown = sorted(set(wanted) - {"engine", *domains})
    if unknown:
        raise MetatuneError(f"unknown demo part(s) {unknown}; choose from {['engine', *domains]}")
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict] = {}
    for part in wanted:
        t0 = time.perf_counter()
        print(f"[demo] {part} -> {out / part}", flush=True)
        result = engine_demo(out / part) if part == "engine" else domains[part].demo(out / part)
        result["seconds"] = round(time.perf_counter() - t0, 2)
        summary[part] = result
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out / "summary.json")
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "osmesa")  # off-screen rendering on CPU unless told otherwise (egl on GPUs)
    domains = _domains()
    args = build_parser(domains).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MetatuneError as err:
        print(f"metatune: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
