"""Training the relighting model: joint fitting on all lights, then meta-learning over lights; and the baselines."""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

import metatune as mt
from metatune import checkpoint as mt_checkpoint
from metatune.atomic import write_bytes, write_json
from metatune.distributed import is_main
from metatune.errors import MetatuneError
from metatune.run_folder import RunFolder
from relight.camera import Camera
from relight.carve import carved_points
from relight.densify import Densifier, DensifyConfig, gaussians_of, scene_extent
from relight.light import Light
from relight.light_prior import LightPrior
from relight.model import ModelConfig, PlainGaussians, RelightModel
from relight.pointcloud import estimate_normals
from relight.reseed import surface_samples
from relight.scene import Frame, Scene, load_scene
from relight.tasks import TaskSampler, photometric_loss

METHODS = ("meta", "joint", "plain")
CHECKPOINT = "checkpoint.pt"
HULL = "hull"  # a run from scratch: the folder inside the run that holds its first phase (fitted from the hull)
TUNER = "tuner.pt"
STAGE1 = "stage1.pt"  # the checkpoint at the end of stage 1 (fitting), kept so that other methods can start there
DOMAIN = "relight"
# what a resume must agree on
DEFINING = ("domain", "scene", "method", "resolution", "max_points", "seed", "init_ply", "densify", "max_gaussians")


@dataclass
class TrainConfig:
    """How to train: `meta` (ours), `joint` (same model, no meta-learning) or `plain` (Gaussians without shading)."""
    method: str = "meta"
    resolution: int | None = None  # longer image side to train at; None: the scene's own images
    fit_steps: int | None = None  # stage 1, every method: fit on random training frames (None: default_fit_steps)
    meta_steps: int = 60  # stage 2: meta-learning (meta) or meta_steps * meta_batch more fitting steps (joint, plain)
    inner_steps: int = 2
    inner_lr: float = 0.05
    outer_lr: float = 2e-3
    meta_batch: int = 2
    support_views: int = 1
    meta_method: str = "metasgd"
    max_points: int = 3000
    checkpoint_every: int = 50
    seed: int = 0
    init_ply: str | None = None  # a 3DGS .ply (graphdeco's layout, or ours) as the geometry start
    densify: bool = True  # 3DGS's adaptive density control during fitting (relight/densify.py)
    max_gaussians: int = 8000  # densification's budget
    reseed_steps: int | None = None  # from scratch: steps fitted after starting again on the fitted surfaces
    # (relight/reseed.py) once the hull start's fit_steps are done; None: RESEED_STEPS; 0: no restart

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise MetatuneError(f"unknown training method {self.method!r}; choose from {METHODS}")
        if (self.fit_steps is not None and self.fit_steps < 0) or self.meta_steps < 0 or (
                self.reseed_steps is not None and self.reseed_steps < 0) or (
                self.resolution is not None and self.resolution < 8):
            raise MetatuneError("fit_steps, meta_steps and reseed_steps must be >= 0 and resolution >= 8")


# Adam step sizes of stage 1, per parameter (the geometry moves slowly, materials quickly).
FIT_LR = {"means": 1e-3, "quats": 2e-3, "log_scales": 5e-3, "opacity_logits": 0.05, "albedo_logit": 0.03,
          "specular_logit": 0.03, "log_shininess": 0.03, "normal_offset": 2e-3, "ambient_logit": 0.03,
          "color_logit": 0.03, "log_intensity": 0.02, "shadow": 1e-3, "indirect": 5e-5}


def initial_points(scene: Scene, max_points: int, seed: int) -> Tensor:  # [P, 3]
    """The scene's points3d.ply (subsampled), or, if it has none, random points in the images' visual hull
    (relight/carve.py; in a box around the cameras' focus when the images have no separable background)."""
    gen = torch.Generator().manual_seed(seed)
    if scene.points is not None:
        pts = scene.points
        if pts.shape[0] > max_points:
            pts = pts[torch.randperm(pts.shape[0], generator=gen)[:max_points]]
        return pts
    return carved_points(scene.frames, max_points, gen)


