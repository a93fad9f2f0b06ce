"""Camera, objective, uncertainty propagation and metrics against closed forms, OpenCV, SciPy and finite differences."""
import math

import cv2
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from hmr.body_model import BodyModel
from hmr.camera import init_translation, project
from hmr.joint_uncertainty import joint_jacobian, root_relative_joints
from hmr.keypoints import BODY25_TO_SMPLX
from hmr.metrics import calibration_scale, coverage, mpjpe, pa_mpjpe, procrustes_align, spearman
from hmr.objective import FitWeights, fit_loss, geman_mcclure, hessian_diagonal, posed_joints
from hmr.synthetic import SyntheticConfig, make_people, people_problem


@pytest.fixture(scope="module")
def body():
    return BodyModel.load()


def test_projection_matches_opencv():
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(1, 20, 3, generator=g, dtype=torch.float64) + torch.tensor([0, 0, 5.0], dtype=torch.float64)
    f, c = 800.0, (320.0, 240.0)
    k = np.array([[f, 0, c[0]], [0, f, c[1]], [0, 0, 1]])
    ref, _ = cv2.projectPoints(pts[0].numpy(), np.zeros(3), np.zeros(3), k, None)
    ours = project(pts, torch.tensor([f], dtype=torch.float64), torch.tensor([c], dtype=torch.float64))
    np.testing.assert_allclose(ours[0].numpy(), ref[:, 0], atol=1e-9)


def test_torso_length_init_recovers_depth_by_similar_triangles(body):
    people = make_people(body, 16, seed=3, cfg=SyntheticConfig(noise_px=0, missing=0, outliers=0, yaw_deg=0,
                                                               tilt_deg=0, beta_std=0))
    people.params[:, 3:72] = 0          # mean body facing the camera: torso segments parallel to the image
    uv = project(posed_joints(body, people.params)[:, BODY25_TO_SMPLX], people.focal,
                 torch.stack([people.width, people.height], 1) / 2)
    joints0 = posed_joints(body, torch.cat([people.params[:, :82], torch.zeros(16, 3)], 1))
    t = init_translation(joints0, uv, torch.ones(16, 25), BODY25_TO_SMPLX, people.focal,
                         torch.stack([people.width, people.height], 1) / 2)
    rel = (t[:, 2] - people.params[:, 84]).abs() / people.params[:, 84]
    assert rel.max() < 0.03
    assert (t[:, :2] - people.params[:, 82:84]).abs().max() < 0.03 * people.params[:, 84].max()
    # a head-and-shoulders view (no hip, no neck): the shoulder width gives the depth the same way
    portrait = torch.zeros(16, 25)
    portrait[:, [BODY25_TO_SMPLX.index(j) for j in (24, 25, 26, 27, 28, 16, 17)]] = 1.0   # face, shoulders
    t = init_translation(joints0, uv, portrait, BODY25_TO_SMPLX, people.focal,
                         torch.stack([people.width, people.height], 1) / 2)
    assert ((t[:, 2] - people.params[:, 84]).abs() / people.params[:, 84]).max() < 0.03


def test_geman_mcclure_closed_form():
    sq = torch.tensor([0.0, 1.0, 1e8])
    torch.testing.assert_close(geman_mcclure(sq, 2.0), torch.tensor([0.0, 4 / 5, 4.0]), atol=1e-6, rtol=1e-6)


def test_hessian_diagonal_matches_finite_differences(body):
    people = make_people(body, 2, seed=4)
    prob = people_problem(body, people)
    x = people.params.double()
    prob.kp_xy, prob.kp_conf, prob.focal, prob.centre, prob.transl_init, prob.scale = (
        t.double() for t in (prob.kp_xy, prob.kp_conf, prob.focal, prob.centre, prob.transl_init, prob.scale))
    body64 = BodyModel.load().double()
    w = FitWeights()
    diag = hessian_diagonal(body64, x, prob, w)

    def grad(z):
        z = z.clone().requires_grad_()
        return torch.autograd.grad(fit_loss(body64, z, prob, w).sum(), z)[0]

    for i in (0, 5, 40, 75, 84):
        e = torch.zeros_like(x)
        e[:, i] = 1e-5
        fd = (grad(x + e)[:, i] - grad(x - e)[:, i]) / 2e-5
        torch.testing.assert_close(diag[:, i], fd, rtol=1e-4, atol=1e-4)


def test_joint_jacobian_matches_finite_differences(body):
    x = make_people(body, 3, seed=5).params.double()
    body64 = BodyModel.load().double()
    jac = joint_jacobian(body64, x)
    for i in (1, 10, 73, 83):
        e = torch.zeros_like(x)
        e[:, i] = 1e-6
        fd = (root_relative_joints(body64, x + e) - root_relative_joints(body64, x - e)).flatten(1) / 2e-6
        torch.testing.assert_close(jac[:, :, i], fd, rtol=1e-5, atol=1e-6)
    assert jac[:, :, 82:].abs().max() < 1e-12    # translation does not move root-relative joints


def test_procrustes_undoes_a_similarity_and_mpjpe_ignores_translation():
    g = torch.Generator().manual_seed(6)
    gt = torch.randn(2, 24, 3, generator=g)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
    q = q * torch.sign(torch.linalg.det(q))
    moved = 1.7 * gt @ q.T + torch.tensor([0.3, -1.0, 2.0])
    torch.testing.assert_close(procrustes_align(moved, gt), gt, atol=1e-5, rtol=0)
    assert pa_mpjpe(moved, gt).max() < 1e-2
    torch.testing.assert_close(mpjpe(gt + 5.0, gt), torch.zeros(2), atol=1e-3, rtol=0)
    off = gt.clone()
    off[:, 3] += torch.tensor([0.024, 0.0, 0.0])      # one joint of 24 moved 24 mm: MPJPE = 1 mm
    torch.testing.assert_close(mpjpe(off, gt), torch.ones(2), atol=1e-4, rtol=0)


def test_spearman_matches_scipy_with_ties():
    g = torch.Generator().manual_seed(7)
    a = torch.randint(0, 10, (200,), generator=g).double()
    b = a + torch.randn(200, generator=g, dtype=torch.float64) * 3
    assert spearman(a, b) == pytest.approx(spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-10)


def test_coverage_of_a_true_gaussian_is_ninety_percent():
    g = torch.Generator().manual_seed(8)
    sigma = torch.rand(20000, generator=g, dtype=torch.float64) * 10 + 1
    err = (torch.randn(20000, 3, generator=g, dtype=torch.float64) * sigma[:, None]).norm(dim=-1)
    assert coverage(err, sigma) == pytest.approx(0.90, abs=0.01)
    assert calibration_scale(err, sigma / 2) == pytest.approx(2.0, rel=0.03)
    assert math.isclose(coverage(err, sigma * calibration_scale(err, sigma)), 0.9, abs_tol=1e-3)
