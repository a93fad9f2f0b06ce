"""Physical parameters that a body can have: the same bounds for the torch models and for MuJoCo.

MuJoCo refuses a body with non-positive mass or inertia (and inertias breaking the triangle inequality);
the torch models would simulate them silently, so both backends are held to these bounds here.
"""
from __future__ import annotations

import torch
from torch import Tensor

from metatune.errors import MetatuneError

POSITIVE = ("mass", "length", "inertia", "ixx", "iyy", "izz", "arm")
NONNEGATIVE = ("damping", "payload", "drag", "kq")


def _kind(key: str) -> str:
    base = key.split("_")[0]
    return "positive" if base in POSITIVE else "nonnegative" if base in NONNEGATIVE else "any"


def check_physical(robot: str, params: dict[str, Tensor]) -> None:
    """Raise naming the parameter, its value and the bound when a value is not physically possible."""
    for key, value in params.items():
        v = value.detach()
        if not bool(torch.isfinite(v).all()):
            raise MetatuneError(f"{robot}: parameter {key} must be finite, got {v.tolist()}")
        kind = _kind(key)
        if kind == "positive" and bool((v <= 0).any()):
            raise MetatuneError(f"{robot}: parameter {key} must be > 0, got {v.tolist()}")
        if kind == "nonnegative" and bool((v < 0).any()):
            raise MetatuneError(f"{robot}: parameter {key} must be >= 0, got {v.tolist()}")
    if {"ixx", "iyy", "izz"} <= set(params):
        i = [params[k].detach() for k in ("ixx", "iyy", "izz")]
        for a, b, c, name in ((0, 1, 2, "ixx + iyy >= izz"), (0, 2, 1, "ixx + izz >= iyy"),
                              (1, 2, 0, "iyy + izz >= ixx")):
            if bool((i[a] + i[b] < i[c]).any()):
                raise MetatuneError(f"{robot}: principal inertias must satisfy {name} (a rigid body's), got "
                                    f"ixx={i[0].tolist()}, iyy={i[1].tolist()}, izz={i[2].tolist()}")
