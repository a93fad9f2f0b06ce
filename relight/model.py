"""The Gaussian-Phong model: Gaussians with Blinn-Phong materials, shadows, and light-dependent parameters."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from relight.camera import Camera
from relight.gaussians import Gaussians
from relight.light import Light
from relight.rasterize import rasterize
from relight.shading import blinn_phong
from relight.transfer import Transfer, transfer
from relight.visibility import SHADOW_RES, light_visibility, slope_scaled_bias

# When a light's cached visibility is recomputed (docs/relight.md, "Shadows: computed once per light"): when N
# changes, or since the geometry it was computed from a mean moved more than STALE_PIXELS pixels of that light's
# shadow map (at the scene's depth: below the map's sampling step), or a splat's alpha may have changed anywhere
# by more than STALE_ALPHA: an opacity by more than that, or a covariance by a factor outside 1 +- e STALE_ALPHA
# (the exponent x = d' S^-1 d / 2 then scales as much, and to first order o |exp(-x (1 + eps)) - exp(-x)| <= eps / e).
STALE_PIXELS = 0.5
STALE_ALPHA = 0.05
STALE_OPACITY = STALE_ALPHA
STALE_COVARIANCE = math.e * STALE_ALPHA

# Light-dependent parameters of one light condition (what the inner loop adapts):
#   log_intensity [3]: light colour times power;  shadow [N]: logit correction of the visibility;
#   indirect [N, 3]: extra radiance under this light (interreflections the local model misses).
LightParams = tuple[Tensor, Tensor, Tensor]


@dataclass
class ModelConfig:
    """Initial values of the materials."""
    init_opacity: float = 0.8
    init_albedo: float = 0.5
    init_specular: float = 0.2
    init_shininess: float = 20.0
    init_ambient: float = 0.02
    init_intensity: float = 6.0  # about distance^2 of the lights, so that the irradiance starts near 1
    flat_ratio: float = 0.25  # normal-axis scale relative to the tangent scale


@dataclass
class GeometrySnapshot:
    """The geometry the cached visibilities are computed from (detached copies), and how far it may drift."""
    means: Tensor  # [N, 3]
    chol: Tensor  # [N, 3, 3] lower Cholesky factors of the covariances
    opacities: Tensor  # [N]
    scale: Tensor  # [N] the largest scales, which with the normals set each light's self-shadowing band
    normals: Tensor  # [N, 3] unit axes of the smallest scales
    distance: float  # STALE_PIXELS shadow-map pixels, world units
    key: tuple  # the parameters' versions and storage when taken: equal keys, nothing moved

    @classmethod
    def take(cls, g: Gaussians, key: tuple) -> "GeometrySnapshot":
        """A copy of `g`; the drift allowed is STALE_PIXELS of a shadow map spanning the scene (the light camera
        frames every Gaussian, so its pixels are at least 2 x radius / SHADOW_RES wide whatever the light)."""
        with torch.no_grad():
            chol, info = torch.linalg.cholesky_ex(g.covariances())
            chol = torch.where((info == 0)[:, None, None], chol, torch.zeros_like(chol))  # degenerate: always moved
            means = g.means.detach().clone()
            radius = float((means - means.mean(0)).norm(dim=-1).max()) if len(means) else 0.0
            return cls(means, chol, g.opacities.detach().clone(), g.scales.detach().max(-1).values,
                       g.normals().detach(), STALE_PIXELS * 2 * radius / SHADOW_RES, key)

    def bias(self, light: Light) -> Tensor:  # [N]
        """The receivers' self-shadowing band towards `light` (visibility.slope_scaled_bias)."""
        return slope_scaled_bias(self.scale, self.normals, light.incidence(self.means)[0])

    def covariances(self) -> Tensor:  # [N, 3, 3]
        return self.chol @ self.chol.transpose(-1, -2)

    def moved(self, g: Gaussians) -> bool:
        """Whether `g` differs from the snapshot beyond the thresholds."""
        if len(g) != self.means.shape[0] or g.means.device != self.means.device:
            return True
        with torch.no_grad():
            if bool(((g.means - self.means).norm(dim=-1) > self.distance).any()):
                return True
            if bool(((g.opacities - self.opacities).abs() > STALE_OPACITY).any()):
                return True
            if not bool((self.chol.diagonal(dim1=-2, dim2=-1) > 0).all()):
                return True  # a degenerate covariance when taken
            half = torch.linalg.solve_triangular(self.chol, g.covariances(), upper=False)  # L^-1 S
            white = torch.linalg.solve_triangular(self.chol, half.transpose(-1, -2), upper=False)  # L^-1 S L^-T
            if not bool(torch.isfinite(white).all()):
                return True
            change = (torch.linalg.eigvalsh(0.5 * (white + white.transpose(-1, -2))) - 1).abs().amax(-1)
            return bool((change > STALE_COVARIANCE).any())  # S_new outside (1 +- STALE_COVARIANCE) S_old


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class RelightModel(nn.Module):
    """Light-independent geometry and Blinn-Phong materials of N Gaussians; renders under any light."""

    def __init__(self, points: Tensor,  # [N, 3]
                 normals: Tensor,  # [N, 3] unit
                 spacing: Tensor,  # [N] distance to the neighbouring points
                 config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        n = points.shape[0]
        quats = _quat_from_z(normals)
        scales = torch.stack([spacing, spacing, spacing * cfg.flat_ratio], -1)
        self.gaussians = Gaussians(points, scales, cfg.init_opacity, quats)
        self.albedo_logit = nn.Parameter(torch.full((n, 3), _logit(cfg.init_albedo)))
        self.specular_logit = nn.Parameter(torch.full((n, 1), _logit(cfg.init_specular)))
        self.log_shininess = nn.Parameter(torch.full((n, 1), math.log(cfg.init_shininess)))
        self.normal_offset = nn.Parameter(torch.zeros(n, 3))
        self.ambient_logit = nn.Parameter(torch.full((n, 3), _logit(cfg.init_ambient)))
        # Distance of the training lights from the scene (set by training; the start matches init_intensity):
        # a directional light delivers what a point light of the same intensity delivers from there.
        self.register_buffer("light_distance", torch.tensor(math.sqrt(cfg.init_intensity)))
        self._vis_cache: dict[Light, Tensor] = {}  # each light's visibility [N] from self._snapshot
        self._snapshot: GeometrySnapshot | None = None  # the latest, shared by the lights computed from it
        self._transfer_cache: dict[tuple, Transfer] = {}

    def __len__(self) -> int:
        return len(self.gaussians)

    def light_init(self) -> LightParams:
        """Neutral light-dependent parameters (no correction, default intensity)."""
        n = len(self)
        return (torch.full((3,), math.log(self.config.init_intensity)), torch.zeros(n), torch.zeros(n, 3))

    def materials(self) -> dict[str, Tensor]:
        """Blinn-Phong attributes in their natural units."""
        base = self.gaussians.normals()
        n = base + self.normal_offset
        return {"albedo": torch.sigmoid(self.albedo_logit), "specular": torch.sigmoid(self.specular_logit),
                "shininess": self.log_shininess.exp(), "ambient": torch.sigmoid(self.ambient_logit),
                "normals": n / n.norm(dim=-1, keepdim=True).clamp_min(1e-9)}

    def visibility(self, light: Light) -> Tensor:  # [N]
        """Shadowing of each Gaussian by the others, computed once per light from one shared snapshot of the
        geometry; the snapshot (and with it every light) is renewed when the geometry has moved beyond the
        STALE_* thresholds. A light's shadows are thus a function of the snapshot alone, not of when the light
        was first asked for: ranks that adapt different lights hold the same values. Without gradient: shadows
        steer materials, not geometry."""
        g = self.gaussians
        key = (len(g), *self._geometry_key())
        snap = self._snapshot
        if snap is None or (snap.key != key and snap.moved(g)):
            snap = self._snapshot = GeometrySnapshot.take(g, key)
            self._vis_cache = {}
        elif snap.key != key:
            snap.key = key  # within the thresholds: the next look-up at this geometry skips the comparison
        if light not in self._vis_cache:
            if len(self._vis_cache) >= 256:
                self._vis_cache.clear()
            with torch.no_grad():
                self._vis_cache[light] = light_visibility(snap.means, snap.covariances(), snap.opacities, light,
                                                          bias=snap.bias(light))
        return self._vis_cache[light]

    def get_extra_state(self) -> dict:
        """The shadow cache, saved with the model so that a resumed run reuses what an uninterrupted one would."""
        q = self._snapshot
        if q is None:
            return {"snapshot": None, "lights": []}
        return {"snapshot": {"means": q.means, "chol": q.chol, "opacities": q.opacities, "scale": q.scale,
                             "normals": q.normals, "distance": q.distance},
                "lights": [{"position": list(light.position), "directional": light.directional, "vis": vis}
                           for light, vis in self._vis_cache.items()]}

    def set_extra_state(self, state: dict) -> None:
        q = state.get("snapshot")
        if q is None or "normals" not in q:  # none, or from before the slope-scaled bias: computed afresh
            self._vis_cache, self._snapshot = {}, None
            return
        self._snapshot = GeometrySnapshot(q["means"], q["chol"], q["opacities"], q["scale"], q["normals"],
                                          q["distance"], ("restored",))
        self._vis_cache = {Light(tuple(e["position"]), e["directional"]): e["vis"] for e in state["lights"]}

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        """Checkpoints from before the shadow cache was saved load with an empty cache."""
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        key = prefix + "_extra_state"
        if key not in state_dict:
            self._vis_cache, self._snapshot = {}, None
            if key in missing_keys:
                missing_keys.remove(key)

    def set_light_distance(self, lights: list[Light]) -> None:
        """Take the mean distance of the (point) training lights from the Gaussians' centroid as the reference
        distance of directional lights."""
        points = [light.position for light in lights if not light.directional]
        if points:
            centre = self.gaussians.means.detach().mean(0)
            dist = (torch.tensor(points, dtype=centre.dtype, device=centre.device) - centre).norm(dim=-1).mean()
            self.light_distance.fill_(float(dist))

    def check_light(self, light: Light) -> None:
        """Raise if a point light sits inside the object (the bounding box of the opaque Gaussians)."""
        from metatune import MetatuneError
        if light.directional:
            return
        g = self.gaussians
        solid = g.means[g.opacities > 0.5].detach()
        if solid.shape[0] == 0:  # nothing opaque yet (just after an opacity reset): all of them
            solid = g.means.detach()
        p = light.tensor(solid)
        lo, hi = solid.min(0).values, solid.max(0).values
        if bool(((p > lo) & (p < hi)).all()):
            raise MetatuneError(f"light at {list(light.position)} is inside the object "
                                f"(bounding box {lo.tolist()} to {hi.tolist()}); put it outside")

    def colors(self, camera: Camera, light: Light, params: LightParams) -> Tensor:  # [N, 3]
        """Outgoing radiance of every Gaussian towards the camera."""
        log_intensity, shadow, indirect = params
        # Per-Gaussian parameters are scaled by sqrt(N): one Gaussian covers ~1/N of the image, so without
        # the gain a plain gradient step (the inner loop) would barely move them next to the intensity.
        gain = math.sqrt(len(self))
        shadow, indirect = shadow * gain, indirect * gain
        m = self.materials()
        vis = self.visibility(light).clamp(1e-4, 1 - 1e-4)
        vis = torch.sigmoid(torch.logit(vis) + shadow)
        radiance = blinn_phong(self.gaussians.means, m["normals"], camera.position, m["albedo"], m["specular"],
                               m["shininess"], m["ambient"] * m["albedo"], light, log_intensity.exp(), vis,
                               float(self.light_distance))
        return radiance + indirect

    def _geometry_key(self) -> tuple:
        g = self.gaussians
        return (g.means._version, g.log_scales._version, g.quats._version, g.opacity_logits._version,
                g.means.data_ptr())

    def render(self, camera: Camera, light: Light, params: LightParams,
               frozen_geometry: bool = False) -> Tensor:  # [H, W, 3]
        """The image of the scene under `light` seen from `camera`.

        With `frozen_geometry`, no gradient reaches the geometry and the view's compositing weights are
        cached, which makes repeated renders of one view (inner-loop adaptation) cheap.
        """
        g = self.gaussians
        if frozen_geometry:
            key = (camera.c2w.data_ptr(), camera.width, camera.height, camera.fx, *self._geometry_key())
            if key not in self._transfer_cache:
                if len(self._transfer_cache) > 256:
                    self._transfer_cache.clear()
                self._transfer_cache[key] = transfer(g.means, g.quats, g.scales, g.opacities, camera)
            return self._transfer_cache[key].apply(self.colors(camera, light, params))
        img, _ = rasterize(g.means, g.quats, g.scales, g.opacities, self.colors(camera, light, params), camera,
                           watch=g.watch)
        return img


class PlainGaussians(nn.Module):
    """Baseline: the same Gaussians with one fixed colour each, blind to the light."""

    def __init__(self, points: Tensor, normals: Tensor, spacing: Tensor, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        scales = torch.stack([spacing, spacing, spacing * cfg.flat_ratio], -1)
        self.gaussians = Gaussians(points, scales, cfg.init_opacity, _quat_from_z(normals))
        self.color_logit = nn.Parameter(torch.full((points.shape[0], 3), _logit(0.3)))

    def render(self, camera: Camera, light: Light, params: LightParams | None = None) -> Tensor:  # [H, W, 3]
        g = self.gaussians
        img, _ = rasterize(g.means, g.quats, g.scales, g.opacities, torch.sigmoid(self.color_logit), camera,
                           watch=g.watch)
        return img


def _quat_from_z(normals: Tensor,  # [N, 3] unit
                 ) -> Tensor:  # [N, 4] rotations taking +z to each normal
    z = torch.tensor([0.0, 0.0, 1.0]).expand_as(normals)
    axis = torch.linalg.cross(z, normals)
    w = 1.0 + (z * normals).sum(-1, keepdim=True)
    q = torch.cat([w, axis], -1)
    flipped = w[:, 0] < 1e-6  # normal = -z: rotate by pi about x
    q[flipped] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    return q / q.norm(dim=-1, keepdim=True)
