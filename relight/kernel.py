"""The fused CPU rasterizer (relight/_ext/fused.cpp): building it, loading it, and its autograd Function.

Projection, binning (depth sort, 8x8 tile lists) and compositing with 3DGS's early termination, forward and
backward, in C++ with OpenMP. It is built once by the project's setup (`python -m relight.kernel --build`,
run by scripts/setup.sh) with torch.utils.cpp_extension (g++, ninja) into relight/_ext/build, and loaded
from there at run time; `rasterize` uses it for CPU tensors when it is built (relight/rasterize.py).
The PyTorch code in projection.py and rasterize.py stays the reference it is tested against.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from metatune.extension import Extension
from relight.camera import Camera
from relight.projection import ALPHA_MAX, ALPHA_MIN, BLUR, NEAR, Projected

SOURCE = Path(__file__).with_name("_ext") / "fused.cpp"
# -ffp-contract=off: no fused multiply-adds, so that the backward recomputes every alpha bit for bit as the
# forward did (the cut-off alpha >= ALPHA_MIN decides the same way in both). -fno-trapping-math: floating-
# point exceptions are never enabled, and without it g++ keeps min/max and selects as branches, which stops
# the per-pixel loops from vectorising (no value changes; unlike -ffast-math it reorders nothing).
# -march=native: the build happens on the machine that runs it (setup); AVX2 takes 8 pixels at a time.
CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-fopenmp"]
T_MIN = 1e-4  # a pixel stops compositing at the Gaussian that would bring its transmittance below this


def _checked(module: ModuleType) -> ModuleType:
    """The module, once its constants are found to be relight's."""
    from relight.rasterize import TILE
    consts = (module.TILE, module.NEAR, module.BLUR, module.ALPHA_MIN, module.ALPHA_MAX, module.T_MIN)
    if consts != (TILE, NEAR, BLUR, ALPHA_MIN, ALPHA_MAX, T_MIN):
        raise RuntimeError(f"fused.cpp's constants {consts} differ from relight's "
                           f"{(TILE, NEAR, BLUR, ALPHA_MIN, ALPHA_MAX, T_MIN)}")
    return module


EXTENSION = Extension("relight_fused", SOURCE, Path(__file__), "python -m relight.kernel --build", CFLAGS,
                      ldflags=["-fopenmp"], check=_checked, fallback=", using the PyTorch rasterizer")
load, build, is_built, unavailable_reason = (EXTENSION.load, EXTENSION.build, EXTENSION.is_built,
                                             EXTENSION.unavailable_reason)


def supports(means: Tensor, colors: Tensor, *others: Tensor) -> bool:
    """Whether the kernel takes these tensors: on the CPU, all float32 or all float64, at most 58 channels."""
    ts = (means, colors, *others)
    return (all(t.device.type == "cpu" and t.dtype == means.dtype for t in ts)
            and means.dtype in (torch.float32, torch.float64) and colors.dim() == 2 and colors.shape[1] <= 58)


