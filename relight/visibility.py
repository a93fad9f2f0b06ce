"""Shadows: the fraction of a light reaching each Gaussian, from a deep opacity map in the light's view.

Every Gaussian is splatted, in a camera at the light, onto the pixel centres where the rasterizer would
give it alpha >= ALPHA_MIN; each (pixel, Gaussian) pair stores log(1 - alpha) at the Gaussian's depth. Per
pixel the pairs sorted by depth and summed cumulatively are that pixel's log-transmittance as a function of
depth (a deep shadow map whose depth bins sit at the occluders' own depths, so the depth test is exact).
A receiver reads it at the four pixel centres around its projected mean, at its depth minus the bias, and
interpolates bilinearly in the image. Cost: O(P log P) for P pairs, P <= sum over Gaussians of their
footprint in pixels, linear in N; candidates are generated in chunks so peak memory stays O(P).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from relight.camera import Camera, look_at
from relight.light import Light
from relight.projection import ALPHA_MAX, ALPHA_MIN, Projected, project

SHADOW_RES = 256  # light-view image size: sets the resolution of the screen-space footprints
CHUNK = 1 << 19  # candidate (pixel, Gaussian) pairs evaluated at once (~60 MB of temporaries)


def light_camera(means: Tensor,  # [N, 3]
                 light: Light, resolution: int = SHADOW_RES) -> Camera:
    """A camera at the light (far along the direction for a directional light) that sees every Gaussian."""
    centre = means.mean(0)
    eye = light.tensor(means) if not light.directional else centre + 1e3 * light.tensor(means) / light.tensor(means).norm()
    c2w = look_at(eye.detach(), centre.detach())
    axis = (centre - eye) / (centre - eye).norm()
    rel = means - eye
    cos = ((rel @ axis) / rel.norm(dim=-1).clamp_min(1e-9)).clamp(-1, 1)
    half = float(torch.arccos(cos.min())) * 1.05 + 1e-4
    return Camera.from_fov(c2w, 2 * min(half, math.radians(85.0)), resolution, resolution)


def shadow_pixel_size(means: Tensor,  # [N, 3]
                      light: Light, resolution: int = SHADOW_RES) -> float:
    """World-space width of one shadow-map pixel at the depth of the scene's centre."""
    cam = light_camera(means.detach(), light, resolution)
    return float((means.detach().mean(0) - cam.position.to(means)).norm()) / cam.fx


def footprint_pairs(proj: Projected, opacities: Tensor,  # [N]
                    resolution: int,
                    ) -> tuple[Tensor, Tensor, Tensor]:  # pixel [P] (y * S + x), Gaussian [P], log(1 - alpha) [P]
    """Every (pixel centre, Gaussian) pair with alpha >= ALPHA_MIN, alpha exactly as the rasterizer splats it."""
    s = resolution
    with torch.no_grad():
        a, b, c = proj.conics.detach().unbind(-1)
        det = (a * c - b * b).clamp_min(1e-30)
        k2 = 2 * torch.log((opacities.detach() / ALPHA_MIN).clamp_min(1.0))  # alpha >= ALPHA_MIN <=> d'Cd <= k2
        # the ellipse d'Cd <= k2 spans +-sqrt(k2 cov_xx) in x (cov = C^-1); a small margin for rounding
        ext = torch.stack([torch.sqrt(k2 * c / det), torch.sqrt(k2 * a / det)], -1) * (1 + 1e-4) + 1e-3
        m = proj.means2d.detach().clamp(-1.0, s + 1.0)
        lo = torch.ceil(m - ext - 0.5).clamp(0, s).long()  # first and last pixel index whose centre is inside
        hi = torch.floor(m + ext - 0.5).clamp(-1, s - 1).long()
        size = (hi - lo + 1).clamp_min(0)
        count = torch.where(proj.radii > 0, size[:, 0] * size[:, 1], torch.zeros_like(size[:, 0]))
        ends = torch.cumsum(count, 0)
        marks = torch.arange(CHUNK, max(int(ends[-1]), CHUNK), CHUNK, device=ends.device)
        bounds = sorted({0, count.numel(), *torch.searchsorted(ends, marks, right=True).tolist()})
    pixels, gaussians, log_t = [], [], []
    for g0, g1 in zip(bounds[:-1], bounds[1:]):
        with torch.no_grad():
            gauss = torch.repeat_interleave(torch.arange(g0, g1, device=count.device), count[g0:g1])
            first = ends[gauss] - count[gauss]  # position of each Gaussian's first candidate
            k = torch.arange(gauss.numel(), device=gauss.device) + (ends[g0] - count[g0]) - first
            w = size[gauss, 0]
            px = lo[gauss, 0] + k % w
            py = lo[gauss, 1] + torch.div(k, w, rounding_mode="floor")
        dx = (px.to(opacities.dtype) + 0.5) - proj.means2d[gauss, 0]
        dy = (py.to(opacities.dtype) + 0.5) - proj.means2d[gauss, 1]
        con = proj.conics[gauss]
        power = -0.5 * (con[:, 0] * dx**2 + con[:, 2] * dy**2) - con[:, 1] * dx * dy
        alpha = (opacities[gauss] * torch.exp(power)).clamp_max(ALPHA_MAX)
        keep = alpha >= ALPHA_MIN
        pixels.append((py * s + px)[keep])
        gaussians.append(gauss[keep])
        log_t.append(torch.log1p(-alpha[keep]))
    if not pixels:
        empty = torch.zeros(0, dtype=torch.long, device=opacities.device)
        return empty, empty, torch.zeros(0, dtype=opacities.dtype, device=opacities.device)
    return torch.cat(pixels), torch.cat(gaussians), torch.cat(log_t)


