"""Meta-learned test-time optimisation on `mt.MetaTuner`: a keypoint regressor as the initialisation,
per-parameter step sizes and prior variances learned by simulating the fit during training; the fit's
steps are scaled by each parameter's (Laplace) variance and converged parameters are frozen.

`train_run` is `metatune hmr train`: pretraining and meta-training in a run folder, checkpointed every few
steps with everything a resumed run needs to end where an uninterrupted one would (docs/hmr.md)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

import metatune as mt
from hmr.body_model import BodyModel
from hmr.joint_uncertainty import joint_std_mm, root_relative_joints
from hmr.metrics import calibration_scale, procrustes_align
from hmr.objective import PARAM_DIM, FitProblem, FitWeights, fit_loss, hessian_diagonal
from hmr.regressor import KeypointRegressor
from hmr.synthetic import People, SyntheticConfig, make_people, other_layouts, people_problem
from metatune import checkpoint as mt_checkpoint
from metatune.atomic import append_jsonl, write_json
from metatune.run_folder import RunFolder, checkpoint_file

Task = tuple[FitProblem, Tensor]  # keypoint problem, true root-relative joints [B, 24, 3] (train only)


@dataclass
class MetaFitConfig:
    inner_steps: int = 10
    inner_lr: float = 0.3          # initial step size of every parameter (learned per parameter)
    prior_std: float = 1.0         # initial prior std of every parameter (learned per parameter)
    freeze_ratio: float = 0.4      # freeze a parameter once its std < ratio * prior std
    probes: int = 2                # Hutchinson probes per step for the curvature
    outer_lr: float = 2e-5         # meta-training lr of the regressor (a fine-tune of the supervised one)
    step_outer_lr: float = 0.05    # meta-training lr of the log step sizes and log prior stds
    people_per_task: int = 32
    meta_batch: int = 1
    pretrain_steps: int = 3000     # supervised steps for the regressor before meta-training
    pretrain_lr: float = 2e-3      # peak of a one-cycle schedule
    pretrain_batch: int = 128
    meta_steps: int = 150
    train_pool: int = 65536        # synthetic training people (drawn once, sampled with replacement)
    hidden: int = 512
    other_layouts: float = 0.0     # fraction of training people given COCO-17 / MediaPipe-33's missing points
    seed: int = 0
    pretrain_checkpoint_every: int = 100  # hmr train: a resumable checkpoint every this many pretraining steps
    checkpoint_every: int = 5             # ... and every this many meta-training steps


# How often a run is checkpointed does not change what it computes, so a resume may change these.
CHECKPOINT_FIELDS = ("pretrain_checkpoint_every", "checkpoint_every")
# What a resumed `hmr train` must agree on with the run it continues (the keys of its config.json).
TRAIN_DEFINING = ("domain", "model", "calibration_people") + tuple(
    f.name for f in fields(MetaFitConfig) if f.name not in CHECKPOINT_FIELDS)


@dataclass
class FitResult:
    params: Tensor        # [B, 85]
    param_std: Tensor     # [B, 85] per-parameter posterior std
    joint_std_mm: Tensor  # [B, 24] calibrated per-axis std of each root-relative joint
    frozen: Tensor        # [B, 85] parameters frozen during the fit
    losses: list[float]   # summed objective before each step and after the last
    steps: int


def curvature_scale(body: BodyModel, prob: FitProblem, start: Tensor,  # [B, 85]
                    weights: FitWeights) -> Tensor:  # [85]
    """sqrt of the mean |Hessian diagonal| of the objective per parameter: the units the fit runs in."""
    return hessian_diagonal(body, start, prob, weights).abs().mean(0).clamp_min(1e-3).sqrt()


class _ScaledInit(nn.Module):
    """The regressor's start in the fit's units: u = x * scale (a fixed diagonal preconditioner)."""

    def __init__(self, regressor: KeypointRegressor, scale: Tensor) -> None:
        super().__init__()
        self.regressor = regressor
        self.register_buffer("scale", scale)

    def forward(self, task) -> Tensor:  # [B, 85]
        return self.regressor(task) * self.scale


def warmup_fraction(steps: int, fraction: float = 0.05) -> float:
    """The one-cycle schedule's warm-up fraction: `fraction`, unless its warm-up would end at step 0
    (fraction * steps == 1, as at 20 steps), where torch's OneCycleLR divides by zero: then two steps."""
    return 2.0 / steps if fraction * steps == 1.0 else fraction


