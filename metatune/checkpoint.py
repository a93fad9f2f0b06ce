"""Checkpoints that say what they are: a header (domain, kind, format version) and a content hash, checked on load.

File layout (one `torch.save` file, read with `weights_only=True`):
    {"header": {"domain", "kind", "format", "sha256"}, "payload": uint8 tensor of the serialised payload}
The payload is itself a `torch.save` of the caller's state (tensors, numbers, strings, lists, dicts), so it
too loads with `weights_only=True`. Loading the wrong domain's or kind's file, a truncated file or one whose
bytes changed names the problem instead of failing inside `load_state_dict`. No non-finite tensor is ever
written: a NaN in a state names its key and nothing is saved.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, Iterator

import torch

from metatune.atomic import write_with
from metatune.errors import MetatuneError

FORMAT = 1


def _tensors(state: Any, key: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(state, torch.Tensor):
        yield key, state
    elif isinstance(state, dict):
        for k, v in state.items():
            yield from _tensors(v, f"{key}.{k}" if key else str(k))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            yield from _tensors(v, f"{key}[{i}]")


def check_finite(state: Any, what: str) -> None:
    """Raise naming the first tensor of `state` that holds a NaN or an infinity."""
    for key, t in _tensors(state):
        if t.is_floating_point() or t.is_complex():
            if not bool(torch.isfinite(t).all()):
                raise MetatuneError(f"{what}: {key or 'the state'} holds non-finite values; nothing was saved")


def save(path: str | Path, state: dict, domain: str, kind: str) -> Path:
    """Write `state` as a `domain`/`kind` checkpoint atomically, after checking every tensor is finite."""
    check_finite(state, f"checkpoint {path}")
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    header = {"domain": domain, "kind": kind, "format": FORMAT, "sha256": hashlib.sha256(data).hexdigest()}
    payload = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return write_with(path, lambda tmp: torch.save({"header": header, "payload": payload}, tmp))


def _read(path: Path) -> tuple[dict, torch.Tensor]:
    if not path.exists():
        raise MetatuneError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise MetatuneError(f"checkpoint {path} is a folder, not a file")
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # truncated, not a torch file, or a pickle weights_only refuses: say which file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MetatuneError(f"cannot read checkpoint {path}: {first[:300]}") from None
    header = obj.get("header") if isinstance(obj, dict) else None
    if not isinstance(header, dict) or not isinstance(obj.get("payload"), torch.Tensor):
        raise MetatuneError(f"{path} is not a metatune checkpoint (no header naming its domain and kind)")
    return header, obj["payload"]


def load(path: str | Path, domain: str, kind: str | tuple[str, ...]) -> dict:
    """The state saved by `save`, after checking its domain, kind, format version and content hash."""
    path = Path(path)
    header, payload = _read(path)
    kinds = (kind,) if isinstance(kind, str) else kind
    if header.get("domain") != domain or header.get("kind") not in kinds:
        raise MetatuneError(f"{path} is a {header.get('domain')} '{header.get('kind')}' checkpoint, not a "
                            f"{domain} {' or '.join(repr(k) for k in kinds)} one")
    if header.get("format") != FORMAT:
        raise MetatuneError(f"{path} has checkpoint format {header.get('format')}; this metatune reads {FORMAT}")
    data = payload.numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != header.get("sha256"):
        raise MetatuneError(f"checkpoint {path} is corrupted: its content hash does not match its header")
    try:
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as err:
        raise MetatuneError(f"cannot read the state in checkpoint {path}: {type(err).__name__}") from None
    if not isinstance(state, dict):
        raise MetatuneError(f"checkpoint {path} holds no state dict")
    return state
