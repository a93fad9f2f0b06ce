"""The arguments every domain verb shares, with one meaning across domains (docs/cli.md):

--out RUN          the run folder the verb writes (config, checkpoint, log, metrics, figures)
--checkpoint RUN   a run folder written by `train` (or the checkpoint file inside it)
--steps N          the steps of the verb's own loop (training steps for train, adaptation steps for adapt)
--seed S           seeds everything the verb draws
--device D         cpu, cuda or cuda:N
--force            (train) start afresh in a run folder that holds another run

Values are checked when parsed, before any domain module (and torch) is imported.
"""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Callable

from metatune.paths import existing_path, out_dir


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def positive_float(text: str) -> float:
    return float_in(0.0, math.inf, open_low=True)(text)


def float_in(low: float, high: float, open_low: bool = False, open_high: bool = False) -> Callable[[str], float]:
    """A parser of finite floats in [low, high] (ends open as asked); NaN and infinities are refused."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text}")
        if value < low or value > high or (open_low and value == low) or (open_high and value == high):
            raise argparse.ArgumentTypeError(
                f"must be in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}, got {value:g}")
        return value
    parse.__name__ = "number"
    return parse


def finite_float(text: str) -> float:
    return float_in(-math.inf, math.inf)(text)


def device(text: str) -> str:
    """cpu, cuda or cuda:N (availability is checked by the domain, which imports torch)."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; give cpu, cuda or cuda:N")
    return text


def add_out(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--out", type=out_dir, default=Path(default) if default else None, required=default is None,
                   help="run folder to write" + (f" (default {default})" if default else ""))


def add_checkpoint(p: argparse.ArgumentParser, required: bool, what: str = "meta-learned start") -> None:
    p.add_argument("--checkpoint", type=existing_path, default=None, required=required,
                   help=f"run folder written by 'train' (or its checkpoint.pt): the {what}")


def add_seed_device(p: argparse.ArgumentParser, seed: int = 0) -> None:
    p.add_argument("--seed", type=int, default=seed, help=f"seeds everything the verb draws (default {seed})")
    p.add_argument("--device", type=device, default="cpu", help="cpu (default), cuda or cuda:N")


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: the CPUs other processes leave idle, at least 1)")


def add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="start afresh in a run folder that holds another run (default: resume or refuse)")


def torch_device(name: str, cpu_only: str | None = None):
    """The torch.device for `--device`, refused with a clear message when it is not available here, or when
    the verb runs on CPU only (`cpu_only` says why)."""
    import torch

    from metatune.errors import MetatuneError

    if name.startswith("cuda"):
        if cpu_only:
            raise MetatuneError(f"--device {name}: {cpu_only}; use --device cpu")
        if not torch.cuda.is_available():
            raise MetatuneError(f"--device {name}: no CUDA device is available here (use --device cpu)")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise MetatuneError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device(name)
