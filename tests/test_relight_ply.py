"""3DGS PLY export: the standard properties viewers read, Phong extras, and an exact round trip."""
import numpy as np
import pytest
import torch

from metatune import MetatuneError
from relight.camera import Camera, look_at
from relight.light import Light
from relight.model import RelightModel
from relight.ply import PHONG, SH_C0, STANDARD, export_ply, import_ply, read_ply


def model():
    gen = torch.Generator().manual_seed(0)
    pts = torch.randn(200, 3, generator=gen) * 0.3
    nrm = torch.nn.functional.normalize(torch.randn(200, 3, generator=gen), dim=-1)
    m = RelightModel(pts, nrm, torch.full((200,), 0.05))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return m


def test_round_trip_renders_identically(tmp_path):
    m = model()
    export_ply(m, tmp_path / "g.ply")
    back = import_ply(tmp_path / "g.ply")
    cam = Camera.from_fov(look_at(torch.tensor([2.0, 0.5, 1.0]), torch.zeros(3)), 0.8, 32, 32)
    light = Light((1.0, -1.0, 2.0))
    with torch.no_grad():
        a = m.render(cam, light, m.light_init())
        b = back.render(cam, light, back.light_init())
    assert torch.allclose(a, b, atol=1e-5) and a.max() > 0.05


def test_standard_fields_follow_3dgs_conventions(tmp_path):
    m = model()
    export_ply(m, tmp_path / "g.ply")
    head = (tmp_path / "g.ply").read_bytes().split(b"end_header")[0].decode()
    assert "format binary_little_endian 1.0" in head and "element vertex 200" in head
    cols = read_ply(tmp_path / "g.ply")
    assert list(cols) == STANDARD + PHONG
    albedo = torch.sigmoid(m.albedo_logit.detach())
    assert torch.allclose(torch.tensor(0.5 + SH_C0 * cols["f_dc_0"]), albedo[:, 0], atol=1e-6)
    assert torch.allclose(torch.tensor(cols["opacity"]), m.gaussians.opacity_logits.detach())  # logit, as 3DGS
    assert torch.allclose(torch.tensor(cols["scale_1"]), m.gaussians.log_scales.detach()[:, 1])  # log scale


def test_bad_ply_files_raise(tmp_path):
    (tmp_path / "x.ply").write_text("not a ply")
    with pytest.raises(MetatuneError, match="not a PLY"):
        import_ply(tmp_path / "x.ply")
    with pytest.raises(MetatuneError, match="not found"):
        import_ply(tmp_path / "missing.ply")


def _write_ply(path, fmt, header_props, rows, tail=b""):
    """A PLY written the way other tools do (not by our exporter): header, vertex rows, then extra bytes."""
    head = f"ply\nformat {fmt} 1.0\ncomment written by a test\nelement vertex {len(rows)}\n"
    head += "".join(f"property {t} {n}\n" for t, n in header_props)
    head += "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
    if fmt == "ascii":
        body = "".join(" ".join(str(v) for v in r) + "\n" for r in rows).encode() + b"3 0 1 2\n"
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        dtype = np.dtype([(n, order + {"double": "f8", "float": "f4", "uchar": "u1"}[t]) for t, n in header_props])
        body = np.array([tuple(r) for r in rows], dtype=dtype).tobytes()
        body += np.array([3], dtype="u1").tobytes() + np.array([0, 1, 2], dtype=order + "i4").tobytes()
    path.write_bytes(head.encode() + body + tail)
    return path


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_points3d_ply_as_colmap_and_3dgs_write_it(tmp_path, fmt):
    from relight.pointcloud import read_points_ply

    rows = [(0.5, -1.25, 2.0, 255, 0, 10), (1.0, 2.0, 3.0, 1, 2, 3), (-0.125, 0.0, 4.5, 9, 9, 9)]
    props = [("double", "x"), ("double", "y"), ("double", "z"), ("uchar", "red"), ("uchar", "green"),
             ("uchar", "blue")]
    pts = read_points_ply(_write_ply(tmp_path / "points3d.ply", fmt, props, rows))
    assert pts.dtype == np.float32 and np.array_equal(pts, np.array([r[:3] for r in rows], dtype=np.float32))


def test_a_standard_3dgs_ply_is_a_geometry_start_and_our_export_has_graphdeco_layout(tmp_path):
    m = RelightModel(torch.randn(7, 3), torch.nn.functional.normalize(torch.randn(7, 3), dim=-1),
                     torch.full((7,), 0.05))
    export_ply(m, tmp_path / "ours.ply")
    names = list(read_ply(tmp_path / "ours.ply"))
    graphdeco = (["x", "y", "z", "nx", "ny", "nz"] + [f"f_dc_{i}" for i in range(3)]
                 + [f"f_rest_{i}" for i in range(45)] + ["opacity"] + [f"scale_{i}" for i in range(3)]
                 + [f"rot_{i}" for i in range(4)])
    assert names[: len(graphdeco)] == graphdeco  # what graphdeco's load_ply reads (SH degree 3)
    # a file with the 3DGS properties only (no Phong materials), as a 3DGS trainer writes it
    cols = read_ply(tmp_path / "ours.ply")
    props = [("float", n) for n in graphdeco]
    rows = [[float(cols[n][i]) for n in graphdeco] for i in range(7)]
    plain = _write_ply(tmp_path / "3dgs.ply", "binary_little_endian", props, rows)
    back = import_ply(plain)
    assert torch.allclose(back.gaussians.means, m.gaussians.means, atol=1e-6)
    assert torch.allclose(back.gaussians.log_scales, m.gaussians.log_scales, atol=1e-6)
    base = (0.5 + SH_C0 * torch.from_numpy(np.stack([cols[f"f_dc_{i}"] for i in range(3)], 1))).clamp(0.02, 0.98)
    assert torch.allclose(torch.sigmoid(back.albedo_logit), base, atol=1e-5)
    with pytest.raises(MetatuneError, match="missing properties"):
        import_ply(_write_ply(tmp_path / "points.ply", "ascii", [("float", "x"), ("float", "y"), ("float", "z")],
                              [(0, 0, 0)]))
