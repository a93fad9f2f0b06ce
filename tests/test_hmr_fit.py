"""Synthetic data, the SMPLify-style baseline and the meta-learned fit on the engine (small sizes)."""
import pytest
import torch

from hmr.body_model import BodyModel
from hmr.joint_uncertainty import root_relative_joints
from hmr.keypoints import BODY25_TO_SMPLX
from hmr.meta_fit import MetaFitConfig, MetaFitter, curvature_scale
from hmr.metrics import mpjpe
from hmr.objective import FitWeights, fit_loss, posed_joints
from hmr.pose_limits import pose_limits
from hmr.smplify import SmplifyConfig, smplify
from hmr.synthetic import SyntheticConfig, make_people, make_split, mean_start, people_problem
from metatune.errors import MetatuneError


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


def test_synthetic_split_matches_its_configuration(body):
    people = make_split(body, "heldout", 200)
    lo, hi = pose_limits()
    assert ((people.params[:, 3:72] >= lo) & (people.params[:, 3:72] <= hi)).all()
    missing = (people.kp_conf == 0).float().mean()
    assert 0.16 < missing < 0.24
    size = torch.stack([people.width, people.height], 1)[:, None]
    assert ((people.kp_xy >= 0) & (people.kp_xy <= size)).all()
    clean = make_people(body, 200, seed=1, cfg=SyntheticConfig(noise_px=0, missing=0, outliers=0))
    # the same seed draws the same people; only the corruption differs
    truth = posed_joints(body, clean.params)[:, BODY25_TO_SMPLX]
    uv = clean.focal[:, None, None] * truth[..., :2] / truth[..., 2:] + size / 2
    err = (people.kp_xy - uv).norm(dim=-1)[people.kp_conf > 0]
    assert 1.5 < err.median() < 3.5       # 2 px Gaussian noise: median |e| = 2 * 1.177
    assert 0.02 < (err > 50).float().mean() < 0.09   # about 5% outliers
    assert not torch.equal(make_split(body, "train", 4).params, people.params[:4])


def test_smplify_lowers_the_objective_and_the_error(body):
    people = make_split(body, "heldout", 8)
    prob = people_problem(body, people)
    start = mean_start(body, prob)
    x = smplify(body, prob, cfg=SmplifyConfig(camera_steps=30, body_steps=90))   # 30 per robust scale
    w = FitWeights()
    assert fit_loss(body, x, prob, w).sum() < 0.5 * fit_loss(body, start, prob, w).sum()
    gt = posed_joints(body, people.params)[:, :24]
    assert mpjpe(posed_joints(body, x)[:, :24], gt).mean() < mpjpe(posed_joints(body, start)[:, :24], gt).mean()


def test_meta_fit_trains_adapts_and_round_trips(body, tmp_path):
    cfg = MetaFitConfig(pretrain_steps=40, meta_steps=3, inner_steps=3, people_per_task=8, train_pool=64,
                        hidden=32, pretrain_lr=1e-2, pretrain_batch=16)
    fitter = MetaFitter(body, cfg)
    pre = fitter.pretrain(progress=False)
    assert sum(pre[-5:]) < sum(pre[:5])                 # the supervised start learns
    before = [p.detach().clone() for p in fitter.regressor.parameters()]
    hist = fitter.train(progress=False)
    assert len(hist) == 3 and all(h["inner_loss_after"] < h["inner_loss_before"] for h in hist)
    assert any(not torch.equal(a, b) for a, b in zip(fitter.regressor.parameters(), before))
    lr = fitter.tuner.log_lr[0].exp()
    assert lr.shape == (85,) and not torch.allclose(lr, torch.full_like(lr, cfg.inner_lr))  # learned step sizes
    people = make_split(body, "heldout", 6)
    prob = people_problem(body, people)
    res = fitter.fit(prob)
    assert res.losses[-1] < res.losses[0]
    assert res.param_std.shape == (6, 85) and (res.param_std > 0).all()
    assert res.joint_std_mm.shape == (6, 24) and (res.joint_std_mm[:, 1:] > 0).all()
    assert res.joint_std_mm[:, 0].abs().max() < 1e-6    # the root is the reference point
    # the posterior std never exceeds the learned prior std, and it varies from person to person
    prior = fitter.tuner.log_prior_std[0].exp().detach() / fitter.scale
    assert (res.param_std <= prior * (1 + 1e-5)).all()
    assert (res.param_std.std(0) > 0).any()
    # down the kinematic chain joints are less certain: wrists (20, 21) more than hips (1, 2)
    assert res.joint_std_mm[:, [20, 21]].mean() > res.joint_std_mm[:, [1, 2]].mean()
    fitter.calibrate(make_split(body, "train", 8))
    fitter.save(tmp_path / "meta.pt")
    again = MetaFitter.load(body, tmp_path / "meta.pt")
    a = fitter.fit(prob)   # the checkpoint holds the tuner's generator: both draw the same curvature probes
    b = again.fit(prob)
    torch.testing.assert_close(a.params, b.params)
    torch.testing.assert_close(a.joint_std_mm, b.joint_std_mm)
    err = root_relative_joints(body, a.params) - root_relative_joints(body, people.params)
    assert torch.isfinite(err).all()


