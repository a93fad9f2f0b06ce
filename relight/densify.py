"""Adaptive density control as 3D Gaussian splatting does it, with every per-Gaussian attribute carried along.

During fitting, each render's screen-space means keep their gradient; every `interval` steps the Gaussians
whose mean view-space positional gradient (in NDC units, averaged over the renders that saw them) exceeds
`grad_threshold` are densified: small ones (largest scale <= `percent_dense` x scene extent) are cloned, large
ones split into two drawn from their own distribution with scales / 1.6. Gaussians nearly transparent
(opacity < `min_opacity`) or, after the opacity reset, too large in the world or on screen are pruned. Once,
at `reset_at`, every opacity is lowered to at most 0.01 so that floaters must earn their opacity back.

Every parameter holding one row per Gaussian (geometry, Phong materials, the light-dependent shadow and
indirect terms, the plain baseline's colours) is indexed, copied or split together, and so are Adam's
moments (zero for new rows, as 3DGS does).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from relight.gaussians import Gaussians, quat_to_rotmat
from relight.projection import Projected

SHARED = ("log_intensity",)  # parameters that are not one row per Gaussian


@dataclass
class DensifyConfig:
    """When and how much to densify, as fractions of the fitting steps (3DGS: 500-15000 of 30000)."""
    start: float = 0.1
    stop: float = 0.6
    interval: int | None = None  # steps between densifications; None: a twelfth of the fitting steps
    reset_at: float = 0.4  # fraction of the fitting steps at which opacities are reset (none if >= 1)
    grad_threshold: float = 2e-4  # mean |d loss / d NDC position|, 3DGS's value
    percent_dense: float = 0.01
    min_opacity: float = 0.005
    max_screen: float = 0.5  # pruned when the cut-off radius exceeds this fraction of the image's longer side
    max_gaussians: int = 8000


class ScreenGradients:
    """Accumulates each Gaussian's view-space positional gradient over the renders it appears in."""

    def __init__(self, n: int) -> None:
        self.total = torch.zeros(n)
        self.seen = torch.zeros(n)
        self.radius = torch.zeros(n)  # largest cut-off radius, as a fraction of the image's longer side
        self._pending: list[Projected] = []

    def __call__(self, proj: Projected) -> None:  # the rasterizer's `watch`
        if proj.means2d.requires_grad:
            proj.means2d.retain_grad()
            self._pending.append(proj)

    def collect(self, width: int, height: int) -> None:
        """Read the gradients of the renders since the last call (after backward)."""
        half = 0.5 * max(width, height)
        for proj in self._pending:
            if proj.means2d.grad is None:
                continue
            vis = (proj.radii > 0).cpu()
            g = (proj.means2d.grad.detach().reshape(-1, 2) * half).norm(dim=-1).cpu()  # pixels -> NDC units
            self.total[vis] += g[vis]
            self.seen[vis] += 1
            self.radius = torch.maximum(self.radius, proj.radii.detach().cpu() / (2 * half))
        self._pending.clear()

    def mean(self) -> Tensor:  # [N]
        return self.total / self.seen.clamp_min(1)


def per_gaussian(module: nn.Module, n: int) -> list[tuple[str, nn.Parameter]]:
    """The module's parameters that hold one row per Gaussian."""
    return [(name, p) for name, p in module.named_parameters()
            if name.split(".")[-1] not in SHARED and p.dim() >= 1 and p.shape[0] == n]


def gaussians_of(module: nn.Module) -> Gaussians:
    return module.model.gaussians if hasattr(module, "model") else module.gaussians  # type: ignore[return-value]


def rebuild(module: nn.Module, opt: torch.optim.Optimizer, keep: Tensor,  # [K] rows kept
            parents: Tensor,  # [M] rows copied as new Gaussians
            overrides: dict[str, Tensor] | None = None,  # name -> [K + M, ...] values replacing the gathered ones
            ) -> None:
    """Replace every per-Gaussian parameter by rows `keep` then copies of rows `parents`: new Parameters put
    in the module and in the optimizer's groups in place of the old ones (autograd keeps a parameter's shape,
    so resizing in place is not possible); Adam's moments follow, zero for the copies."""
    n = len(gaussians_of(module))
    index = torch.cat([keep, parents])
    for name, p in per_gaussian(module, n):
        with torch.no_grad():
            data = overrides[name] if overrides and name in overrides else p.detach()[index.to(p.device)]
        new = nn.Parameter(data.contiguous())
        owner, _, attr = name.rpartition(".")
        setattr(module.get_submodule(owner) if owner else module, attr, new)
        for group in opt.param_groups:
            group["params"] = [new if q is p else q for q in group["params"]]
        state = opt.state.pop(p, None)
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    old = state[key]
                    state[key] = torch.cat([old[keep.to(old.device)],
                                            torch.zeros((len(parents), *old.shape[1:]), dtype=old.dtype,
                                                        device=old.device)])
            opt.state[new] = state


