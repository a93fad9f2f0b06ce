"""Atomic file writes: every output goes to a temporary name in its folder, then is renamed over the target.

A reader never sees a half-written file, and an interrupted write leaves the old file (or nothing). The one
place the package writes files through; the domains call these instead of writing temporaries themselves.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from metatune.distributed import is_main
from metatune.errors import MetatuneError


def _parent_ready(path: Path) -> None:
    if path.is_dir():
        raise MetatuneError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise MetatuneError(f"cannot write {path}: {path.parent} is a file, not a folder") from None
    except OSError as err:
        raise MetatuneError(f"cannot create folder {path.parent}: {err.strerror or err}") from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, for writers that look at it); renamed onto `path` on success,
    removed on failure. On a rank other than 0 (torchrun) the file goes to a scratch folder and is dropped."""
    path = Path(path)
    if not is_main():
        with tempfile.TemporaryDirectory(prefix="metatune-rank-") as scratch:
            yield Path(scratch) / f"discarded{path.suffix}"
        return
    _parent_ready(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as err:
        raise MetatuneError(f"cannot write in {path.parent}: {err.strerror or err}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file for writing ("w" or "wb"); it replaces `path` when the block ends without error."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only ('w' or 'wb'), got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """JSON, atomically; NaN and infinities are refused (they are not JSON)."""
    try:
        text = json.dumps(data, indent=indent, allow_nan=False)
    except ValueError as err:
        raise MetatuneError(f"refusing to write {path}: {err}") from None
    return write_text(path, text)


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON record as a line of a log (created with its folder on first use); on a rank other than
    0 of a torchrun launch nothing is written. A line cut short by a killed process is skipped by readers."""
    if not is_main():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def write_with(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Let `writer(tmp_path)` write the file (torch.save, fig.savefig, cv2.imwrite, ...), then rename it."""
    with atomic_path(path) as tmp:
        if writer(tmp) is False:  # cv2.imwrite reports failure by returning False
            raise MetatuneError(f"could not write {path}")
    return Path(path)


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib Figure (no pyplot state involved) atomically."""
    return write_with(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight"))


@contextlib.contextmanager
def staged_folder(folder: str | Path, stale: tuple[str, ...] = ()) -> Iterator[Path]:
    """A temporary folder beside `folder` to write several outputs into; on success each file is renamed into
    `folder` (files matching a `stale` glob that this run did not write are removed first, so a reused folder
    holds no leftovers of an earlier run); on failure nothing in `folder` changes. On a rank other than 0
    (torchrun) nothing is kept."""
    folder = Path(folder)
    if not is_main():
        with tempfile.TemporaryDirectory(prefix="metatune-rank-") as scratch:
            yield Path(scratch)
        return
    if folder.exists() and not folder.is_dir():
        raise MetatuneError(f"{folder} is a file; a folder is wanted here")
    _parent_ready(folder / "x")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError as err:
        raise MetatuneError(f"cannot write in {folder.parent}: {err.strerror or err}") from None
    try:
        yield tmp
        written = {f.name for f in tmp.iterdir()}
        for pattern in stale:
            for old in folder.glob(pattern):
                if old.name not in written and old.is_file():
                    old.unlink()
        for f in tmp.iterdir():
            os.replace(f, folder / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
