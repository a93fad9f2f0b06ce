"""Starting again from the fitted surfaces: samples uniform in area on the opaque Gaussians, and the two-phase
run from scratch (hull phase in run/hull, then the run proper from its samples), resumable across the phases."""
import math

import pytest
import torch

from metatune import MetatuneError
from relight import training
from relight.gaussians import Gaussians
from relight.generate_mujoco import MujocoSceneConfig, generate_mujoco_scene
from relight.reseed import CLAMP, surface_samples
from relight.scene_layout import LayoutConfig


def gaussians(means: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor) -> Gaussians:
    g = Gaussians(means, scales)
    with torch.no_grad():
        g.opacity_logits.copy_(torch.logit(opacities))
    return g


def flat(centres: torch.Tensor, scale: float, opacity: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = centres.shape[0]
    return centres, torch.tensor([scale, scale, scale / 10]).expand(n, 3), torch.full((n,), opacity)


def test_samples_are_uniform_in_area_on_the_opaque_gaussians_only():
    # the plane z = 0: its left half covered by 16 big flat Gaussians, its right half by 256 small ones (the same
    # area), and 200 faint floaters above it. Centres alone would put 94% of the points on the right.
    big = torch.stack(torch.meshgrid(torch.linspace(-0.875, -0.125, 4), torch.linspace(-0.375, 0.375, 4),
                                     indexing="ij"), -1).reshape(-1, 2)
    small = torch.stack(torch.meshgrid(torch.linspace(0.0625, 0.9375, 16) - 0.0, torch.linspace(-0.46875, 0.46875, 16),
                                       indexing="ij"), -1).reshape(-1, 2)
    floaters = torch.rand(200, 3, generator=torch.Generator().manual_seed(1)) + torch.tensor([-0.5, -0.5, 0.5])
    parts = [flat(torch.cat([big, torch.zeros(16, 1)], -1), 0.125, 0.9),
             flat(torch.cat([small, torch.zeros(256, 1)], -1), 0.03125, 0.9), flat(floaters, 0.05, 0.2)]
    means, scales, opac = (torch.cat(t) for t in zip(*parts))
    g = gaussians(means, scales, opac)
    n = 4000
    pts = surface_samples(g, n, seed=0)
    assert pts.shape == (n, 3)
    assert float(pts[:, 2].abs().max()) <= CLAMP * 0.0125 * (1 + 1e-5)  # on the plane: within CLAMP thin sigmas
    left = int((pts[:, 0] < 0).sum())
    assert abs(left - n / 2) <= 4 * math.sqrt(n / 4), left  # a fair coin between equal areas, 4 sigma
    assert torch.equal(surface_samples(g, n, seed=0), pts) and not torch.equal(surface_samples(g, n, seed=1), pts)


def test_just_after_an_opacity_reset_the_most_opaque_are_the_surfaces():
    # every opacity low (a short fit that ended soon after its reset): relative to the most opaque one
    means = torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    g = gaussians(means, torch.full((2, 3), 0.01), torch.tensor([0.02, 0.004]))
    assert bool((surface_samples(g, 50, seed=0)[:, 0].abs() < 0.1).all())


def test_nothing_to_sample_is_a_clear_error():
    g = gaussians(torch.zeros(3, 3), torch.full((3, 3), 0.1), torch.full((3,), 0.5))
    with torch.no_grad():
        g.means[0, 0] = float("nan")
        g.log_scales.fill_(float("-inf"))
    with pytest.raises(MetatuneError, match="nothing to start again from"):
        surface_samples(g, 10, seed=0)
    with pytest.raises(MetatuneError, match="no Gaussian left"):
        surface_samples(gaussians(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0)), 10, seed=0)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    lay = LayoutConfig(resolution=24, n_cameras=8, train_lights=8, test_lights=2, views_per_light=1)
    return generate_mujoco_scene(tmp_path_factory.mktemp("moving"), MujocoSceneConfig("glossy", lay, n_points=0))


def cfg(**kw) -> training.TrainConfig:
    base = dict(method="joint", fit_steps=30, reseed_steps=8, meta_steps=0, max_points=200, max_gaussians=600,
                checkpoint_every=4)
    return training.TrainConfig(**(base | kw))


def test_from_scratch_the_run_starts_again_on_its_fitted_surfaces(scene, tmp_path, monkeypatch):
    from relight.densify import Densifier
    resets = []
    reset = Densifier.reset_opacity
    monkeypatch.setattr(Densifier, "reset_opacity", lambda self, opt: (resets.append(self.total), reset(self, opt)))
    summary = training.train(scene, tmp_path / "r", cfg(), progress=False)
    _, hull, hs = training.load_checkpoint(tmp_path / "r" / training.HULL)
    _, run, rs = training.load_checkpoint(tmp_path / "r")
    assert hs["fit_done"] == 30 and rs["fit_done"] == 8  # each phase its own steps, in its own folder
    assert hs["config"]["reseed_steps"] == 0 and rs["config"]["reseed_steps"] == 8
    assert summary["hull"]["gaussians"] == len(hull.model) and summary["gaussians"] == len(run.model)
    assert resets == [30]  # the opacity reset in the hull phase only: the run proper starts on surfaces
    assert rs["densify"]["history"][0]["before"] == 200  # built from max_points samples of the fitted surfaces
    assert summary["train_seconds"] >= summary["hull"]["train_seconds"]


@pytest.mark.parametrize("dies_at", [21, 37])  # in the hull phase (step 21 of 30), in the run proper (step 7 of 8)
def test_a_run_from_scratch_resumes_to_the_uninterrupted_result(scene, tmp_path, monkeypatch, dies_at):
    training.train(scene, tmp_path / "a", cfg(), progress=False)
    from relight.tasks import photometric_loss
    calls = {"n": 0}

    def dies(pred, target):
        calls["n"] += 1
        return photometric_loss(pred, target) * (float("nan") if calls["n"] == dies_at else 1.0)

    monkeypatch.setattr(training, "photometric_loss", dies)
    with pytest.raises(MetatuneError, match="not finite"):
        training.train(scene, tmp_path / "b", cfg(), progress=False)
    assert (tmp_path / "b" / training.CHECKPOINT).is_file() == (dies_at > 30)
    monkeypatch.setattr(training, "photometric_loss", photometric_loss)
    training.train(scene, tmp_path / "b", cfg(), progress=False)
    for folder in (training.HULL, "."):
        _, a, sa = training.load_checkpoint(tmp_path / "a" / folder)
        _, b, sb = training.load_checkpoint(tmp_path / "b" / folder)
        assert sa["n"] == sb["n"] and sa["fit_done"] == sb["fit_done"]
        for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
            assert torch.allclose(pa, pb, atol=1e-6), (folder, name)
