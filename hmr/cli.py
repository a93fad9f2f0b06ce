"""The `metatune hmr` subcommand (not built yet: every verb says so and exits non-zero)."""
from __future__ import annotations

import argparse
from pathlib import Path

from metatune.errors import MetatuneError

VERBS = "train,adapt,evaluate,infer".split(",")


def _not_built(args: argparse.Namespace) -> int:
    raise MetatuneError(f"'metatune hmr {args.verb}' is not built yet")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("hmr", help="hmr domain (not built yet)")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for verb in VERBS:
        verbs.add_parser(verb).set_defaults(func=_not_built)


def demo(out_dir: Path) -> dict:
    return {"status": "not built yet"}
