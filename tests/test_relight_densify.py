"""Adaptive density control: clone, split, prune and opacity reset carry every per-Gaussian attribute and the
optimizer's moments; the visual-hull start; a densified run resumes exactly."""
import math

import torch

from relight.camera import Camera, look_at
from relight.carve import box_points, carved_points
from relight.densify import Densifier, DensifyConfig, per_gaussian, rebuild
from relight.light import Light
from relight.light_prior import LightPrior
from relight.model import RelightModel
from relight.scene import Frame


def prior(n: int, seed: int = 0) -> LightPrior:
    gen = torch.Generator().manual_seed(seed)
    pts = torch.rand(n, 3, generator=gen) - 0.5
    normals = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    model = RelightModel(pts, normals, torch.full((n,), 0.05))
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))  # every row different
    p = LightPrior(model)
    with torch.no_grad():
        p.shadow.copy_(torch.randn(n, generator=gen))
        p.indirect.copy_(torch.randn(n, 3, generator=gen))
    return p


def camera() -> Camera:
    return Camera.from_fov(look_at(torch.tensor([0.0, -2.5, 1.5]), torch.zeros(3)), 0.9, 24, 24)


def adam_after_a_step(module):
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    img = module.model.render(camera(), Light((0.0, 0.0, 3.0)), module())
    img.mean().backward()
    opt.step()
    return opt


def test_rebuild_keeps_copies_and_drops_rows_of_every_attribute_and_adam_moment():
    module = prior(10)
    opt = adam_after_a_step(module)
    before = {name: p.detach().clone() for name, p in per_gaussian(module, 10)}
    moments = {name: opt.state[p]["exp_avg"].clone() for name, p in per_gaussian(module, 10)}
    assert {n.split(".")[-1] for n in before} >= {"means", "quats", "log_scales", "opacity_logits", "albedo_logit",
                                                   "specular_logit", "log_shininess", "normal_offset",
                                                   "ambient_logit", "shadow", "indirect"}
    keep, parents = torch.tensor([0, 2, 3, 7]), torch.tensor([3, 9])
    rebuild(module, opt, keep, parents)
    after = dict(per_gaussian(module, 6))
    assert set(after) == set(before)
    for name, p in after.items():
        assert torch.equal(p.detach(), before[name][[0, 2, 3, 7, 3, 9]]), name
        m = opt.state[p]["exp_avg"]
        assert torch.equal(m[:4], moments[name][[0, 2, 3, 7]]) and not bool(m[4:].any()), name
    assert all(any(q is p for q in opt.param_groups[0]["params"]) for p in after.values())
    adam_after_a_step(module)  # renders and steps at the new size
    opt.zero_grad()
    module.model.render(camera(), Light((0.0, 0.0, 3.0)), module()).mean().backward()
    opt.step()
    assert len(module.model) == 6 and module.shadow.shape == (6,) and module.log_intensity.shape == (3,)


def test_split_children_are_drawn_from_the_parent_gaussian():
    n = 3000
    module = prior(n)
    g = module.model.gaussians
    with torch.no_grad():  # one anisotropic, rotated Gaussian repeated
        g.means.copy_(torch.tensor([0.1, -0.2, 0.3]).expand(n, 3))
        g.log_scales.copy_(torch.log(torch.tensor([0.3, 0.1, 0.05])).expand(n, 3))
        g.quats.copy_(torch.nn.functional.normalize(torch.tensor([0.9, 0.3, -0.2, 0.1]), dim=0).expand(n, 4))
    cov = g.covariances()[0].detach()
    opt = torch.optim.Adam(module.parameters())
    d = Densifier(module, 100, extent=1.0, cfg=DensifyConfig(grad_threshold=0.0, max_gaussians=3 * n))
    d.stats.total[:] = 1.0
    d.stats.seen[:] = 1.0
    rec = d.densify_and_prune(opt)
    assert rec == {"before": n, "cloned": 0, "split": n, "pruned": 0, "after": 2 * n}
    kids = g.means.detach()
    centred = kids - torch.tensor([0.1, -0.2, 0.3])
    sample = centred.T @ centred / len(kids)
    # sample covariance of 2n draws: each entry within 4 standard errors, sqrt((S_ii S_jj + S_ij^2) / 2n)
    se = ((cov.diag()[:, None] * cov.diag()[None] + cov**2) / len(kids)).sqrt()
    assert bool(((sample - cov).abs() <= 4 * se).all())
    assert bool((centred.mean(0).abs() <= 4 * (cov.diag() / len(kids)).sqrt()).all())
    assert torch.allclose(g.scales.detach(), torch.tensor([0.3, 0.1, 0.05]).expand(2 * n, 3) / 1.6)