class MetaFitter:
    """Train / adapt / evaluate the meta-learned fit for SMPL-layout bodies and BODY_25 keypoints."""

    def __init__(self, body: BodyModel, config: MetaFitConfig | None = None, weights: FitWeights | None = None,
                 data: SyntheticConfig | None = None, log_path: str | Path | None = None,
                 scale: Tensor | None = None) -> None:
        """scale: the fit's diagonal preconditioner [85]; None measures it on reference training people."""
        self.body, self.cfg = body, config or MetaFitConfig()
        self.weights, self.data = weights or FitWeights(), data or SyntheticConfig()
        with torch.random.fork_rng(devices=[]):  # seeded initial weights; the global RNG is left as it was
            torch.manual_seed(self.cfg.seed)
            # built on the CPU, so a seed gives one regressor on every device; the fit runs on the body's device
            self.regressor = KeypointRegressor(body, hidden=self.cfg.hidden).to(body.j_template.device)
        # Run the fit in units where the objective's curvature is about 1 for every parameter, so one
        # initial step size suits orientation, pose, shape and translation alike.
        if scale is None:
            ref = make_people(body, 32, seed=2000 + self.cfg.seed, cfg=self.data)
            scale = curvature_scale(body, people_problem(body, ref), ref.params, self.weights)
        self.init = _ScaledInit(self.regressor, scale.to(body.j_template.device))
        meta = mt.MetaConfig(method="uncertainty", inner_steps=self.cfg.inner_steps, inner_lr=self.cfg.inner_lr,
                             outer_lr=self.cfg.outer_lr, step_outer_lr=self.cfg.step_outer_lr,
                             meta_batch=self.cfg.meta_batch, batch_dims=1,
                             prior_std=self.cfg.prior_std, freeze_ratio=self.cfg.freeze_ratio,
                             probes=self.cfg.probes, seed=self.cfg.seed)
        self.tuner = mt.MetaTuner(self.init, self._inner_loss, self._outer_loss, self._sample_tasks,
                                  config=meta, log_path=log_path)
        self.calibration = 1.0
        self.finished = False   # saved by a run that went to the end (calibrated); False for periodic checkpoints
        # The pool is drawn again from its seed on resume (make_people is deterministic), so it is not saved.
        self._pool: People | None = None
        self._gen = torch.Generator().manual_seed(self.cfg.seed + 7)
        self.pretrain_step = 0
        self.pretrain_losses: list[float] = []
        self._pre_opt: torch.optim.Optimizer | None = None
        self._pre_sched: torch.optim.lr_scheduler.LRScheduler | None = None

    # -- losses and tasks --------------------------------------------------------------------------
    @property
    def scale(self) -> Tensor:  # [85]
        return self.init.scale

    def _inner_loss(self, u: Tensor, task) -> Tensor:
        prob = task[0] if isinstance(task, tuple) else task
        return fit_loss(self.body, u / self.scale, prob, self.weights).sum()

    def _outer_loss(self, u: Tensor, task: Task) -> Tensor:
        """Mean squared 3D joint error in cm^2 after Procrustes alignment, plus 0.3x the root-relative one.

        The aligned term trains the articulation (what PA-MPJPE scores) without paying for the global
        rotation that 2D keypoints leave uncertain; the smaller root-relative term keeps that rotation sane.
        """
        pred, gt = root_relative_joints(self.body, u / self.scale), task[1]
        aligned = (procrustes_align(pred, gt) - gt).pow(2).sum(-1).mean()
        return 1e4 * (aligned + 0.3 * (pred - gt).pow(2).sum(-1).mean())

    def task(self, people: People) -> Task:
        with torch.no_grad():
            gt = root_relative_joints(self.body, people.params)
        return people_problem(self.body, people), gt

    def _sample_tasks(self, n: int, people: int | None = None) -> list[Task]:
        if self._pool is None:
            self._pool = make_people(self.body, self.cfg.train_pool, seed=1000 + self.cfg.seed, cfg=self.data)
        out = []
        for _ in range(n):
            idx = torch.randint(0, len(self._pool), (people or self.cfg.people_per_task,), generator=self._gen)
            people = self._pool.subset(idx)
            if self.cfg.other_layouts > 0:
                people = other_layouts(people, self.cfg.other_layouts, self._gen)
            out.append(self.task(people))
        return out

    # -- training ----------------------------------------------------------------------------------
    def _pretrain_optimizer(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """Adam and the one-cycle schedule over all of cfg.pretrain_steps (built once, restored on resume)."""
        if self._pre_opt is None or self._pre_sched is None:
            self._pre_opt = torch.optim.Adam(self.regressor.parameters(), lr=self.cfg.pretrain_lr)
            self._pre_sched = torch.optim.lr_scheduler.OneCycleLR(
                self._pre_opt, max_lr=self.cfg.pretrain_lr, total_steps=self.cfg.pretrain_steps,
                pct_start=warmup_fraction(self.cfg.pretrain_steps))
        return self._pre_opt, self._pre_sched

    def pretrain(self, steps: int | None = None, progress: bool = True) -> list[float]:
        """Supervised warm start of the regressor (the fit with zero steps), one-cycle learning rate over
        cfg.pretrain_steps: runs `steps` more of them (default and at most: the rest); returns their losses.

        A non-finite loss or gradient stops with an error naming the step before anything is updated.
        """
        left = self.cfg.pretrain_steps - self.pretrain_step
        steps = left if steps is None else min(steps, left)
        if steps <= 0:
            return []
        opt, sched = self._pretrain_optimizer()
        losses = []
        for _ in tqdm(range(steps), desc="pretrain regressor", disable=not progress, total=self.cfg.pretrain_steps,
                      initial=self.pretrain_step, leave=False):
            (task,) = self._sample_tasks(1, self.cfg.pretrain_batch)
            loss = self._outer_loss(self.init(task), task)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise mt.MetatuneError(f"pretraining step {self.pretrain_step}: the loss is {value}; nothing was "
                                       "updated. Lower pretrain_lr, or check the losses for a NaN-producing operation")
            opt.zero_grad()
            loss.backward()
            self._check_pretrain_gradients(value)
            opt.step()
            sched.step()
            losses.append(value)
            self.pretrain_losses.append(value)
            self._log({"phase": "pretrain", "step": self.pretrain_step, "loss": value})
            self.pretrain_step += 1
        return losses

    def _check_pretrain_gradients(self, loss: float) -> None:
        """Stop before a non-finite gradient reaches the regressor (and the next checkpoint)."""
        for name, p in self.regressor.named_parameters():
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                raise mt.MetatuneError(f"pretraining step {self.pretrain_step}: the gradient of regressor.{name} is "
                                       f"not finite (the loss, {loss:.6g}, was); nothing was updated. Lower "
                                       "pretrain_lr, or check the losses for a NaN-producing operation")

    def _log(self, record: dict) -> None:
        """Append a record to the log the tuner writes its meta-training steps to (if any)."""
        if self.tuner.log_path is not None:
            append_jsonl(self.tuner.log_path, record)  # rank 0 alone under torchrun

    def train(self, steps: int | None = None, progress: bool = True) -> list[dict]:
        """Meta-train initialisation, step sizes and prior variances by simulating the fit."""
        return self.tuner.train(self.cfg.meta_steps if steps is None else steps, progress=progress)

    def calibrate(self, people: People) -> float:
        """Fit the one factor on joint std that makes 90% intervals cover 90% of training joints."""
        self.calibration = 1.0
        res = self.fit(people_problem(self.body, people))
        err = 1000 * (root_relative_joints(self.body, res.params) - root_relative_joints(self.body, people.params))
        self.calibration = calibration_scale(err.norm(dim=-1)[:, 1:], res.joint_std_mm[:, 1:])
        return self.calibration

    # -- inference ---------------------------------------------------------------------------------
    def fit(self, prob: FitProblem, steps: int | None = None) -> FitResult:
        """Fit B people from the regressor's start with the meta-learned, uncertainty-scaled steps."""
        if prob.kp_xy.shape[1] != self.regressor.num_keypoints:
            raise mt.MetatuneError(f"the meta-learned fit takes BODY_25 keypoints ({self.regressor.num_keypoints}), "
                                   f"got {prob.kp_xy.shape[1]} per person")
        k = self.cfg.inner_steps if steps is None else steps
        res = self.tuner.adapt(prob, steps=k)
        params, std = res.params / self.scale, res.std / self.scale
        jstd = joint_std_mm(self.body, params, std) * self.calibration
        return FitResult(params=params, param_std=std, joint_std_mm=jstd.detach(),
                         frozen=res.frozen[0].detach(), losses=res.losses, steps=k)

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str | Path, finished: bool = True) -> None:
        """One headed checkpoint (hmr/meta_fit): the tuner's state, the configuration and calibration, and the
        training state a resumed run continues from. `finished=False` marks a periodic checkpoint of a run
        still training, which `load` refuses unless resuming."""
        meta = {"config": asdict(self.cfg), "weights": asdict(self.weights), "calibration": self.calibration}
        mt_checkpoint.save(path, {"tuner": self.tuner.state_dict(), "fit": meta,
                                  "training": self._training_state(finished)}, "hmr", KIND)

    def save_fit(self, path: str | Path) -> None:
        """What fitting needs of a finished run, without the meta-optimizer and training state: a third of the
        size, and loading it builds no optimizer (torch.optim's first use imports for seconds)."""
        meta = {"config": asdict(self.cfg), "weights": asdict(self.weights), "calibration": self.calibration}
        mt_checkpoint.save(path, {"tuner": self.tuner.state_dict() | {"optimizer": None}, "fit": meta}, "hmr", KIND)

    def _training_state(self, finished: bool) -> dict[str, Any]:
        # The pretraining optimizer and schedule matter only until pretraining ends; later checkpoints drop them.
        opt, sched = self._pre_opt, self._pre_sched
        if self.pretrain_step >= self.cfg.pretrain_steps:
            opt, sched = None, None
        return {"finished": finished, "pretrain_step": self.pretrain_step,
                "pretrain_losses": torch.tensor(self.pretrain_losses, dtype=torch.float64),
                "pretrain_optimizer": opt.state_dict() if opt is not None else None,
                "pretrain_scheduler": sched.state_dict() if sched is not None else None,
                "generator": self._gen.get_state()}

    def _load_training(self, training: dict[str, Any]) -> None:
        self.finished = bool(training["finished"])
        self.pretrain_step = int(training["pretrain_step"])
        self.pretrain_losses = [float(x) for x in training["pretrain_losses"].tolist()]  # float64: exact
        self._gen.set_state(training["generator"])
        if training["pretrain_optimizer"] is not None:
            opt, sched = self._pretrain_optimizer()
            # The optimizer's groups carry the lr and momentum the schedule had reached; the schedule its step.
            opt.load_state_dict(training["pretrain_optimizer"])
            sched.load_state_dict(training["pretrain_scheduler"])

    @classmethod
    def load(cls, body: BodyModel, path: str | Path, log_path: str | Path | None = None,
             resume: bool = False) -> "MetaFitter":
        """A fitter from `save`'s checkpoint (a run folder of `hmr train` or its checkpoint.pt).

        The checkpoint of a run still training is refused unless `resume` (what `hmr train` does to continue it).
        """
        path = checkpoint_file(path)
        state = mt_checkpoint.load(path, "hmr", KIND)
        try:
            meta = state["fit"]
            known = {f.name for f in fields(MetaFitConfig)}
            cfg = MetaFitConfig(**{k: v for k, v in meta["config"].items() if k in known})
            weights = FitWeights(**meta["weights"])
        except (KeyError, TypeError) as err:
            raise mt.MetatuneError(f"checkpoint {path} holds no meta-fit settings: {err}") from None
        training = state.get("training")
        if isinstance(training, dict) and not training.get("finished", True) and not resume:
            raise mt.MetatuneError(
                f"{path} is the checkpoint of an unfinished hmr train run (pretraining step "
                f"{training.get('pretrain_step')} of {cfg.pretrain_steps}, meta-training step "
                f"{state['tuner'].get('step')} of {cfg.meta_steps}, not calibrated); run the same "
                "`metatune hmr train` command again to finish it")
        fitter = cls(body, cfg, weights, log_path=log_path, scale=torch.ones(PARAM_DIM))  # the checkpoint holds the scale
        fitter.tuner.load_state_dict(state["tuner"], str(path))
        fitter.calibration = float(meta["calibration"])
        if training is None:   # written before runs were resumable: always at the end of a run
            fitter.finished, fitter.pretrain_step = True, cfg.pretrain_steps
        else:
            try:
                fitter._load_training(training)
            except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
                raise mt.MetatuneError(f"checkpoint {path}: its training state does not fit this fitter "
                                       f"({type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''})"
                                       ) from None
        return fitter