class Densifier:
    """3DGS's adaptive density control over a fitting run of `total_steps` steps (see the module docstring)."""

    def __init__(self, module: nn.Module, total_steps: int, extent: float, cfg: DensifyConfig | None = None,
                 seed: int = 0) -> None:
        self.module, self.cfg, self.extent = module, cfg or DensifyConfig(), extent
        self.total = total_steps
        self.gen = torch.Generator().manual_seed(seed)
        self.reset_done = False
        self.stats = ScreenGradients(len(gaussians_of(module)))
        self.history: list[dict] = []
        gaussians_of(module).watch = self.stats

    def resume(self, done: int, state: dict | None) -> None:
        """Continue after `done` fitting steps from a checkpoint's `state_dict()` (None: nothing saved yet)."""
        self.reset_done = self.cfg.reset_at < 1 and done >= self.cfg.reset_at * self.total
        if state is not None:
            self.stats.total, self.stats.seen, self.stats.radius = state["total"], state["seen"], state["radius"]
            self.gen.set_state(state["gen"])
            self.history = list(state["history"])
        if not self._before_stop(done):
            gaussians_of(self.module).watch = None

    def state_dict(self) -> dict:
        """What a checkpoint keeps, so that a resumed run densifies as an uninterrupted one."""
        return {"total": self.stats.total, "seen": self.stats.seen, "radius": self.stats.radius,
                "gen": self.gen.get_state(), "history": self.history}

    def _before_stop(self, step: int) -> bool:
        return step < self.cfg.stop * self.total

    def active_at(self, step: int) -> bool:
        return self.cfg.start * self.total <= step < self.cfg.stop * self.total

    def after_backward(self, step: int, width: int, height: int) -> None:
        """Collect this step's screen-space gradients (call after loss.backward(), before the optimizer step)."""
        if gaussians_of(self.module).watch is not None:
            self.stats.collect(width, height)

    def after_step(self, step: int, opt: torch.optim.Optimizer) -> dict | None:
        """Densify, prune or reset opacities when the schedule says so (call after the optimizer step)."""
        cfg, done = self.cfg, step + 1
        record = None
        interval = cfg.interval or max(1, self.total // 12)
        if self.active_at(done) and done % interval == 0:
            record = self.densify_and_prune(opt)
        if not self.reset_done and done >= cfg.reset_at * self.total and cfg.reset_at < 1:
            self.reset_opacity(opt)
            self.reset_done = True
        if not self._before_stop(done):
            gaussians_of(self.module).watch = None
        return record

    def densify_and_prune(self, opt: torch.optim.Optimizer) -> dict:
        cfg = self.cfg
        g = gaussians_of(self.module)
        n = len(g)
        grad = self.stats.mean()
        scales = g.scales.detach().cpu()
        big = scales.max(-1).values > cfg.percent_dense * self.extent
        want = grad >= cfg.grad_threshold
        room = max(0, cfg.max_gaussians - n)
        if int(want.sum()) > room:  # keep the strongest within the budget
            order = torch.argsort(grad, descending=True)
            want = torch.zeros_like(want)
            want[order[:room]] = True
        clone = (want & ~big).nonzero().squeeze(-1)
        split = (want & big).nonzero().squeeze(-1)
        opac = g.opacities.detach().cpu()
        prune = opac < cfg.min_opacity
        if self.reset_done:
            prune |= scales.max(-1).values > 0.1 * self.extent
            prune |= self.stats.radius > cfg.max_screen
        prune[split] = True  # a split Gaussian is replaced by its two children
        keep = (~prune).nonzero().squeeze(-1)
        parents = torch.cat([clone, split, split])
        overrides = self._split_geometry(keep, clone, split) if len(split) else None
        rebuild(self.module, opt, keep, parents, overrides)
        record = {"before": n, "cloned": len(clone), "split": len(split), "pruned": int(prune.sum()) - len(split),
                  "after": len(g)}
        self.history.append(record)
        self.stats = ScreenGradients(len(g))
        g.watch = self.stats
        return record

    def _split_geometry(self, keep: Tensor, clone: Tensor, split: Tensor) -> dict[str, Tensor]:
        """Means and log-scales of the rows keep + clone + split + split: the split rows' two children are
        drawn from the parent Gaussian, with scales divided by 1.6."""
        g = gaussians_of(self.module)
        prefix = "model.gaussians." if hasattr(self.module, "model") else "gaussians."
        with torch.no_grad():
            means, log_scales = g.means.detach(), g.log_scales.detach()
            dev = means.device
            rows = torch.cat([keep, clone]).to(dev)
            sp = split.to(dev)
            rot = quat_to_rotmat(g.quats.detach()[sp])  # [S, 3, 3]
            s = log_scales[sp].exp()
            noise = torch.randn((2, len(split), 3), generator=self.gen).to(means)
            children = means[sp][None] + (rot[None] @ (noise * s[None])[..., None]).squeeze(-1)  # [2, S, 3]
            child_scale = (log_scales[sp] - math.log(1.6)).repeat(2, 1)
            return {prefix + "means": torch.cat([means[rows], children.reshape(-1, 3)]),
                    prefix + "log_scales": torch.cat([log_scales[rows], child_scale])}

    def reset_opacity(self, opt: torch.optim.Optimizer) -> None:
        """Lower every opacity to at most 0.01 (3DGS's reset), zeroing Adam's moments of the opacities."""
        g = gaussians_of(self.module)
        with torch.no_grad():
            g.opacity_logits.clamp_(max=math.log(0.01 / 0.99))
        state = opt.state.get(g.opacity_logits)
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key].zero_()


def scene_extent(camera_positions: Tensor,  # [C, 3]
                 ) -> float:
    """3DGS's scene extent: 1.1 x the largest distance of a camera from the cameras' centre."""
    centre = camera_positions.mean(0)
    return 1.1 * float((camera_positions - centre).norm(dim=-1).max())