def splat_count(means: Tensor,  # [N, 3]
                covs: Tensor,  # [N, 3, 3]
                opacities: Tensor,  # [N]
                light: Light, resolution: int = SHADOW_RES) -> int:
    """How many (pixel, Gaussian) pairs `light_visibility` splats (its work and memory are linear in this)."""
    with torch.no_grad():
        proj = project(means, covs, opacities, light_camera(means, light, resolution))
        return int(footprint_pairs(proj, opacities, resolution)[0].numel())


def light_visibility(means: Tensor,  # [N, 3]
                     covs: Tensor,  # [N, 3, 3]
                     opacities: Tensor,  # [N]
                     light: Light,
                     bias: Tensor | float = 0.0,  # [N] or scalar >= 0: depth band in front of a receiver ignored
                     resolution: int = SHADOW_RES) -> Tensor:  # [N] transmittance in [0, 1]
    """prod_j (1 - alpha_j) over the Gaussians j nearer to the light than receiver i's depth minus its bias.

    alpha_j is the 2D splat of Gaussian j in the light's view (`light_camera`), exactly as the rasterizer
    composites it, at the pixel centres around where receiver i projects (bilinear in the image).
    The receiver itself never counts: its depth is not below its own depth minus a bias >= 0.
    """
    n = means.shape[0]
    dev, dt = means.device, means.dtype
    if n == 0:
        return torch.ones(0, dtype=dt, device=dev)
    bias_t = torch.as_tensor(bias, dtype=dt, device=dev).expand(n)
    if bool((bias_t < 0).any()):
        raise ValueError("light_visibility: the bias must be >= 0 (it also keeps a receiver out of its own shadow)")
    s = resolution
    proj = project(means, covs, opacities, light_camera(means, light, s))
    with torch.no_grad():
        z = proj.depths.detach().contiguous()
        z_sorted = torch.sort(z).values
        rank = torch.searchsorted(z_sorted, z)  # Gaussians strictly nearer: z_j < q  <=>  rank_j < rank(q)
        q_rank = torch.searchsorted(z_sorted, z - bias_t.detach())
    pixel, gauss, log_t = footprint_pairs(proj, opacities, s)
    with torch.no_grad():
        keys, order = torch.sort(pixel * (n + 1) + rank[gauss])
        per_pixel = torch.bincount(pixel, minlength=s * s)
        seg = torch.cumsum(per_pixel, 0) - per_pixel  # where each pixel's depth-sorted pairs begin
    cum = torch.cat([torch.zeros(1, dtype=torch.float64, device=dev), torch.cumsum(log_t[order].double(), 0)])
    u = proj.means2d.clamp(-1.0, s + 1.0) - 0.5  # pixel centres at integers
    base = u.detach().floor().long()
    frac = (u - base).clamp(0, 1)
    with torch.no_grad():  # the four neighbouring pixels of every receiver, looked up as one sorted batch
        xs = torch.stack([base[:, 0], base[:, 0] + 1, base[:, 0], base[:, 0] + 1]).clamp(0, s - 1)
        ys = torch.stack([base[:, 1], base[:, 1], base[:, 1] + 1, base[:, 1] + 1]).clamp(0, s - 1)
        pix = (ys * s + xs).reshape(-1)  # [4N]
        query = pix * (n + 1) + q_rank.repeat(4)
        query_sorted, query_order = torch.sort(query)  # sorted look-ups share cache lines: ~7x faster
        stop = torch.empty_like(query).index_put_((query_order,), torch.searchsorted(keys, query_sorted))
        start = seg[pix]
    t00, t10, t01, t11 = torch.exp(cum[stop] - cum[start]).to(dt).reshape(4, n)
    fx, fy = frac[:, 0], frac[:, 1]
    top, bottom = t00 + fx * (t10 - t00), t01 + fx * (t11 - t01)  # lerps: exactly 1 where all four are 1
    return (top + fy * (bottom - top)).clamp(0, 1)
