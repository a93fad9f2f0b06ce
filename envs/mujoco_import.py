"""MuJoCo, imported after triton.

With MUJOCO_GL=osmesa, `import mujoco` loads OSMesa (llvmpipe, its own LLVM); a later `import triton`
(which torch.func / forward-mode rollouts pull in through torch._dynamo) then segfaults. Loading
triton first avoids it. Every module of this package imports MuJoCo from here.
"""
try:
    import triton  # noqa: F401
except ImportError:  # CPU-only torch builds without triton have nothing to clash with
    pass
import mujoco  # noqa: E402

__all__ = ["mujoco"]
