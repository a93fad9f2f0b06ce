"""Import MuJoCo for off-screen CPU rendering without breaking a later torch._dynamo import.

Shared by every domain that simulates or renders with MuJoCo (the engine itself never imports it).

MuJoCo reads MUJOCO_GL on import; with osmesa it loads llvmpipe's LLVM, after which importing
triton (torch._dynamo pulls it in, e.g. through the optimizers) segfaults. Importing triton first
avoids the clash.
"""
from __future__ import annotations

import os
from types import ModuleType


def load_mujoco() -> ModuleType:
    """The mujoco module, set up for off-screen rendering (osmesa unless MUJOCO_GL says otherwise)."""
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    try:
        import triton  # noqa: F401
    except ImportError:  # torch builds without triton have nothing to clash with
        pass
    import mujoco
    return mujoco
