"""Import MuJoCo for off-screen CPU rendering without breaking a later triton import.

Shared by every domain that simulates or renders with MuJoCo (the engine itself never imports it).

MuJoCo reads MUJOCO_GL on import; with osmesa it loads llvmpipe's LLVM into the process's global
symbols, after which importing triton (torch._dynamo and torch.func pull it in) segfaults. Importing
triton first avoids the clash (`load_mujoco`). When a script imported MuJoCo (or dm_control) first,
`guard_triton` makes `import triton` fail with ImportError instead, which torch treats as "no triton"
(it is only needed to compile GPU kernels).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType


class _NoTriton(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Refuses `import triton` (and its submodules) with an ImportError naming why."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name == "triton" or name.startswith("triton."):
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        raise ImportError("triton is disabled in this process: MuJoCo was imported first with MUJOCO_GL=osmesa, "
                          "whose LLVM makes triton's crash (import metatune or envs before mujoco to have both)")

    def exec_module(self, module: ModuleType) -> None:  # never reached: create_module raises
        raise ImportError("triton is disabled in this process")


def guard_triton() -> None:
    """If MuJoCo's osmesa is already loaded and triton is not, make later `import triton` an ImportError."""
    if "mujoco" not in sys.modules or "triton" in sys.modules:
        return
    if os.environ.get("MUJOCO_GL", "").lower() != "osmesa":
        return
    if not any(isinstance(f, _NoTriton) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoTriton())


def load_mujoco() -> ModuleType:
    """The mujoco module, set up for off-screen rendering (osmesa unless MUJOCO_GL says otherwise)."""
    guard_triton()
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    try:
        import triton  # noqa: F401
    except ImportError:  # torch builds without triton, or triton disabled above: nothing to clash with
        pass
    import mujoco
    return mujoco