def build(method: str, points: Tensor) -> nn.Module:
    """A fresh model for `method` on the given initial points: LightPrior(RelightModel) or PlainGaussians."""
    normals, spacing = estimate_normals(points)
    if method == "plain":
        return PlainGaussians(points, normals, spacing)
    return LightPrior(RelightModel(points, normals, spacing, ModelConfig()))


def start_from_ply(method: str, path: Path) -> nn.Module:
    """A fresh model for `method` whose geometry is a 3D Gaussian splatting PLY's (relight.ply.import_ply)."""
    from relight.ply import import_ply

    model = import_ply(path)
    if method == "plain":
        with torch.no_grad():
            return build("plain", model.gaussians.means.detach().clone())
    return LightPrior(model)


def empty(method: str, n: int) -> nn.Module:
    """A model of n Gaussians to load a state dict into."""
    pts = torch.randn(n, 3)
    normals = torch.zeros(n, 3)
    normals[:, 2] = 1
    spacing = torch.full((n,), 0.01)
    if method == "plain":
        return PlainGaussians(pts, normals, spacing)
    return LightPrior(RelightModel(pts, normals, spacing))


def render(module: nn.Module, frame: Frame, params: tuple | None = None) -> Tensor:  # [H, W, 3]
    """Render a frame's camera and light with a trained module (the prior's start if no params)."""
    if isinstance(module, PlainGaussians):
        return module.render(frame.camera, frame.light)
    return module.model.render(frame.camera, frame.light, module() if params is None else params)


def views_loss(prior: LightPrior, params: tuple, light: Light, views: list[Frame], frozen: bool) -> Tensor:
    """Mean photometric loss of the views under `light` with the given light-dependent parameters."""
    total = sum(photometric_loss(prior.model.render(f.camera, light, params, frozen), f.image, f.mask)
                for f in views)
    return total / len(views)


FIT_STEPS_FROM_SURFACES = 300  # a start on the surfaces: points3d.ply or a 3DGS file
# A visual-hull or box start; docs/relight.md: 18.2 dB at 300 steps, 25.6 at 900, 28.7 at 1800, 28.6 at 2700.
FIT_STEPS_FROM_SCRATCH = 1800
# then, from points sampled on the fitted surfaces: 30.71 dB after 300 more steps, 31.14 after 600 (surface start 31.79)
RESEED_STEPS = 600


def starts_on_surfaces(scene: Scene, cfg: TrainConfig) -> bool:
    """Whether the run starts on surfaces (the scene's points3d.ply or a 3DGS file) rather than from scratch."""
    return scene.points is not None or bool(cfg.init_ply)


def default_fit_steps(scene: Scene, cfg: TrainConfig) -> int:
    """Stage 1's length when not given: six times as long from scratch as from surface points."""
    if cfg.fit_steps is not None:
        return cfg.fit_steps
    return FIT_STEPS_FROM_SURFACES if starts_on_surfaces(scene, cfg) else FIT_STEPS_FROM_SCRATCH


def default_reseed_steps(scene: Scene, cfg: TrainConfig) -> int:
    """Steps after starting again on the fitted surfaces: only from scratch (a start on surfaces has them)."""
    if starts_on_surfaces(scene, cfg):
        return 0
    return RESEED_STEPS if cfg.reseed_steps is None else cfg.reseed_steps


def baseline_steps(cfg: TrainConfig) -> int:
    """Fitting steps of joint/plain: stage 1 plus one per query image meta-learning renders with gradient."""
    assert cfg.fit_steps is not None  # resolved by train()
    return cfg.fit_steps + cfg.meta_steps * cfg.meta_batch