class FusedRasterize(torch.autograd.Function):
    """Binning and compositing of projected Gaussians (forward), and the gradients of the whole pipeline
    (backward): d image, d alpha -> d means, quats, scales, opacities, colours, background, and to `watched`
    (the screen-space means' gradient, for densification) when it is given."""

    @staticmethod
    def forward(ctx, means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                background: Tensor, watched: Tensor | None,
                means2d: Tensor, conics: Tensor, depths: Tensor, radii: Tensor,  # project_forward's results
                viewmat: Tensor, intrinsics: tuple[float, float, float, float, int, int],
                ) -> tuple[Tensor, Tensor]:  # image [H, W, C], alpha [H, W]
        ext = load()
        width, height = intrinsics[4], intrinsics[5]
        image, alpha, t_final, last, offsets, entries = ext.composite_forward(
            means2d, conics, depths, radii, opacities, colors, background, width, height)
        ctx.save_for_backward(means, quats, scales, opacities, colors, background, means2d, conics, radii, viewmat,
                              t_final, last, offsets, entries)
        ctx.intrinsics = intrinsics
        return image, alpha

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_image: Tensor, grad_alpha: Tensor):  # noqa: ANN205 - one gradient per input
        ext = load()
        (means, quats, scales, opacities, colors, background, means2d, conics, radii, viewmat,
         t_final, last, offsets, entries) = ctx.saved_tensors
        fx, fy, cx, cy = ctx.intrinsics[:4]
        grad_image, grad_alpha = grad_image.contiguous(), grad_alpha.contiguous()
        g_m2d, g_conics, g_opac, g_colors = ext.composite_backward(
            means2d, conics, opacities, colors, background, t_final, last, offsets, entries, grad_image, grad_alpha)
        g_means, g_quats, g_scales = ext.project_backward(means, quats, scales, opacities, radii, viewmat,
                                                          fx, fy, cx, cy, g_m2d, g_conics)
        need = ctx.needs_input_grad
        g_bg = (grad_image * t_final[..., None]).sum((0, 1)) if need[5] else None
        return (g_means, g_quats, g_scales, g_opac, g_colors, g_bg, g_m2d if need[6] else None,
                None, None, None, None, None, None)


def project_fused(means: Tensor,  # [N, 3]
                  quats: Tensor,  # [N, 4]
                  scales: Tensor,  # [N, 3]
                  opacities: Tensor,  # [N]
                  camera: Camera) -> Projected:
    """projection.py's `project` computed by the kernel (no gradient)."""
    ext = load()
    view = camera.viewmat().to(means).detach().contiguous()
    m2d, conics, depths, radii = ext.project_forward(*(t.detach().contiguous() for t in (means, quats, scales, opacities)),
                                                     view, camera.fx, camera.fy, camera.cx, camera.cy)
    return Projected(m2d, conics, depths, radii)


def rasterize_fused(means: Tensor,  # [N, 3]
                    quats: Tensor,  # [N, 4] (w, x, y, z)
                    scales: Tensor,  # [N, 3]
                    opacities: Tensor,  # [N]
                    colors: Tensor,  # [N, C]
                    camera: Camera,
                    background: Tensor | None = None,  # [C]
                    watch=None,  # noqa: ANN001 - Callable[[Projected], None], as rasterize's
                    ) -> tuple[Tensor, Tensor]:  # image [H, W, C], alpha [H, W]
    """`rasterize` through the fused kernel (call `load()` first). `watch` gets a Projected whose `means2d`
    is a leaf holding the screen positions, detached from the render: after backward its `.grad` is
    d loss / d means2d, which the kernel computes on its way to the means."""
    proj = project_fused(means, quats, scales, opacities, camera)
    watched = None
    if watch is not None:
        grads = torch.is_grad_enabled() and any(t.requires_grad for t in (means, quats, scales, opacities))
        watched = proj.means2d.clone().requires_grad_(grads)
        watch(Projected(watched, proj.conics, proj.depths, proj.radii))
    nc = colors.shape[-1]
    bg = torch.zeros(nc, dtype=colors.dtype) if background is None else background.to(colors)
    view = camera.viewmat().to(means).detach().contiguous()
    intrinsics = (float(camera.fx), float(camera.fy), float(camera.cx), float(camera.cy),
                  int(camera.width), int(camera.height))
    return FusedRasterize.apply(means.contiguous(), quats.contiguous(), scales.contiguous(), opacities.contiguous(),
                                colors.contiguous(), bg.contiguous(), watched, proj.means2d, proj.conics,
                                proj.depths, proj.radii, view, intrinsics)


def main() -> int:
    ap = argparse.ArgumentParser(description="Build relight's fused CPU rasterizer into relight/_ext/build.")
    ap.add_argument("--build", action="store_true", help="compile (only what changed) and check it imports")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if not args.build:
        print("built" if is_built() else "not built")
        return 0
    build(verbose=args.verbose)
    print(f"[relight.kernel] built {EXTENSION.library}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