KIND = "meta_fit"
FIT_FILE = "fit.pt"   # a finished run's fit without its training state (hmr/trained/fit.pt ships)


def train_run(out: str | Path, cfg: MetaFitConfig, model: str | Path | None = None, calibration_people: int = 128,
              force: bool = False, progress: bool = True,
              device: torch.device | str = "cpu") -> tuple[dict[str, Any], bool]:
    """`metatune hmr train` into the run folder `out`: config.json, checkpoint.pt (every
    cfg.pretrain_checkpoint_every pretraining and cfg.checkpoint_every meta-training steps, and at the end),
    log.jsonl appended, training.png, metrics.json. Returns the metrics and whether anything was trained.

    A folder holding an unfinished run of the same settings resumes it (ending where an uninterrupted run
    would); a finished one is reported, not retrained; one holding another run is refused unless `force`.
    Bodies, people and the fit live on `device` (not part of the run's definition: a run resumes on any device).
    """
    from hmr.synthetic import make_split

    run = RunFolder(out)
    config = {"domain": "hmr", "verb": "train", "model": str(Path(model).resolve()) if model else "generated",
              "calibration_people": calibration_people, **asdict(cfg)}
    with run.lock():
        resuming = run.start(config, TRAIN_DEFINING, force)
        body = BodyModel.load(model).to(device)
        if resuming:
            fitter = MetaFitter.load(body, run.checkpoint, log_path=run.log, resume=True)
            if fitter.finished:
                if not (run / FIT_FILE).is_file():   # killed after its last checkpoint
                    fitter.save_fit(run / FIT_FILE)
                if run.metrics.is_file():
                    return json.loads(run.metrics.read_text()), False
                return _report(run, fitter, resumed=True), False
        else:
            fitter = MetaFitter(body, cfg, log_path=run.log)
        while fitter.pretrain_step < cfg.pretrain_steps:
            fitter.pretrain(cfg.pretrain_checkpoint_every, progress=progress)
            fitter.save(run.checkpoint, finished=False)
        while fitter.tuner.step_count < cfg.meta_steps:
            fitter.train(min(cfg.checkpoint_every, cfg.meta_steps - fitter.tuner.step_count), progress=progress)
            fitter.save(run.checkpoint, finished=False)
        fitter.calibrate(make_split(body, "train", calibration_people))
        fitter.save(run.checkpoint)   # finished: what infer, adapt and evaluate load
        fitter.save_fit(run / FIT_FILE)
        return _report(run, fitter, resumed=resuming), True


def _report(run: RunFolder, fitter: MetaFitter, resumed: bool) -> dict[str, Any]:
    """training.png and metrics.json of a finished run, from its checkpoint's pretraining losses and its log."""
    from hmr.training_plot import plot_training

    hist = run.step_history(fitter.tuner.step_count)
    plot_training(fitter.pretrain_losses, hist, run / "training.png")
    metrics = {"checkpoint": str(run.checkpoint), "resumed": resumed, "pretrain_steps": fitter.pretrain_step,
               "meta_steps": fitter.tuner.step_count,
               "pretrain_final": fitter.pretrain_losses[-1] if fitter.pretrain_losses else None,
               "meta_final": hist[-1] if hist else None, "calibration": fitter.calibration}
    write_json(run.metrics, metrics)
    return metrics
