"""Export and import the Gaussians as a standard 3D Gaussian splatting PLY, Phong attributes as extra properties."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metatune import MetatuneError
from metatune.atomic import atomic_open
from relight.model import RelightModel

SH_C0 = 0.28209479177387814  # degree-0 spherical harmonic: viewers show colour 0.5 + SH_C0 * f_dc

# The 3DGS layout common viewers read, then ours (raw, unconstrained values like the 3DGS ones).
STANDARD = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
PHONG = (["albedo_0", "albedo_1", "albedo_2", "specular", "shininess", "normal_offset_0", "normal_offset_1",
          "normal_offset_2", "ambient_0", "ambient_1", "ambient_2"])


def export_ply(model: RelightModel, path: Path) -> None:
    """Write a binary little-endian PLY: 3DGS fields (colour = diffuse albedo) plus the Phong logits."""
    g = model.gaussians
    with torch.no_grad():
        albedo = torch.sigmoid(model.albedo_logit)
        cols = [g.means, model.materials()["normals"], (albedo - 0.5) / SH_C0, g.opacity_logits[:, None],
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
    """The float vertex properties of a binary little-endian PLY, by name."""
    path = Path(path)
    if not path.is_file():
        raise MetatuneError(f"PLY file not found: {path}")
    raw = path.read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply") or end < 0:
        raise MetatuneError(f"{path}: not a PLY file")
    lines = raw[:end].decode("ascii", "replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise MetatuneError(f"{path}: only binary little-endian PLY is supported")
    count = next((int(l.split()[2]) for l in lines if l.startswith("element vertex")), None)
    props = [l.split()[2] for l in lines if l.startswith("property float")]
    if count is None or len(props) != sum(l.startswith("property") for l in lines):
        raise MetatuneError(f"{path}: expected one vertex element with float properties")
    body = np.frombuffer(raw[end + len(b"end_header\n"):], dtype="<f4")
    if body.size != count * len(props):
        raise MetatuneError(f"{path}: holds {body.size} floats, expected {count} x {len(props)}")
    table = body.reshape(count, len(props))
    return {n: table[:, i] for i, n in enumerate(props)}


def import_ply(path: Path) -> RelightModel:
    """A RelightModel from a PLY written by `export_ply` (all Phong properties required)."""
    cols = read_ply(path)
    missing = [n for n in STANDARD + PHONG if n not in cols]
    if missing:
        raise MetatuneError(f"{path}: missing properties {missing}")

    def take(*names: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([cols[n] for n in names], 1).copy())

    n = len(cols["x"])
    means = take("x", "y", "z")
    z = torch.zeros(n, 3)
    z[:, 2] = 1
    model = RelightModel(means, z, torch.ones(n))
    with torch.no_grad():
        g = model.gaussians
        g.quats.copy_(take("rot_0", "rot_1", "rot_2", "rot_3"))
        g.log_scales.copy_(take("scale_0", "scale_1", "scale_2"))
        g.opacity_logits.copy_(take("opacity")[:, 0])
        model.albedo_logit.copy_(take("albedo_0", "albedo_1", "albedo_2"))
        model.specular_logit.copy_(take("specular"))
        model.log_shininess.copy_(take("shininess"))
        model.normal_offset.copy_(take("normal_offset_0", "normal_offset_1", "normal_offset_2"))
        model.ambient_logit.copy_(take("ambient_0", "ambient_1", "ambient_2"))
    return model
