"""3DGS PLY export: the standard properties viewers read, Phong extras, and an exact round trip."""
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
