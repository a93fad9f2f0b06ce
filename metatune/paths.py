"""Paths the command line reads and writes, checked before any heavy import, and paths from data files
kept inside their folder.

The argparse types here fail at parse time with a message naming the path, so a wrong path is reported in
well under a second; nothing here imports torch.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from metatune.errors import MetatuneError


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(path: Path, want: str) -> Path:
    """`path` can be created or overwritten as a `want` ("file" or "folder"): nothing of the other kind is in
    the way, and the nearest existing folder above it is writable. Creates nothing."""
    path = Path(path)
    if path.exists():
        if want == "folder" and not path.is_dir():
            raise MetatuneError(f"{path} is a file; give a folder (a run folder) here")
        if want == "file" and path.is_dir():
            raise MetatuneError(f"{path} is a folder; give a file name here")
        target = path if want == "folder" else path.parent
    else:
        target = _nearest_existing(path.parent)
        if not target.is_dir():
            raise MetatuneError(f"cannot create {path}: {target} is a file, not a folder")
    if not os.access(target, os.W_OK | os.X_OK):
        raise MetatuneError(f"cannot write {path}: {target} is not writable")
    return path


def _argtype(check):
    def parse(text: str):
        try:
            return check(Path(text))
        except MetatuneError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    parse.__name__ = check.__name__.lstrip("_")  # argparse names the type in its message
    return parse


def _existing_file(path: Path) -> Path:
    if not path.exists():
        raise MetatuneError(f"file not found: {path}")
    if not path.is_file():
        raise MetatuneError(f"{path} is a folder; give a file")
    if not os.access(path, os.R_OK):
        raise MetatuneError(f"{path} is not readable")
    return path


def _existing_dir(path: Path) -> Path:
    if not path.exists():
        raise MetatuneError(f"folder not found: {path}")
    if not path.is_dir():
        raise MetatuneError(f"{path} is a file; give a folder")
    return path


def _existing(path: Path) -> Path:
    if not path.exists():
        raise MetatuneError(f"not found: {path}")
    return path


def _out_dir(path: Path) -> Path:
    return check_writable(path, "folder")


def _out_file(path: Path) -> Path:
    return check_writable(path, "file")


existing_file = _argtype(_existing_file)
existing_dir = _argtype(_existing_dir)
existing_path = _argtype(_existing)  # a run folder or a checkpoint file
out_dir = _argtype(_out_dir)
out_file = _argtype(_out_file)


def inside(base: str | Path, relative: str | Path, what: str = "path") -> Path:
    """`base / relative`, resolved, refused unless it stays inside `base` (no `..`, no absolute path, no link
    out): for file names read from data files."""
    base = Path(base)
    rel = Path(relative)
    if rel.is_absolute() or rel.drive:
        raise MetatuneError(f"{what} {str(relative)!r} is absolute; it must be relative to {base}")
    root = base.resolve()
    full = (root / rel).resolve()
    if full != root and root not in full.parents:
        raise MetatuneError(f"{what} {str(relative)!r} leaves its folder {base}")
    return full
