"""`MetaTuner`: meta-learns, over a distribution of tasks, what makes a few inner steps adapt well."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from metatune import distributed
from metatune.adaptation import Adapted, inner_adapt, second_order_meta_gradient
from metatune.atomic import append_jsonl
from metatune.batched import batched_adapt_and_score, stack_tasks
from metatune.checkpoint import load as load_checkpoint
from metatune.checkpoint import save as save_checkpoint
from metatune.errors import MetatuneError
from metatune.tree import Tensors, flatten, unflatten

METHODS = ("maml", "fomaml", "metasgd", "uncertainty")
Task = Any


@dataclass
class MetaConfig:
    method: str = "metasgd"       # maml | fomaml | metasgd | uncertainty
    inner_steps: int = 5
    inner_lr: float = 1e-2        # the step size (the initial value of the learned ones)
    outer_lr: float = 1e-3
    step_outer_lr: float | None = None  # outer lr of the log step sizes / log prior stds (None: outer_lr)
    meta_batch: int = 8
    first_order: bool | None = None  # None: True for "fomaml", False otherwise
    batch_dims: int = 0           # leading parameter dims indexing independent problems
    prior_std: float = 1.0        # uncertainty: initial prior std of every parameter (learned)
    freeze_ratio: float = 0.05    # uncertainty: freeze a parameter once std < ratio * prior std
    probes: int = 1               # uncertainty: Hutchinson probes per step for the curvature
    grad_clip: float = 10.0
    inner_max_step: float | None = None  # trust region of each inner update, per element (adaptation.inner_adapt)
    inner_backtrack: int = 0      # halvings of an inner step whose loss then fails or is not finite
    drop_diverging: bool = False  # train: a task whose adaptation or outer loss diverges is dropped and counted
    # first-order training with the second-order term restored by finite-difference Hessian-vector products of
    # the inner gradient, the parameters moved by at most this (adaptation.second_order_meta_gradient); for losses
    # that are not twice differentiable (adjoint rollouts), where inner steps overshoot and the first-order
    # meta-gradient points the wrong way. None: the first-order approximation
    fd_hessian: float | None = None
    seed: int = 0
    batch_tasks: bool | None = None  # adapt a meta-batch in one vmap (metatune.batched); None: when tasks stack

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise MetatuneError(f"unknown meta-learning method {self.method!r}; choose one of {METHODS}")
        if self.inner_steps < 0 or self.meta_batch < 1:
            raise MetatuneError("inner_steps must be >= 0 and meta_batch >= 1")
        if self.fd_hessian is not None and (not self.fd_hessian > 0 or not self.is_first_order
                                            or self.method == "uncertainty"):
            raise MetatuneError(f"fd_hessian must be > 0 and needs first-order training of a method other than "
                                f"'uncertainty', got fd_hessian={self.fd_hessian}, method {self.method!r}, "
                                f"first_order={self.first_order}")

    @property
    def is_first_order(self) -> bool:
        return self.method == "fomaml" if self.first_order is None else self.first_order


class _FixedInit(nn.Module):
    """A meta-learned initialisation that does not depend on the task (MAML)."""

    def __init__(self, init: tuple[Tensor, ...]):
        super().__init__()
        self.values = nn.ParameterList([nn.Parameter(t.detach().clone()) for t in init])

    def forward(self, task: Task) -> tuple[Tensor, ...]:
        return tuple(self.values)


class MetaTuner:
    """Meta-learns the initialisation, per-parameter step sizes and (method "uncertainty") prior variances.

    init: Tensor, tuple of Tensors, or an nn.Module mapping a task to parameters (an amortised start).
    inner_loss(params, task) -> scalar: the support loss adaptation minimises.
    outer_loss(params, task) -> scalar: the query loss after adaptation (defaults to inner_loss).
    sample_tasks(n) -> n tasks for meta-training.
    init_lr(name) -> float: the outer learning rate of each named parameter of the init module (default:
        config.outer_lr for all), for starts whose parameters live on different scales.
    optimizer(groups) -> torch.optim.Optimizer: builds the outer optimizer from the parameter groups
        (default Adam); called again by `load`, so a checkpoint restores any layout of groups.
    """

    def __init__(
        self,
        init: Tensors | nn.Module,
        inner_loss: Callable[[Tensors, Task], Tensor],
        outer_loss: Callable[[Tensors, Task], Tensor] | None = None,
        sample_tasks: Callable[[int], Sequence[Task]] | None = None,
        config: MetaConfig | None = None,
        log_path: str | Path | None = None,
        init_lr: Callable[[str], float] | None = None,
        optimizer: Callable[[list[dict]], torch.optim.Optimizer] | None = None,
    ):
        self.config = config or MetaConfig()
        self._init_lr, self._make_optimizer = init_lr, optimizer or torch.optim.Adam
        self.inner_loss, self.outer_loss = inner_loss, outer_loss or inner_loss
        self.sample_tasks = sample_tasks
        self.log_path = Path(log_path) if log_path is not None else None
        if isinstance(init, nn.Module):
            self.init, self._single = init, None  # structure learned from the module's first output
        else:
            values, self._single = flatten(init, "init")
            self.init = _FixedInit(values)
        self.log_lr: nn.ParameterList | None = None
        self.log_prior_std: nn.ParameterList | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.step_count = 0
        # the tuner's own randomness (curvature probes): seeded by the config, never the global generator
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self._all_dropped = 0  # consecutive meta-steps whose every task diverged (drop_diverging)
        self._vmap_failed = False  # batch_tasks=None found the losses cannot be vmapped: the loop runs them
        if isinstance(self.init, _FixedInit):  # shapes known now; an amortised init reveals them on first use
            self._ensure_meta(tuple(self.init.values))

    # -- meta-parameters ---------------------------------------------------------------------------
    def _start(self, task: Task) -> tuple[Tensor, ...]:
        out = self.init(task)
        values, single = flatten(out, "init(task)")
        if self._single is None:
            self._single = single
        self._ensure_meta(values)
        return values

    def _ensure_meta(self, values: tuple[Tensor, ...]) -> None:
        if self.log_lr is not None:
            return
        b = self.config.batch_dims
        shapes = [t.shape[b:] for t in values]
        like = values[0]
        log_lr = math.log(self.config.inner_lr)
        self.log_lr = nn.ParameterList(
            [nn.Parameter(torch.full(s, log_lr, dtype=like.dtype, device=like.device)) for s in shapes])
        self.log_prior_std = nn.ParameterList(
            [nn.Parameter(torch.full(s, math.log(self.config.prior_std), dtype=like.dtype, device=like.device))
             for s in shapes])

    def prepare(self, task: Task) -> None:
        """Create the step-size (and prior-std) parameters from the start `init(task)` gives; automatic on the
        first adapt/train, needed before that only to build an optimizer or read step sizes."""
        self._start(task)

    def meta_parameters(self) -> list[nn.Parameter]:
        """The parameters meta-training updates for the configured method."""
        return [p for group in self._param_groups() for p in group["params"]]

    def _param_groups(self) -> list[dict]:
        if self.log_lr is None:
            raise MetatuneError("the step-size parameters are created on the first adapt/train call "
                                "(an nn.Module init reveals the parameter shapes only then)")
        by_lr: dict[float, list[nn.Parameter]] = {}
        for name, p in self.init.named_parameters():
            lr = self.config.outer_lr if self._init_lr is None else float(self._init_lr(name))
            by_lr.setdefault(lr, []).append(p)
        groups = [{"params": ps, "lr": lr} for lr, ps in by_lr.items()]
        steps = []
        if self.config.method in ("metasgd", "uncertainty"):
            steps += list(self.log_lr)
        if self.config.method == "uncertainty":
            assert self.log_prior_std is not None  # created together with log_lr (_ensure_meta, _load_state)
            steps += list(self.log_prior_std)
        if steps:
            lr = self.config.step_outer_lr if self.config.step_outer_lr is not None else self.config.outer_lr
            groups.append({"params": steps, "lr": lr})
        return groups

    def step_sizes(self) -> Tensors:
        """The inner step size of every parameter (learned for "metasgd"/"uncertainty", fixed otherwise)."""
        if self.log_lr is None:
            raise MetatuneError("step sizes exist after the first adapt/train call for an nn.Module init")
        assert self._single is not None  # known once log_lr exists: both come from the init's first output
        return unflatten(tuple(lr.detach().expand_as(p) for lr, p in zip(self._lrs(), self.log_lr)), self._single)

    def _lrs(self) -> tuple[Tensor, ...]:
        assert self.log_lr is not None  # callers come after _ensure_meta (step_sizes checks, _adapt calls _start)
        if self.config.method in ("metasgd", "uncertainty"):
            return tuple(torch.exp(p) for p in self.log_lr)
        return tuple(torch.full((), self.config.inner_lr, dtype=p.dtype, device=p.device) for p in self.log_lr)

    def _task_loss(self, task: Task, inner_loss: Callable[[Tensors, Task], Tensor] | None = None
                   ) -> Callable[[tuple[Tensor, ...]], Tensor]:
        """The inner loss of `task` on flat parameters."""
        inner = inner_loss or self.inner_loss

        def loss(x: tuple[Tensor, ...]) -> Tensor:
            assert self._single is not None  # set by _start from the init's first output
            return inner(unflatten(x, self._single), task)

        return loss

    def _adapt(self, task: Task, steps: int, create_graph: bool,
               inner_loss: Callable[[Tensors, Task], Tensor] | None = None,
               generator: torch.Generator | None = None, record: bool = False) -> Adapted:
        start = self._start(task)
        uncertain = self.config.method == "uncertainty"
        assert self.log_prior_std is not None  # _start -> _ensure_meta created it
        prior_var = tuple(torch.exp(2 * p) for p in self.log_prior_std) if uncertain else None
        return inner_adapt(self._task_loss(task, inner_loss), start, steps, self._lrs(), create_graph=create_graph,
                           prior_var=prior_var, freeze_ratio=self.config.freeze_ratio, probes=self.config.probes,
                           generator=generator or self.generator, max_step=self.config.inner_max_step,
                           backtrack=self.config.inner_backtrack, record=record)

    def _second_order(self, task: Task, res: Adapted, outer: Tensor) -> Tensor:
        """`outer` (the outer loss at the adapted parameters) with the meta-gradient of config.fd_hessian: its value,
        and a backward that gives the start and the step sizes their second-order meta-gradient."""
        assert isinstance(res.params, tuple) and res.trace is not None  # _adapt(record=True)
        if not res.trace:  # no inner step: the first-order gradient is exact
            return outer
        outer_grad = torch.autograd.grad(outer, res.params, allow_unused=True)
        outer_grad = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(res.params, outer_grad))
        lrs = self._lrs()
        v0, grad_lr = second_order_meta_gradient(self._task_loss(task), res.trace, lrs, outer_grad,
                                                 self.config.inner_max_step, float(self.config.fd_hessian or 0.0))
        # a surrogate whose value is the outer loss and whose gradient is (v0, grad_lr) on (start, step sizes)
        pairs = [(x, v) for x, v in zip(res.trace[0][0], v0)] + [(lr, g) for lr, g in zip(lrs, grad_lr)]
        linear = sum(((t * d).sum() for t, d in pairs if t.requires_grad), torch.zeros((), dtype=outer.dtype,
                                                                                     device=outer.device))
        return outer.detach() + linear - linear.detach()

    # -- the three verbs ---------------------------------------------------------------------------
    def train(self, steps: int, sample_tasks: Callable[[int], Sequence[Task]] | None = None,
              progress: bool = True) -> list[dict]:
        """Meta-train for `steps` outer iterations; returns (and logs as JSON lines) one record per step.

        Under torch.distributed (torchrun) the meta-batch is sharded across ranks and the meta-gradient
        all-reduced (metatune.distributed): every rank ends each step with the same meta-parameters, equal to
        a one-process run's up to float summation order; rank 0 alone writes the log.
        """
        sampler = sample_tasks or self.sample_tasks
        if sampler is None:
            raise MetatuneError("MetaTuner.train needs sample_tasks (give it to the constructor or to train)")
        cfg, history = self.config, []
        rank, world = distributed.rank_world()
        for _ in tqdm(range(steps), desc=f"meta-train ({cfg.method})", disable=not progress or rank != 0):
            tasks = list(sampler(cfg.meta_batch))  # every rank draws the same meta-batch, then adapts its share
            if not tasks:
                raise MetatuneError("sample_tasks returned no tasks")
            outer: Tensor | float = 0.0
            pre, post = 0.0, 0.0
            mine = distributed.shard(len(tasks))
            if self.log_lr is None:  # a module init reveals its shapes on first use: create them outside any vmap
                self._start(tasks[0])
            batched = self._batched([tasks[i] for i in mine]) if len(mine) > 1 else None
            if batched is not None:
                outer, pre, post = batched
            dropped = 0
            for i in mine if batched is None else ():
                try:
                    res = self._adapt(tasks[i], cfg.inner_steps, create_graph=not cfg.is_first_order,
                                      generator=self._task_generator(i), record=cfg.fd_hessian is not None)
                    assert isinstance(res.params, tuple) and self._single is not None  # as _adapt returns them
                    task_outer = self.outer_loss(unflatten(res.params, self._single), tasks[i])
                    if not bool(torch.isfinite(task_outer.detach())):
                        raise MetatuneError(f"task {i}: non-finite outer loss")
                    if cfg.fd_hessian is not None:
                        task_outer = self._second_order(tasks[i], res, task_outer)
                except MetatuneError:
                    if not cfg.drop_diverging:
                        raise
                    dropped += 1  # this task's rollout or loss diverged: the meta-batch goes on without it
                    continue
                outer = outer + task_outer
                pre, post = pre + res.losses[0], post + res.losses[-1]
            if self.optimizer is None:
                self.optimizer = self._make_optimizer(self._param_groups())
            self.optimizer.zero_grad()
            if isinstance(outer, Tensor):
                (outer / len(tasks)).backward()
            device = self.meta_parameters()[0].device  # nccl reduces tensors on the GPU only
            totals = torch.tensor([float(outer.detach()) if isinstance(outer, Tensor) else outer, pre, post,
                                   float(dropped)], dtype=torch.float64, device=device)
            reduced = [totals]
            if world > 1:
                for p in self.meta_parameters():
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    reduced.append(p.grad)
            distributed.all_reduce_sum(reduced)  # the loss totals and the meta-gradient in one collective
            dropped_all = int(totals[3])
            kept = len(tasks) - dropped_all
            means: list[float | None] = [None, None, None]  # no task kept: no update, the losses logged as null
            if kept == 0:
                self._all_dropped += 1
                if self._all_dropped >= 3:
                    raise MetatuneError(f"meta-training step {self.step_count}: every task of the last 3 meta-batches "
                                        "diverged; lower inner_lr, outer_lr or inner_max_step, or narrow the task "
                                        "distribution")
            else:
                self._all_dropped = 0
                means = [float(v) / kept for v in totals[:3]]
                if dropped_all:  # the meta-gradient is the mean over the tasks kept
                    for p in self.meta_parameters():
                        if p.grad is not None:
                            p.grad.mul_(len(tasks) / kept)
                if not math.isfinite(float(totals[0])):
                    raise MetatuneError(f"meta-training produced a non-finite outer loss at step {self.step_count}; "
                                        "lower outer_lr or inner_lr")
                self._clip_gradients()
                self.optimizer.step()
            record = {"step": self.step_count, "outer_loss": means[0], "inner_loss_before": means[1],
                      "inner_loss_after": means[2], "dropped_tasks": dropped_all}
            self.step_count += 1
            history.append(record)
            if self.log_path is not None:
                append_jsonl(self.log_path, record)  # rank 0 alone under torchrun
        return history

    def _batched(self, tasks: list[Task]) -> tuple[Tensor, float, float] | None:
        """The summed outer loss and inner losses before/after of `tasks` adapted in one vmap, or None when the
        loop must run them: curvature probes (method "uncertainty"), tasks that do not stack, batch_tasks=False,
        or (batch_tasks=None) losses that torch.func cannot trace."""
        mode = self.config.batch_tasks
        if mode is False or self.config.method == "uncertainty" or self.config.fd_hessian is not None \
                or self._vmap_failed:
            return None
        stacked = stack_tasks(tasks)
        if stacked is None:
            if mode:
                raise MetatuneError("batch_tasks=True needs tasks that are tensors (or tuples of tensors) of one shape")
            return None
        single = self._single
        assert single is not None  # set by _start

        def start(task: Any) -> tuple[Tensor, ...]:
            return flatten(self.init(task), "init(task)")[0]

        def inner(p: tuple[Tensor, ...], task: Any) -> Tensor:
            return self.inner_loss(unflatten(p, single), task)

        def outer(p: tuple[Tensor, ...], task: Any) -> Tensor:
            return self.outer_loss(unflatten(p, single), task)

        try:
            o, pre, post = batched_adapt_and_score(start, inner, outer, stacked, self.config.inner_steps, self._lrs(),
                                                   self.config.is_first_order, self.config.inner_max_step)
        except Exception as err:  # the losses do something vmap cannot batch: the loop computes the same
            if mode:
                raise MetatuneError(f"batch_tasks=True: the losses cannot be vmapped over tasks ({err})") from err
            self._vmap_failed = True
            return None
        return o.sum(), float(pre.sum()), float(post.sum())

    def _task_generator(self, index: int) -> torch.Generator:
        """The curvature probes of task `index` at this step: a function of (seed, step, index) alone, so a task
        draws the same probes whichever rank adapts it."""
        return torch.Generator().manual_seed((self.config.seed * 1_000_003 + self.step_count) * 1_009 + index)

    def _clip_gradients(self) -> None:
        """Clip the meta-gradient to norm config.grad_clip, stopping before a non-finite one reaches the
        meta-parameters (and the next checkpoint): one norm serves both, so a step reads one number back."""
        params = self.meta_parameters()
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if not bool(torch.isfinite(norm)):
            self._raise_nonfinite(params)
        torch.nn.utils.clip_grads_with_norm_(params, self.config.grad_clip, norm)

    def _raise_nonfinite(self, params: list[nn.Parameter]) -> None:
        names = {id(p): n for n, p in self.init.named_parameters()}
        for i, p in enumerate(params):
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                name = names.get(id(p), f"step-size/prior parameter {i}")
                raise MetatuneError(f"meta-training step {self.step_count}: the meta-gradient of {name} is not "
                                    "finite (the loss was); nothing was updated. Lower inner_lr or outer_lr, or "
                                    "check the losses for a NaN-producing operation")

    def adapt(self, task: Task, steps: int | None = None,
              inner_loss: Callable[[Tensors, Task], Tensor] | None = None) -> Adapted:
        """Adapt to one task from the meta-learned start; parameters are returned detached.

        inner_loss: a domain's hook to adapt on another loss than the one meta-trained on (the same
        parameters, for example the robot's gradients through MuJoCo instead of the torch model).
        """
        res = self._adapt(task, self.config.inner_steps if steps is None else steps, create_graph=False,
                          inner_loss=inner_loss)
        assert self._single is not None  # set by _start in _adapt
        res.params = unflatten(tuple(p.detach() for p in res.params), self._single)
        if res.std is not None:
            assert isinstance(res.std, tuple)  # inner_adapt's tuple, not yet unflattened
            res.std = unflatten(res.std, self._single)
        return res

    def evaluate(self, tasks: Sequence[Task], steps: int | None = None) -> dict:
        """Mean inner (support) loss after 0..k steps and the outer (query) loss after k, over `tasks`."""
        k = self.config.inner_steps if steps is None else steps
        curves, outer = [], []
        for task in tasks:
            res = self.adapt(task, k)
            curves.append(res.losses)
            with torch.no_grad():
                outer.append(float(self.outer_loss(res.params, task)))
        mean_curve = [sum(c[i] for c in curves) / len(curves) for i in range(k + 1)]
        return {"tasks": len(tasks), "steps": k, "inner_loss_by_step": mean_curve,
                "outer_loss": sum(outer) / len(outer)}

    # -- persistence -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"config": asdict(self.config), "step": self.step_count, "single": self._single,
                "init": self.init.state_dict(),
                "log_lr": [p.detach() for p in self.log_lr] if self.log_lr is not None else None,
                "log_prior_std": [p.detach() for p in self.log_prior_std] if self.log_prior_std is not None else None,
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
                "generator": self.generator.get_state()}

    def save(self, path: str | Path, domain: str = "engine", kind: str = "meta_tuner") -> None:
        """Write a checkpoint atomically, headed with its domain and kind and refused if anything is non-finite
        (under torch.distributed: rank 0 writes, the others wait for it)."""
        save_checkpoint(path, self.state_dict(), domain, kind)  # the file layer writes on rank 0 only
        distributed.barrier()

    def load(self, path: str | Path, domain: str = "engine", kind: str = "meta_tuner") -> "MetaTuner":
        """Restore a checkpoint written by `save` (weights_only loading; domain, kind and content hash checked)."""
        return self.load_state_dict(load_checkpoint(path, domain, kind), str(path))

    def load_state_dict(self, state: dict, source: str = "the state") -> "MetaTuner":
        """Restore `state_dict()`'s output; a state of another tuner's shape names the mismatch."""
        try:
            self._load_state(state, source)
        except (KeyError, TypeError, RuntimeError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise MetatuneError(f"{source} does not fit this tuner ({type(err).__name__}: {first[:300]})") from None
        return self

    def _load_state(self, state: dict, path: str) -> None:
        known = {f.name for f in fields(MetaConfig)}
        self.config = MetaConfig(**{k: v for k, v in state["config"].items() if k in known})
        self.step_count, self._single = state["step"], state["single"]
        self.init.load_state_dict(state["init"])
        if state.get("generator") is not None:
            self.generator.set_state(state["generator"])
        if state["log_lr"] is not None:  # onto the device of the init (checkpoints load onto the CPU)
            first = next(self.init.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
            self.log_lr = nn.ParameterList([nn.Parameter(t.to(device, copy=True)) for t in state["log_lr"]])
            self.log_prior_std = nn.ParameterList([nn.Parameter(t.to(device, copy=True))
                                                   for t in state["log_prior_std"]])
        self.optimizer = None
        if state["optimizer"] is not None:
            self.optimizer = self._make_optimizer(self._param_groups())
            try:
                self.optimizer.load_state_dict(state["optimizer"])
            except ValueError as err:  # saved with other parameter groups (another init_lr or method)
                raise MetatuneError(f"checkpoint {path}: its optimizer state does not fit this tuner's parameter "
                                    f"groups ({err}); build the tuner with the same init_lr and method") from err