def test_pretraining_resumed_from_a_checkpoint_ends_where_one_go_does(body, tmp_path):
    """Adam's moments, the one-cycle schedule over all the steps and the task generator go through the
    checkpoint: 4 steps, save, load, 2 more equal 6 in one go; the unfinished checkpoint is refused for use."""
    cfg = MetaFitConfig(pretrain_steps=6, train_pool=64, hidden=32, pretrain_batch=16, people_per_task=4)
    whole = MetaFitter(body, cfg, scale=torch.ones(85))
    whole.pretrain(progress=False)
    part = MetaFitter(body, cfg, scale=torch.ones(85))
    assert len(part.pretrain(4, progress=False)) == 4
    part.save(tmp_path / "part.pt", finished=False)
    with pytest.raises(MetatuneError, match="unfinished hmr train run .pretraining step 4 of 6"):
        MetaFitter.load(body, tmp_path / "part.pt")
    resumed = MetaFitter.load(body, tmp_path / "part.pt", resume=True)
    assert resumed.pretrain(10, progress=False) == whole.pretrain_losses[4:]   # at most the rest
    assert resumed.pretrain(progress=False) == [] and resumed.pretrain_losses == whole.pretrain_losses
    for a, b in zip(whole.regressor.parameters(), resumed.regressor.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("steps", [1, 2, 20, 21])
def test_the_one_cycle_schedule_takes_any_number_of_pretraining_steps(body, steps):
    """At 20 steps the 5% warm-up would end at step 0, where torch's OneCycleLR divides by zero."""
    cfg = MetaFitConfig(pretrain_steps=steps, train_pool=16, hidden=8, pretrain_batch=4, people_per_task=4)
    fitter = MetaFitter(body, cfg, scale=torch.ones(85))
    assert len(fitter.pretrain(progress=False)) == steps


def test_uncertainty_updates_freeze_converged_parameters(body):
    """Started near the solution (where a good regressor starts), with the default freeze ratio some
    parameters' std collapses and they stop moving, while the rest move on."""
    cfg = MetaFitConfig(train_pool=64, hidden=32)
    assert cfg.freeze_ratio == MetaFitConfig().freeze_ratio
    people = make_split(body, "heldout", 16)
    prob = people_problem(body, people)
    few = people.subset(slice(0, 4))            # the fit's units, measured on a few people to keep this fast
    fitter = MetaFitter(body, cfg, scale=curvature_scale(body, people_problem(body, few), few.params, FitWeights()))
    near = people.params + 0.05 * torch.randn(people.params.shape, generator=torch.Generator().manual_seed(0))
    fitter.regressor.forward = lambda task: near          # an oracle start instead of the learned one
    fitter.tuner.generator.manual_seed(0)
    early = fitter.fit(prob, steps=3)
    fitter.tuner.generator.manual_seed(0)      # the same Hutchinson probes (the tuner's own) for the first 3 steps
    late = fitter.fit(prob, steps=5)
    assert early.frozen.any(), "no parameter froze"
    assert (late.frozen >= early.frozen).all()                 # frozen stays frozen
    torch.testing.assert_close(late.params[early.frozen], early.params[early.frozen], atol=0, rtol=0)
    assert (late.params[~late.frozen] != early.params[~late.frozen]).float().mean() > 0.5
    # frozen where the posterior std collapsed relative to the learned prior std
    ratio = late.param_std / (fitter.tuner.log_prior_std[0].exp().detach() / fitter.scale)
    assert ratio[late.frozen].median() < cfg.freeze_ratio < ratio[~late.frozen].median()
