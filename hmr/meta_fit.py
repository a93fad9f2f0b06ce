"""Meta-learned test-time optimisation on `mt.MetaTuner`: a keypoint regressor as the initialisation,
per-parameter step sizes and prior variances learned by simulating the fit during training; the fit's
steps are scaled by each parameter's (Laplace) variance and converged parameters are frozen."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

import metatune as mt
from hmr.body_model import BodyModel
from hmr.joint_uncertainty import joint_std_mm, root_relative_joints
from hmr.metrics import calibration_scale, procrustes_align
from hmr.objective import PARAM_DIM, FitProblem, FitWeights, fit_loss, hessian_diagonal
from hmr.regressor import KeypointRegressor
from hmr.synthetic import People, SyntheticConfig, make_people, people_problem
from metatune import checkpoint as mt_checkpoint
from metatune.run_folder import checkpoint_file

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
    seed: int = 0


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
            self.regressor = KeypointRegressor(body, hidden=self.cfg.hidden)
        # Run the fit in units where the objective's curvature is about 1 for every parameter, so one
        # initial step size suits orientation, pose, shape and translation alike.
        if scale is None:
            ref = make_people(body, 32, seed=2000 + self.cfg.seed, cfg=self.data)
            scale = curvature_scale(body, people_problem(body, ref), ref.params, self.weights)
        self.init = _ScaledInit(self.regressor, scale)
        meta = mt.MetaConfig(method="uncertainty", inner_steps=self.cfg.inner_steps, inner_lr=self.cfg.inner_lr,
                             outer_lr=self.cfg.outer_lr, step_outer_lr=self.cfg.step_outer_lr,
                             meta_batch=self.cfg.meta_batch, batch_dims=1,
                             prior_std=self.cfg.prior_std, freeze_ratio=self.cfg.freeze_ratio,
                             probes=self.cfg.probes, seed=self.cfg.seed)
        self.tuner = mt.MetaTuner(self.init, self._inner_loss, self._outer_loss, self._sample_tasks,
                                  config=meta, log_path=log_path)
        self.calibration = 1.0
        self._pool: People | None = None
        self._gen = torch.Generator().manual_seed(self.cfg.seed + 7)

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
            out.append(self.task(self._pool.subset(idx)))
        return out

    # -- training ----------------------------------------------------------------------------------
    def pretrain(self, steps: int | None = None, progress: bool = True) -> list[float]:
        """Supervised warm start of the regressor (the fit with zero steps), one-cycle learning rate."""
        steps = self.cfg.pretrain_steps if steps is None else steps
        if steps == 0:
            return []
        opt = torch.optim.Adam(self.regressor.parameters(), lr=self.cfg.pretrain_lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.cfg.pretrain_lr, total_steps=steps,
                                                    pct_start=0.05)
        losses = []
        for _ in tqdm(range(steps), desc="pretrain regressor", disable=not progress):
            (task,) = self._sample_tasks(1, self.cfg.pretrain_batch)
            loss = self._outer_loss(self.init(task), task)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        return losses

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
    def save(self, path: str | Path) -> None:
        """One headed checkpoint (hmr/meta_fit): the tuner's state plus the configuration and calibration."""
        meta = {"config": asdict(self.cfg), "weights": asdict(self.weights), "calibration": self.calibration}
        mt_checkpoint.save(path, {"tuner": self.tuner.state_dict(), "fit": meta}, "hmr", KIND)

    @classmethod
    def load(cls, body: BodyModel, path: str | Path) -> "MetaFitter":
        """A fitter from `save`'s checkpoint (a run folder of `hmr train` or its checkpoint.pt)."""
        path = checkpoint_file(path)
        state = mt_checkpoint.load(path, "hmr", KIND)
        try:
            meta = state["fit"]
            known = {f.name for f in fields(MetaFitConfig)}
            cfg = MetaFitConfig(**{k: v for k, v in meta["config"].items() if k in known})
            weights = FitWeights(**meta["weights"])
        except (KeyError, TypeError) as err:
            raise mt.MetatuneError(f"checkpoint {path} holds no meta-fit settings: {err}") from None
        fitter = cls(body, cfg, weights, scale=torch.ones(PARAM_DIM))   # the checkpoint holds the scale
        fitter.tuner.load_state_dict(state["tuner"], str(path))
        fitter.calibration = float(meta["calibration"])
        return fitter


KIND = "meta_fit"
