"""Export and import the Gaussians as a standard 3D Gaussian splatting PLY, Phong attributes as extra properties.

The export has graphdeco's layout exactly (x y z, nx ny nz, f_dc_0..2, f_rest_0..44 for SH degree 3,
opacity, scale_0..2, rot_0..3), so its `load_ply` (also MetaGS's) and 3DGS viewers read it; the Phong
properties follow. `import_ply` reads ours back, or any standard 3DGS file as a geometry start (materials
at their initial values, the albedo from the file's base colour). `export_ply(..., sh=...)` writes baked SH
colours (relight.bake) into f_dc/f_rest instead of the albedo.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metatune import MetatuneError
from metatune.atomic import atomic_open
from relight.model import RelightModel
from relight.ply_format import read_elements
from relight.sh import SH_C0  # SH_C0: viewers show a degree-0 colour 0.5 + SH_C0 * f_dc

# The 3DGS layout common viewers read, then ours (raw, unconstrained values like the 3DGS ones).
SH_REST = [f"f_rest_{i}" for i in range(45)]  # SH degrees 1-3, three channels, channel-major (15 R, 15 G, 15 B)
STANDARD = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *SH_REST, "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
GEOMETRY = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
            "rot_0", "rot_1", "rot_2", "rot_3"]  # what a 3DGS file must have to start from
PHONG = (["albedo_0", "albedo_1", "albedo_2", "specular", "shininess", "normal_offset_0", "normal_offset_1",
          "normal_offset_2", "ambient_0", "ambient_1", "ambient_2"])


def export_ply(model: RelightModel, path: Path, sh: torch.Tensor | None = None,  # [N, 16, 3]
               comments: list[str] | None = None) -> None:
    """Write a binary little-endian PLY: 3DGS fields plus the Phong logits. The colour is the diffuse albedo
    (view-independent: f_rest zero), or the given degree-3 SH coefficients (relight.bake.bake_sh)."""
    g = model.gaussians
    n = len(model)
    with torch.no_grad():
        if sh is None:
            albedo = torch.sigmoid(model.albedo_logit)
            f_dc, f_rest = (albedo - 0.5) / SH_C0, torch.zeros(n, 45)
        else:
            if tuple(sh.shape) != (n, 16, 3) or not bool(torch.isfinite(sh).all()):
                raise MetatuneError(f"SH colours must be finite, of shape [{n}, 16, 3]; got {list(sh.shape)}")
            f_dc, f_rest = sh[:, 0, :], sh[:, 1:, :].transpose(1, 2)  # f_rest channel-major, as graphdeco's
        cols = [g.means, model.materials()["normals"], f_dc, f_rest, g.opacity_logits[:, None],
                g.log_scales, g.quats, model.albedo_logit, model.specular_logit, model.log_shininess,
                model.normal_offset, model.ambient_logit]
        data = torch.cat([c.reshape(n, -1).float().cpu() for c in cols], 1).numpy().astype("<f4")
    names = STANDARD + PHONG
    if any("\n" in c or "\r" in c or not c.isascii() for c in comments or []):
        raise MetatuneError(f"PLY comments must be single ASCII lines, got {comments}")
    notes = "".join(f"comment {c}\n" for c in comments or [])
    header = "ply\nformat binary_little_endian 1.0\n%selement vertex %d\n%send_header\n" % (
        notes, n, "".join(f"property float {p}\n" for p in names))
    with atomic_open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(np.ascontiguousarray(data).tobytes())


def sh_from_columns(cols: dict[str, np.ndarray], path: Path | str = "PLY") -> torch.Tensor:  # [N, K, 3]
    """The SH coefficients of a 3DGS PLY's columns: f_dc_0..2 and f_rest_* (channel-major, any degree 0-3)."""
    count = sum(c.startswith("f_rest_") for c in cols)
    rest = [f"f_rest_{i}" for i in range(count)]
    if not set(rest) <= set(cols) or count not in (0, 9, 24, 45):
        raise MetatuneError(f"{path}: the f_rest properties are not f_rest_0.. of SH degree 0-3 (0, 9, 24 or 45 "
                            f"of them), got {count}")
    n = len(cols["f_dc_0"])
    dc = np.stack([cols[f"f_dc_{i}"] for i in range(3)], 1)[:, None, :]  # [N, 1, 3]
    extra = (np.stack([cols[c] for c in rest], 1).reshape(n, 3, -1).transpose(0, 2, 1) if rest
             else np.zeros((n, 0, 3), np.float32))  # [N, K-1, 3]
    return torch.from_numpy(np.ascontiguousarray(np.concatenate([dc, extra], 1), dtype=np.float32))


def read_ply(path: Path) -> dict[str, np.ndarray]:
    """The vertex properties of a PLY (any format and scalar type), as float32 arrays by name."""
    return {k: v.astype(np.float32) for k, v in read_elements(path).items()}


def import_ply(path: Path) -> RelightModel:
    """A RelightModel from a PLY written by `export_ply`, or from any standard 3DGS PLY (a geometry start:
    its means, rotations, scales and opacities, albedo from its base colour, other materials initial)."""
    cols = read_ply(path)
    missing = [n for n in GEOMETRY if n not in cols]
    if missing:
        raise MetatuneError(f"{path}: not a 3D Gaussian splatting PLY, missing properties {missing}")
    phong = all(n in cols for n in PHONG)

    def take(*names: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([cols[n] for n in names], 1).copy())

    n = len(cols["x"])
    means = take("x", "y", "z")
    if not bool(torch.isfinite(means).all()):
        raise MetatuneError(f"{path}: non-finite Gaussian means")
    z = torch.zeros(n, 3)
    z[:, 2] = 1
    model = RelightModel(means, z, torch.ones(n))
    with torch.no_grad():
        g = model.gaussians
        g.quats.copy_(take("rot_0", "rot_1", "rot_2", "rot_3"))
        g.log_scales.copy_(take("scale_0", "scale_1", "scale_2"))
        g.opacity_logits.copy_(take("opacity")[:, 0])
        if phong:
            model.albedo_logit.copy_(take("albedo_0", "albedo_1", "albedo_2"))
            model.specular_logit.copy_(take("specular"))
            model.log_shininess.copy_(take("shininess"))
            model.normal_offset.copy_(take("normal_offset_0", "normal_offset_1", "normal_offset_2"))
            model.ambient_logit.copy_(take("ambient_0", "ambient_1", "ambient_2"))
        else:  # a plain 3DGS file: its base colour (what viewers show) as the diffuse albedo
            colour = (0.5 + SH_C0 * take("f_dc_0", "f_dc_1", "f_dc_2")).clamp(0.02, 0.98)
            model.albedo_logit.copy_(torch.logit(colour))
    return model