def make_tuner(prior: LightPrior, cfg: TrainConfig, sampler: TaskSampler | None, log_path: Path | None,
               method: str | None = None) -> mt.MetaTuner:
    """The engine's MetaTuner over lights: inner loop on support views, outer loss on query views."""
    mcfg = mt.MetaConfig(method=method or cfg.meta_method, inner_steps=cfg.inner_steps, inner_lr=cfg.inner_lr,
                         outer_lr=cfg.outer_lr, meta_batch=cfg.meta_batch, first_order=True, seed=cfg.seed)
    # First order: the inner loop sees frozen geometry (cached weights); the query loss trains everything.
    # The outer loop moves each parameter at its fitting step size: with one outer_lr for all, the
    # sqrt(N)-scaled per-Gaussian corrections move ~40x faster than in joint fitting and turn into colour
    # noise (measured: the indirect term's mean grew 5x and cost 2 dB). Step sizes keep outer_lr.
    return mt.MetaTuner(prior, lambda p, t: views_loss(prior, p, t.light, t.support, True),
                        lambda p, t: views_loss(prior, p, t.light, t.query, False), sample_tasks=sampler, config=mcfg,
                        log_path=log_path, init_lr=lambda name: FIT_LR[name.split(".")[-1]],
                        optimizer=lambda groups: torch.optim.Adam(groups, eps=1e-15))


def save_checkpoint(run: Path, state: dict, name: str = CHECKPOINT) -> None:
    """Write the run's checkpoint atomically (headed relight/run, refused if anything is non-finite)."""
    mt_checkpoint.save(Path(run) / name, state, DOMAIN, "run")


