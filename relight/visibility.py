"""Shadows: the fraction of a light reaching each Gaussian, from a deep opacity map in the light's view.

Every Gaussian is splatted, in a camera at the light, onto the pixel centres inside its cut-off ellipse
(alpha as the rasterizer gives it, kept where alpha >= ALPHA_MIN); each (pixel, Gaussian) pair stores
log(1 - alpha) at the Gaussian's depth. Per pixel the pairs sorted by depth and summed cumulatively are that
pixel's log-transmittance as a function of depth (a deep shadow map whose depth bins sit at the occluders' own
depths, so the depth test is exact). A receiver reads it at the four pixel centres around its projected mean,
at its depth minus the bias, and interpolates bilinearly in the image. Pairs at pixels no receiver reads are
dropped before their alpha is evaluated. Cost O(P log P) for P pairs, P <= the sum of the Gaussians'
footprints in pixels (linear in N); candidates are generated in chunks, so memory is O(P) plus one chunk.
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
# Self-shadowing band (docs/relight.md, "Self-shadowing bias"): SELF_SHADOW_SCALES largest scales, times
# 1 + tan(angle between normal and light), the tangent capped at SELF_SHADOW_MAX_SLOPE (about 18 degrees elevation).
SELF_SHADOW_SCALES = 3.0
SELF_SHADOW_MAX_SLOPE = 3.0


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


def slope_scaled_bias(largest_scale: Tensor,  # [N] each receiver's largest scale
                      normals: Tensor,  # [N, 3] unit, either sign
                      to_light: Tensor,  # [N, 3] unit direction from each receiver to the light
                      ) -> Tensor:  # [N] depth band in front of each receiver that `light_visibility` ignores
    """Shadow mapping's slope-scaled bias for splats: a flat receiver's own surface neighbours, seen from a light
    at angle theta to its normal, sit up to about its extent times tan(theta) nearer to the light than it."""
    cos = (normals * to_light).sum(-1).abs().clamp(1e-6, 1.0)
    tan = torch.sqrt((1 - cos * cos).clamp_min(0)) / cos
    return SELF_SHADOW_SCALES * largest_scale * (1 + tan.clamp_max(SELF_SHADOW_MAX_SLOPE))


def footprint_pairs(proj: Projected, opacities: Tensor,  # [N]
                    resolution: int,
                    tag: Tensor,  # [N] long in [0, stride)
                    stride: int,
                    read: Tensor | None = None,  # [S * S] bool: keep only the pairs at these pixels
                    ) -> tuple[Tensor, Tensor]:  # key [P] = pixel (y * S + x) * stride + tag, log(1 - alpha) [P]
    """Every (pixel centre, Gaussian) pair inside the Gaussian's cut-off ellipse, alpha exactly as the rasterizer
    splats it (log(1 - alpha) = 0 where alpha < ALPHA_MIN, at the ellipse's rounding margin).

    Row by row: each Gaussian's rows of pixel centres within its ellipse d'Cd <= 2 ln(o / ALPHA_MIN), then the
    x-span of the ellipse on each row; both expansions are sequential (no per-pixel division).
    """
    s, dt, dev = resolution, opacities.dtype, opacities.device
    with torch.no_grad():
        a, b, c = proj.conics.detach().unbind(-1)
        det = (a * c - b * b).clamp_min(1e-30)
        k2 = 2 * torch.log((opacities.detach() / ALPHA_MIN).clamp_min(1.0))  # alpha >= ALPHA_MIN <=> d'Cd <= k2
        # the ellipse spans +-sqrt(k2 cov_xx) in x and +-sqrt(k2 cov_yy) in y (cov = C^-1); margins for rounding
        ext = torch.stack([torch.sqrt(k2 * c / det), torch.sqrt(k2 * a / det)], -1) * (1 + 1e-4) + 1e-3
        m = proj.means2d.detach().clamp(-1.0, s + 1.0)
        lo = torch.ceil(m - ext - 0.5).clamp(0, s).long()  # first and last pixel index whose centre is inside
        hi = torch.floor(m + ext - 0.5).clamp(-1, s - 1).long()
        size = (hi - lo + 1).clamp_min(0)
        rows = torch.where(proj.radii > 0, size[:, 1], torch.zeros_like(size[:, 1]))
        ends = torch.cumsum(rows * size[:, 0], 0)  # bounding boxes: at least each chunk's pixels
        marks = torch.arange(CHUNK, max(int(ends[-1]), CHUNK), CHUNK, device=ends.device)
        bounds = sorted({0, rows.numel(), *torch.searchsorted(ends, marks, right=True).tolist()})
    per_gauss = torch.stack([proj.means2d[:, 0], proj.means2d[:, 1], proj.conics[:, 0], proj.conics[:, 1],
                             proj.conics[:, 2], opacities], -1)  # [N, 6]: mean x, y, conic a, b, c, opacity
    keys, log_t = [], []
    for g0, g1 in zip(bounds[:-1], bounds[1:]):
        h = rows[g0:g1]
        with torch.no_grad():
            first = torch.cumsum(h, 0) - h
            j = torch.arange(int(h.sum()), device=h.device) - torch.repeat_interleave(first, h)  # row in Gaussian
            ints = torch.repeat_interleave(torch.stack([lo[g0:g1, 1], tag[g0:g1]], -1), h, dim=0)
            py = ints[:, 0] + j
        f = torch.repeat_interleave(per_gauss[g0:g1], h, dim=0)  # [R, 6]
        dy = (py.to(dt) + 0.5) - f[:, 1]
        with torch.no_grad():  # the ellipse's x-span on this row: a dx^2 + 2 b dy dx + c dy^2 - k2 <= 0
            fa, fb, k2r = f[:, 2].detach(), f[:, 3].detach(), torch.repeat_interleave(k2[g0:g1], h)
            disc = (fb * fb - fa * f[:, 4].detach()) * dy.detach() ** 2 + fa * k2r
            half = torch.sqrt(disc.clamp_min(0)) * (1 + 1e-4) + 1e-3 * fa
            centre = f[:, 0].detach() - fb * dy.detach() / fa
            x0 = torch.ceil(centre - half / fa - 0.5).clamp(0, s).long()
            x1 = torch.floor(centre + half / fa - 0.5).clamp(-1, s - 1).long()
            width = (x1 - x0 + 1).clamp_min(0)  # disc < 0: at most the margin's pixel, whose alpha < ALPHA_MIN
            start = torch.cumsum(width, 0) - width
            row = torch.repeat_interleave(torch.arange(width.numel(), device=dev), width)  # [P] row of each pair
            row_i = torch.stack([x0 - start, py * s, ints[:, 1]], -1).index_select(0, row)  # [P, 3]
            px = row_i[:, 0] + torch.arange(row.numel(), device=dev)  # x0 + position in the row
            pixel = row_i[:, 1] + px
            tag_p = row_i[:, 2]
            if read is not None:  # pixels no receiver reads: dropped before any arithmetic on alpha
                kept = read.index_select(0, pixel).nonzero().squeeze(-1)
                row, px, pixel, tag_p = (t.index_select(0, kept) for t in (row, px, pixel, tag_p))
        row_f = torch.stack([f[:, 0], f[:, 2], f[:, 3], dy, f[:, 4] * dy**2, f[:, 5]], -1)
        g = row_f.index_select(0, row)  # [P, 6]: mean x, a, b, dy, c dy^2, opacity
        dx = (px.to(dt) + 0.5) - g[:, 0]
        power = -0.5 * (g[:, 1] * dx**2 + g[:, 4]) - g[:, 2] * dx * g[:, 3]  # the rasterizer's expression
        alpha = (g[:, 5] * torch.exp(power)).clamp_max(ALPHA_MAX)
        log_t.append(torch.log1p(-torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))))
        keys.append(pixel * stride + tag_p)
    if not keys:
        return torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(0, dtype=dt, device=dev)
    return torch.cat(keys), torch.cat(log_t)


def splat_count(means: Tensor,  # [N, 3]
                covs: Tensor,  # [N, 3, 3]
                opacities: Tensor,  # [N]
                light: Light, resolution: int = SHADOW_RES) -> int:
    """How many (pixel, Gaussian) pairs `light_visibility` splats (its work and memory are linear in this)."""
    with torch.no_grad():
        proj = project(means, covs, opacities, light_camera(means, light, resolution))
        tag = torch.zeros(means.shape[0], dtype=torch.long, device=means.device)
        return int(footprint_pairs(proj, opacities, resolution, tag, 1)[0].numel())


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
    u = proj.means2d.clamp(-1.0, s + 1.0) - 0.5  # pixel centres at integers
    base = u.detach().floor().long()
    frac = (u - base).clamp(0, 1)
    with torch.no_grad():  # the four pixels around every receiver: the only ones read
        xs = torch.stack([base[:, 0], base[:, 0] + 1, base[:, 0], base[:, 0] + 1]).clamp(0, s - 1)
        ys = torch.stack([base[:, 1], base[:, 1], base[:, 1] + 1, base[:, 1] + 1]).clamp(0, s - 1)
        pix = (ys * s + xs).reshape(-1)  # [4N]
        read = torch.zeros(s * s, dtype=torch.bool, device=dev).index_fill_(0, pix, True)
    keys, log_t = footprint_pairs(proj, opacities, s, rank, n + 1, read)  # key: pixel * (N + 1) + depth rank
    with torch.no_grad():
        keys, order = torch.sort(keys)
        seg = torch.searchsorted(keys, torch.arange(s * s, device=dev) * (n + 1))  # where each pixel's pairs begin
    cum = torch.cat([torch.zeros(1, dtype=torch.float64, device=dev), torch.cumsum(log_t[order].double(), 0)])
    with torch.no_grad():  # looked up as one sorted batch
        query = pix * (n + 1) + q_rank.repeat(4)
        query_sorted, query_order = torch.sort(query)  # sorted look-ups share cache lines: ~7x faster
        stop = torch.empty_like(query).index_put_((query_order,), torch.searchsorted(keys, query_sorted))
        start = seg[pix]
    t00, t10, t01, t11 = torch.exp(cum[stop] - cum[start]).to(dt).reshape(4, n)
    fx, fy = frac[:, 0], frac[:, 1]
    top, bottom = t00 + fx * (t10 - t00), t01 + fx * (t11 - t01)  # lerps: exactly 1 where all four are 1
    return (top + fy * (bottom - top)).clamp(0, 1)