def test_only_gaussians_under_the_error_are_densified_and_transparent_ones_pruned():
    module = prior(40, seed=1)
    g = module.model.gaussians
    with torch.no_grad():
        g.log_scales.fill_(math.log(0.004))  # small: cloned, not split
        g.opacity_logits[:5] = -8.0  # opacity 3e-4: pruned
    cam = camera()
    light = Light((0.0, 0.0, 3.0))
    with torch.no_grad():
        target = module.model.render(cam, light, module()).clone()
        target[:, 12:] += 0.3  # the right half of the image is wrong
    d = Densifier(module, 100, extent=1.0, cfg=DensifyConfig(grad_threshold=1e-6))
    x = g.means.detach()
    proj_u = x[:, 0]  # right of the image = +x from this camera
    opt = torch.optim.Adam(module.parameters())
    loss = (module.model.render(cam, light, module()) - target).abs().mean()
    loss.backward()
    d.after_backward(0, cam.width, cam.height)
    grads = d.stats.mean()
    rec = d.densify_and_prune(opt)
    assert rec["pruned"] == 5 and rec["split"] == 0 and rec["cloned"] > 0
    moved = grads > 1e-6
    assert float(proj_u[moved & (torch.arange(40) >= 5)].mean()) > float(proj_u.mean())  # chosen where it is wrong


def test_opacity_reset_caps_every_opacity_and_clears_its_moments():
    module = prior(20)
    opt = adam_after_a_step(module)
    d = Densifier(module, 100, extent=1.0)
    d.reset_opacity(opt)
    g = module.model.gaussians
    assert float(g.opacities.detach().max()) <= 0.01 + 1e-7
    assert not bool(opt.state[g.opacity_logits]["exp_avg"].any())


def sphere_frames(r: float = 0.4) -> list[Frame]:
    """Silhouettes of a ball of radius r at the origin, from 8 cameras: pixel on if its ray passes within r."""
    frames = []
    for k in range(8):
        az, el = 2 * math.pi * k / 8, 0.5 if k % 2 else -0.3
        eye = 3.0 * torch.tensor([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        cam = Camera.from_fov(look_at(eye, torch.zeros(3)), 0.8, 32, 32)
        ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
        d_cam = torch.stack([(xs - cam.cx) / cam.fx, -(ys - cam.cy) / cam.fy, -torch.ones_like(xs)], -1)
        d = torch.nn.functional.normalize(d_cam @ cam.c2w[:3, :3].T, dim=-1)
        t = -(d @ eye)  # distance along the ray to the point nearest the origin
        closest = eye + t[..., None] * d
        on = closest.norm(dim=-1) < r
        img = torch.where(on[..., None], torch.tensor([0.5, 0.5, 0.5]), torch.zeros(3))
        frames.append(Frame(f"v{k}", img, cam, Light((0.0, 0.0, 3.0))))
    return frames


def test_the_start_without_a_point_cloud_is_carved_to_the_visual_hull():
    frames = sphere_frames()
    pts = carved_points(frames, 500, torch.Generator().manual_seed(0))
    assert len(pts) == 500
    assert float(pts.norm(dim=-1).max()) < 0.4 * 1.6  # the hull of 8 views hugs the ball
    box = box_points(frames, 500, torch.Generator().manual_seed(0))
    assert float((box.norm(dim=-1) < 0.4 * 1.6).float().mean()) < 0.3  # (a box start would not)
    for f in frames:
        f.image[:] = 0.2  # nothing separates the object from the background: back to the box
    assert torch.equal(carved_points(frames, 500, torch.Generator().manual_seed(0)), box)


def test_masks_from_alpha_take_precedence():
    frames = sphere_frames()
    frames = [Frame(f.file_path, torch.full_like(f.image, 0.3), f.camera, f.light, alpha=(f.image[..., 0] > 0).float())
              for f in frames]
    pts = carved_points(frames, 300, torch.Generator().manual_seed(0))
    assert float(pts.norm(dim=-1).max()) < 0.4 * 1.6