def load_checkpoint(run: Path, name: str = CHECKPOINT,
                    device: torch.device | str = "cpu") -> tuple[TrainConfig, nn.Module, dict]:
    """Config, model (on `device`) and raw state (on the CPU) of a run folder."""
    path = Path(run) / name
    if not path.is_file():
        raise MetatuneError(f"no checkpoint in {run} (expected {path})")
    state = mt_checkpoint.load(path, DOMAIN, "run")
    try:
        known = {f.name for f in fields(TrainConfig)}
        cfg = TrainConfig(**{k: v for k, v in state["config"].items() if k in known})
        module = empty(cfg.method, state["n"])
        module.load_state_dict(state["module"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise MetatuneError(f"checkpoint {path} does not hold a relight model ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:200]})") from None
    return cfg, module.to(device), state


def train(scene_dir: Path, run: Path, cfg: TrainConfig | None = None, progress: bool = True,
          force: bool = False, device: torch.device | str = "cpu") -> dict:
    """Train (or resume) a run on a scene's training split; returns a summary (also written to run/summary.json).

    The run folder (docs/cli.md) is locked while training; one that holds another run (another scene, method,
    resolution, seed or stage-1 length) is refused unless `force`. The model and the images live on `device`
    (the model is built on the CPU first, so a seed gives the same start on any device).
    """
    cfg = cfg or TrainConfig()
    scene = load_scene(scene_dir, "train", cfg.resolution)
    cfg = replace(cfg, fit_steps=default_fit_steps(scene, cfg), reseed_steps=default_reseed_steps(scene, cfg))
    folder = RunFolder(run)
    config = {"domain": DOMAIN, "verb": "train", "scene": str(Path(scene_dir).resolve()), **asdict(cfg)}
    if cfg.method == "meta" and cfg.meta_steps > 0:  # can the lights be split? Checked before any fitting
        TaskSampler(scene.frames, cfg.support_views, seed=cfg.seed)
    with folder.lock(), torch.random.fork_rng(devices=[]):  # seeded here; the caller's global RNG is restored
        torch.manual_seed(cfg.seed)
        folder.start(config, DEFINING, force)  # a forked stage-1 checkpoint without a config resumes
        if not cfg.reseed_steps:
            return _train(scene, folder.path, cfg, progress, torch.device(device))
        hull = _fit_hull(scene, folder.path, cfg, progress, torch.device(device))
        summary = _train(scene, folder.path, replace(cfg, fit_steps=cfg.reseed_steps), progress,
                         torch.device(device), start=hull)
        first_path = folder.path / HULL / "summary.json"
        if first_path.is_file():  # (a run forked from another's stage 1 has none)
            first = json.loads(first_path.read_text())
            summary |= {"train_seconds": round(summary["train_seconds"] + first["train_seconds"], 1), "hull": first}
            write_json(folder.path / "summary.json", summary)
        return summary


def _fit_hull(scene: Scene, run: Path, cfg: TrainConfig, progress: bool,
              device: torch.device) -> Tensor | None:  # [max_points, 3], None once the run proper has begun
    """A run from scratch, first phase: stage 1 alone (cfg.fit_steps from the visual hull, densification with the
    opacity reset) in run/hull, resumed like any run; then max_points samples on its fitted surfaces, which the
    run proper starts from as it would from a points3d.ply."""
    if (run / CHECKPOINT).is_file():
        return None
    hull = run / HULL
    hull.mkdir(exist_ok=True)
    _train(scene, hull, replace(cfg, meta_steps=0, reseed_steps=0), progress, device)
    _, module, _ = load_checkpoint(hull)
    return surface_samples(gaussians_of(module), cfg.max_points, cfg.seed)


def _train(scene: Scene, run: Path, cfg: TrainConfig, progress: bool, device: torch.device,
           start: Tensor | None = None,  # [P, 3] points to start from instead of the scene's (a restart)
           ) -> dict:
    rng = random.Random(cfg.seed)
    fit_done, elapsed = 0, 0.0
    if (run / CHECKPOINT).is_file():
        saved_cfg, module, state = load_checkpoint(run, device=device)
        if saved_cfg.method != cfg.method:
            raise MetatuneError(f"{run} holds a '{saved_cfg.method}' run; cannot resume it as '{cfg.method}'")
        fit_done, elapsed = state["fit_done"], state["elapsed"]
        rng.setstate(_tuple_state(state["rng"]))
    else:
        module = (start_from_ply(cfg.method, Path(cfg.init_ply)) if cfg.init_ply else
                  build(cfg.method, start if start is not None else
                        initial_points(scene, cfg.max_points, cfg.seed))).to(device)
        state = {}
    frames = [f.to(device) for f in scene.frames]
    sampler: TaskSampler | None = None
    if cfg.method == "meta" and cfg.meta_steps > 0:
        sampler = TaskSampler(frames, cfg.support_views, seed=cfg.seed)
    if isinstance(module, LightPrior):
        for light in {f.light for f in scene.frames}:
            module.model.check_light(light)
        if not state:
            module.model.set_light_distance([f.light for f in scene.frames])
    groups = [{"params": [p], "lr": FIT_LR[name.split(".")[-1]]} for name, p in module.named_parameters()]
    opt = torch.optim.Adam(groups, eps=1e-15)
    if state.get("optimizer") is not None:
        opt.load_state_dict(state["optimizer"])
    fit_total = cfg.fit_steps if cfg.method == "meta" else baseline_steps(cfg)
    densifier = None
    if cfg.densify and fit_done < cfg.fit_steps:  # scheduled over stage 1, which every method shares
        extent = scene_extent(torch.stack([f.camera.position for f in scene.frames]))
        # The opacity reset clears floaters, which a start on the surfaces (points3d.ply, a 3DGS file) lacks:
        # measured, it cost the demo (100 steps from points) 5.7 dB and gained a hull start (600 steps) 1.3 dB.
        from_surfaces = starts_on_surfaces(scene, cfg) or bool(cfg.reseed_steps)  # (or restarted on them)
        dcfg = DensifyConfig(max_gaussians=cfg.max_gaussians, **({"reset_at": 1.0} if from_surfaces else {}))
        densifier = Densifier(module, cfg.fit_steps, extent, dcfg, seed=cfg.seed)
        densifier.resume(fit_done, state.get("densify"))
    t0 = time.perf_counter()

    def checkpoint() -> None:
        save_checkpoint(run, {"config": asdict(cfg), "n": _count(module), "module": module.state_dict(),
                              "optimizer": opt.state_dict(), "fit_done": fit_done,
                              "sampler_rng": list(sampler.rng.getstate()) if sampler is not None and meta_started
                              else None,
                              "elapsed": elapsed + time.perf_counter() - t0, "rng": list(rng.getstate()),
                              "densify": densifier.state_dict() if densifier is not None else None,
                              "cameras": pack_cameras([f.camera for f in scene.frames])})

    meta_started = False  # the sampler's state is saved once meta-learning draws from it
    bar = tqdm(range(fit_done, fit_total), desc=f"fit ({cfg.method})", disable=not progress)
    for i in bar:
        frame = rng.choice(frames)
        loss = photometric_loss(render(module, frame), frame.image)
        if not bool(torch.isfinite(loss)):
            raise MetatuneError(f"training loss is not finite at step {i}; the last good checkpoint is "
                                f"{run / CHECKPOINT} (resume with a lower learning rate)")
        opt.zero_grad()
        loss.backward()
        bad = [name for name, p in module.named_parameters() if p.grad is not None
               and not bool(torch.isfinite(p.grad).all())]
        if bad:  # a finite loss can still have a NaN gradient: stop before it reaches the model or a checkpoint
            raise MetatuneError(f"the gradient of {bad[0]} is not finite at fitting step {i} (the loss was "
                                f"{float(loss.detach()):.4g}); the last good checkpoint is {run / CHECKPOINT}")
        if densifier is not None:
            densifier.after_backward(i, frame.camera.width, frame.camera.height)
        opt.step()
        if densifier is not None:
            densifier.after_step(i, opt)
        fit_done = i + 1
        if fit_done % cfg.checkpoint_every == 0 or fit_done == cfg.fit_steps:
            checkpoint()
        if fit_done == cfg.fit_steps and not isinstance(module, PlainGaussians) and is_main():
            write_bytes(run / STAGE1, (run / CHECKPOINT).read_bytes())  # (rank 0's file, under torchrun)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", gaussians=_count(module))
    checkpoint()
    if sampler is not None:
        meta_started = True
        tuner = make_tuner(module, cfg, sampler, run / "meta_log.jsonl")
        if (run / TUNER).is_file():
            tuner.load(run / TUNER, DOMAIN, "meta_tuner")  # meta-parameters, step sizes and outer optimizer state
        else:
            tuner.prepare(sampler(1)[0])  # creates the step-size parameters
        if state.get("sampler_rng") is not None:  # a resumed run draws the tasks an uninterrupted one would
            sampler.rng.setstate(_tuple_state(state["sampler_rng"]))
        while tuner.step_count < cfg.meta_steps:
            tuner.train(min(cfg.checkpoint_every, cfg.meta_steps - tuner.step_count), progress=progress)
            tuner.save(run / TUNER, DOMAIN, "meta_tuner")
            checkpoint()
    seconds = elapsed + time.perf_counter() - t0
    summary = {"method": cfg.method, "gaussians": _count(module), "size": list(scene.size),
               "train_frames": len(scene.frames), "train_seconds": round(seconds, 1),
               "densify": densifier.history if densifier is not None else (state.get("densify") or {}).get("history", [])}
    write_json(run / "summary.json", summary)
    return summary


def fork_stage1(source: Path, run: Path, method: str) -> None:
    """Start `run` as `method` from the end of `source`'s stage 1 (same data, seed and steps: both
    methods share stage 1 exactly, so training it once serves both and pairs their comparison)."""
    path = Path(source) / STAGE1
    if not path.is_file():
        raise MetatuneError(f"{source} has no stage-1 checkpoint ({path}); train it past its fitting stage first")
    if (Path(run) / CHECKPOINT).is_file():
        return
    state = mt_checkpoint.load(path, DOMAIN, "run")
    state["config"] = state["config"] | {"method": method}
    save_checkpoint(Path(run), state)


def pack_cameras(cameras: list[Camera]) -> Tensor:  # [F, 22]
    """Cameras as rows of (c2w flattened, fx, fy, cx, cy, width, height), for a checkpoint."""
    return torch.stack([torch.cat([c.c2w.reshape(-1), torch.tensor([c.fx, c.fy, c.cx, c.cy, c.width, c.height])])
                        for c in cameras])


def unpack_cameras(rows: Tensor) -> list[Camera]:
    return [Camera(r[:16].reshape(4, 4), *(float(v) for v in r[16:20]), int(r[20]), int(r[21])) for r in rows]


def _count(module: nn.Module) -> int:
    return len(gaussians_of(module))


def _tuple_state(s: list) -> tuple:
    return (s[0], tuple(s[1]), s[2])
