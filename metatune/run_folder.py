"""The run folder every domain's verbs write (docs/cli.md): one layout, one writer at a time, no mixed runs.

    RUN/config.json     what defines the run (domain, verb, settings), written by the verb that made it
    RUN/checkpoint.pt   the trained state (metatune.checkpoint: header, content hash)
    RUN/log.jsonl       one JSON record per training step, appended, never truncated
    RUN/metrics.json    the verb's numbers
    RUN/*.png           its figures
    RUN/.lock           held (flock) while a process writes the folder
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator

from metatune.atomic import append_jsonl, write_json
from metatune.distributed import barrier, is_main
from metatune.errors import MetatuneError

CONFIG, CHECKPOINT, LOG, METRICS, LOCK = "config.json", "checkpoint.pt", "log.jsonl", "metrics.json", ".lock"


def checkpoint_file(path: str | Path) -> Path:
    """`--checkpoint` names a run folder or the checkpoint file in it; the file either way."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def run_folder_of(path: str | Path) -> Path:
    """The run folder of a `--checkpoint` argument (the folder itself, or the file's folder)."""
    path = Path(path)
    return path if path.is_dir() else path.parent


class RunFolder:
    """A run folder: paths of its parts, its lock, and the stored config a resume must agree with."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise MetatuneError(f"{self.path} is a file; a run folder is wanted here")

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @contextlib.contextmanager
    def lock(self) -> Iterator["RunFolder"]:
        """Hold the folder's lock; a second process gets a clear error instead of interleaving its writes.
        (The ranks of one torchrun launch are one writer: rank 0 holds the lock, the others write nothing.)"""
        if not is_main():
            yield self
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise MetatuneError(f"cannot use run folder {self.path}: {err.strerror or err}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise MetatuneError(f"run folder {self.path} is in use by another metatune process; wait for it "
                                    "or give another --out") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            for stale in self.path.glob(".*.tmp*"):  # left by a process killed mid-write (we hold the lock)
                if stale.is_file():
                    stale.unlink()
            yield self
        finally:
            os.close(fd)  # closing releases the flock

    def read_config(self) -> dict | None:
        if not self.config.is_file():
            return None
        try:
            data = json.loads(self.config.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
            raise MetatuneError(f"{self.config} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise MetatuneError(f"{self.config} does not hold a JSON object")
        return data

    def start(self, config: dict[str, Any], defining: tuple[str, ...], force: bool = False) -> bool:
        """Begin or resume a run with `config`; returns True when resuming.

        A run folder that holds another run (a stored config that differs in a `defining` key) is refused,
        naming the difference; `force` starts afresh (removing the old checkpoint, keeping a note in the log).
        """
        if not is_main():  # another rank of a torchrun launch: rank 0 decides, then this rank reads its decision
            barrier()
            return self.read_config() is not None and self.checkpoint.is_file()
        resumed = self._start(config, defining, force)
        barrier()
        return resumed

    def _start(self, config: dict[str, Any], defining: tuple[str, ...], force: bool) -> bool:
        stored = self.read_config()
        resumable = stored is not None and self.checkpoint.is_file()
        if resumable and not force:
            assert stored is not None
            diff = [f"{k}: stored {stored.get(k)!r}, given {config.get(k)!r}" for k in defining
                    if _canon(stored.get(k)) != _canon(config.get(k))]
            if diff:
                raise MetatuneError(f"{self.path} holds another run ({'; '.join(diff)}); give another --out, "
                                    "or --force to start afresh there")
            return True
        if force and self.checkpoint.exists():
            self.checkpoint.unlink()
            self.append_log({"event": "restarted with --force"})
        write_json(self.config, config)
        return False

    def read_log(self) -> list[dict]:
        """The log's records; a last line cut short by a killed process is skipped."""
        if not self.log.is_file():
            return []
        records = []
        for line in self.log.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
        return records

    def append_log(self, record: dict) -> None:
        """Append one JSON record to the log (created on first use; rank 0 alone under torchrun)."""
        append_jsonl(self.log, record)

    def step_history(self, steps: int) -> list[dict]:
        """The log's meta-training record (one with an "outer_loss" and no "phase") of each step < steps: the
        last one written, as a killed run may have logged a step its resumed run logged again."""
        by_step: dict[int, dict] = {}
        for rec in self.read_log():
            if "outer_loss" in rec and "phase" not in rec and isinstance(rec.get("step"), int) and rec["step"] < steps:
                by_step[rec["step"]] = rec
        return [by_step[k] for k in sorted(by_step)]


def _canon(value: Any) -> Any:
    """JSON round trip, so tuples and lists (and ints and floats that JSON keeps apart) compare as stored."""
    return json.loads(json.dumps(value))
