"""Export and import the Gaussians as a standard 3D Gaussian splatting PLY, Phong attributes as extra properties.

The export has graphdeco's layout exactly (x y z, nx ny nz, f_dc_0..2, f_rest_0..44 for SH degree 3,
opacity, scale_0..2, rot_0..3), so its `load_ply` (also MetaGS's) and 3DGS viewers read it; the Phong
properties follow. `import_ply` reads ours back, or any standard 3DGS file as a geometry start (materials
at their initial values, the albedo from the file's base colour).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metatune import MetatuneError
from metatune.atomic import atomic_open
from relight.model import RelightModel
from relight.ply_format import read_elements

SH_C0 = 0.28209479177387814  # degree-0 spherical harmonic: viewers show colour 0.5 + SH_C0 * f_dc

# The 3DGS layout common viewers read, then ours (raw, unconstrained values like the 3DGS ones).
SH_REST = [f"f_rest_{i}" for i in range(45)]  # SH degrees 1-3, three channels: zero (view-independent colour)
STANDARD = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *SH_REST, "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
GEOMETRY = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
            "rot_0", "rot_1", "rot_2", "rot_3"]  # what a 3DGS file must have to start from
PHONG = (["albedo_0", "albedo_1", "albedo_2", "specular", "shininess", "normal_offset_0", "normal_offset_1",
          "normal_offset_2", "ambient_0", "ambient_1", "ambient_2"])


def export_ply(model: RelightModel, path: Path) -> None:
    """Write a binary little-endian PLY: 3DGS fields (colour = diffuse albedo) plus the Phong logits."""
    g = model.gaussians
    with torch.no_grad():
        albedo = torch.sigmoid(model.albedo_logit)
        cols = [g.means, model.materials()["normals"], (albedo - 0.5) / SH_C0, torch.zeros(len(model), 45),
                g.opacity_logits[:, None],
                g.log_scales, g.quats, model.albedo_logit, model.specular_logit, model.log_shininess,
                model.normal_offset, model.ambient_logit]
        data = torch.cat([c.reshape(len(model), -1).float() for c in cols], 1).numpy().astype("<f4")
    names = STANDARD + PHONG
    header = "ply\nformat binary_little_endian 1.0\nelement vertex %d\n%send_header\n" % (
        len(model), "".join(f"property float {n}\n" for n in names))
    with atomic_open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(np.ascontiguousarray(data).tobytes())


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
