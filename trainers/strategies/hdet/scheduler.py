"""HDET as a drop-in for a user's own data-parallel loop, positioned like torch's OneCycleLR.

Each process is one replica. After ``optimizer.step()`` call ``scheduler.step(loss)``: it sets this
rank's LR to ``base * rho_r`` for the next step and, every ``syncInterval`` steps and at the end,
averages the replicas (parameters, floating buffers and optimizer state) and runs the auto-LR update
of ``controller.HDETController``. Gradients are averaged every step by DDP or by
:func:`average_gradients`; each replica applies the averaged gradient with its own LR.

Collectives at a sync, in order: all-gather of the replicas' interval losses, all-gather of their
scores (only at syncs that move the base LR, when a ``scorer`` is given: each replica's annealed
evaluation), broadcast of rank 0's permutation (only at syncs that move the base LR), all-reduce
of the finite replicas' state. A replica whose state is non-finite is left out of the average and
receives it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from schedsearch.trainers import schedules
from schedsearch.trainers.evaluation import Phases
from schedsearch.trainers.strategies.hdet.config import HDETConfig
from schedsearch.trainers.strategies.hdet.controller import Converge, HDETController

STATE_FORMAT = "schedsearch.io/hdet-scheduler-v1"


# -- collectives ---------------------------------------------------------------------------------


def _flat_groups(tensors: Iterable[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Tensors grouped by (device, dtype) so each group travels as one flat buffer."""
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    return list(groups.values())


def _all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def average_finite(
    tensors: Sequence[torch.Tensor], *, include: bool = True, group: Any = None
) -> int:
    """Replace every tensor, on every rank, by its mean over the ranks whose tensors are all finite.

    ``include=False`` leaves this rank out even when finite. Returns the number of ranks averaged;
    with none, nothing changes. One all-reduce for the count, one per (device, dtype) group.
    """
    tensors = [t for t in tensors if t.is_floating_point()]
    ok = include and _all_finite(tensors)
    device = tensors[0].device if tensors else torch.device("cpu")
    count = torch.tensor([1.0 if ok else 0.0], dtype=torch.float64, device=device)
    dist.all_reduce(count, group=group)
    contributors = int(count.item())
    if contributors == 0:
        return 0
    for members in _flat_groups(tensors):
        flat = torch.cat([t.detach().reshape(-1) for t in members])
        if not ok:
            # Multiplying by zero would keep NaN; a diverged replica contributes exact zeros.
            flat.zero_()
        dist.all_reduce(flat, group=group)
        flat.div_(contributors)
        offset = 0
        for tensor in members:
            n = tensor.numel()
            tensor.detach().copy_(flat[offset : offset + n].view_as(tensor))
            offset += n
    return contributors


def average_gradients(
    model: torch.nn.Module | Iterable[torch.Tensor], *, include: bool = True, group: Any = None
) -> int:
    """Average ``.grad`` over the ranks whose gradients are finite (call between backward and
    ``optimizer.step()`` when not using DDP). ``include=False`` leaves this rank out (its loss
    was not finite). Every rank must hold the same gradient tensors (allocate them once, e.g.
    ``zero_grad(set_to_none=False)`` after a first step). Returns how many ranks contributed;
    with none, every gradient is zeroed so no replica takes a non-finite step."""
    params = model.parameters() if isinstance(model, torch.nn.Module) else model
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0
    contributors = average_finite(grads, include=include, group=group)
    if contributors == 0:
        for grad in grads:
            grad.zero_()
    return contributors


def replica_state(optimizer: torch.optim.Optimizer, model: torch.nn.Module | None) -> list[Any]:
    """What a sync averages: the parameters, the model's floating buffers (BatchNorm statistics)
    and the optimizer's floating per-parameter state (momentum, Adam moments). Averaging the
    optimizer state too makes the replicas identical after a sync, so one checkpoint restores all.
    """
    params = (
        list(model.parameters())
        if model is not None
        else [p for g in optimizer.param_groups for p in g["params"]]
    )
    buffers = [b for b in model.buffers() if b.is_floating_point()] if model is not None else []
    state = [
        value
        for p in params
        for value in optimizer.state.get(p, {}).values()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() > 0
    ]
    return [*params, *buffers, *state]


@torch.no_grad()
def spread_parameters(model: torch.nn.Module, noise_scale: float, *, seed: int, rank: int) -> None:
    """Warm noisy init: theta_r = theta + N(0, (noise_scale*||theta||)^2 / d), per tensor.

    Per tensor rather than over the whole vector, so that every layer is perturbed by the same
    relative amount whatever its size; a zero tensor (a fresh bias) stays zero. Each rank draws
    from its own generator, seeded by (seed, rank). With DDP, call it after wrapping the model:
    DDP broadcasts rank 0's parameters when it is built, which would undo the spread.
    """
    if noise_scale == 0:
        return
    generator = torch.Generator().manual_seed(seed * 1_000_003 + rank)
    for param in model.parameters():
        if not param.is_floating_point() or param.numel() == 0:
            continue
        std = noise_scale * float(param.norm()) / param.numel() ** 0.5
        noise = torch.randn(param.shape, generator=generator, dtype=param.dtype) * std
        param.add_(noise.to(param.device))


# -- the scheduler -------------------------------------------------------------------------------


class HDETScheduler:
    """One replica's HDET: LR fan-out, periodic averaging and auto-LR, in a data-parallel loop.

    ``base_schedule`` gives the base LR (from ``families.build_schedule``); ``peak_lr`` alone means
    a constant base at that LR; neither means the log-midpoint of ``lr_bounds``. ``model`` (when
    given) adds its buffers to what a sync averages. ``rank``/``world_size`` default to
    torch.distributed's; the world size must equal ``config.replicas``. ``phases`` ends the run
    in a cooldown (see ``controller.py``). ``scorer``, when given, is called on every rank at the
    syncs that move the base LR, before the average: it returns this replica's score (lower is
    better; e.g. an annealed evaluation) and the training steps it cost, and the auto-LR weighs
    the scores instead of the interval losses.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        config: HDETConfig,
        *,
        total_steps: int,
        base_schedule: schedules.Schedule | None = None,
        peak_lr: float | None = None,
        lr_bounds: tuple[float, float] = (1e-6, 10.0),
        model: torch.nn.Module | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        group: Any = None,
        seed: int = 0,
        group_scales: Sequence[float] | None = None,
        phases: Phases | None = None,
        scorer: Callable[[], tuple[float, int]] | None = None,
    ) -> None:
        self.rank, self.world_size = self._topology(rank, world_size, group)
        if self.world_size != config.replicas:
            raise ValueError(
                f"replicas: the config asks for {config.replicas} but the process group has "
                f"{self.world_size} ranks; start one process per replica"
            )
        if base_schedule is None and peak_lr is not None:
            base_schedule = schedules.Schedule.constant(peak_lr, total_steps)
        self.controller = HDETController(
            config,
            total_steps=total_steps,
            base_schedule=base_schedule,
            lr_bounds=lr_bounds,
            seed=seed,
            phases=phases,
        )
        self.optimizer, self.model, self.group = optimizer, model, group
        self.scorer = scorer
        # Training steps this replica spent in scoring branches (search cost).
        self.evaluation_steps = 0
        self.group_scales = self._check_scales(group_scales, optimizer)
        self.step_count = 0
        self.converge_seconds = 0.0
        self.sync_wait_seconds = 0.0
        self.last_decision: Converge | None = None
        self.averaged_replicas = 0
        self._loss_sum, self._loss_count = 0.0, 0
        self._apply_lr()

    # -- the loop's call ----------------------------------------------------------------------

    def step(self, loss: float | torch.Tensor) -> Converge | None:
        """Record this step's loss; sync when due; set the LR of the next step.

        Returns the sync's decision when this step ended an interval, else None.
        """
        if self.done:
            raise ValueError(
                f"step: already {self.step_count} steps, the total_steps this scheduler was "
                "built for; like OneCycleLR it cannot step past the end"
            )
        self._loss_sum += float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        self._loss_count += 1
        self.step_count += 1
        decision = None
        if self.controller.is_sync(self.step_count):
            decision = self.converge()
        self._apply_lr()
        return decision

    def converge(self) -> Converge:
        """Average the replicas and run the auto-LR update (all ranks call this together)."""
        waited = time.perf_counter()
        # The gather also lines the ranks up, so the timing below is the all-reduce alone, not
        # a wait for the slowest replica (that is counted in ``sync_wait_seconds``).
        losses = self._gather_losses()
        scores = self._gather_scores()
        permutation = self._shared_permutation()
        started = time.perf_counter()
        contributors = average_finite(replica_state(self.optimizer, self.model), group=self.group)
        self._wait_for_device()
        self.converge_seconds += time.perf_counter() - started
        self.sync_wait_seconds += started - waited
        decision = self.controller.sync(self.step_count, losses, permutation, scores)
        self.last_decision = decision
        self.averaged_replicas = contributors
        self._loss_sum, self._loss_count = 0.0, 0
        return decision

    def set_peak(self, peak: float) -> None:
        """Scale the base schedule to peak at ``peak`` (before the first step; see
        ``HDETController.set_peak``)."""
        self.controller.set_peak(peak)
        self._apply_lr()

    @property
    def lr(self) -> float:
        """This rank's LR for the next step (before group scales)."""
        return self.controller.lr(self.step_count, self.rank)

    @property
    def done(self) -> bool:
        return self.step_count >= self.controller.total_steps

    def schedule(self) -> schedules.Schedule:
        """The base schedule applied so far: what a single model would replay."""
        return self.controller.schedule()

    # -- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "step": self.step_count,
            "controller": self.controller.state_dict(),
            "lossSum": self._loss_sum,
            "lossCount": self._loss_count,
            "convergeSeconds": self.converge_seconds,
            "syncWaitSeconds": self.sync_wait_seconds,
            "evaluationSteps": self.evaluation_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"format: expected {STATE_FORMAT!r}, got {state.get('format')!r}")
        self.step_count = int(state["step"])
        self.controller.load_state_dict(state["controller"])
        self._loss_sum, self._loss_count = float(state["lossSum"]), int(state["lossCount"])
        self.converge_seconds = float(state["convergeSeconds"])
        self.sync_wait_seconds = float(state["syncWaitSeconds"])
        self.evaluation_steps = int(state.get("evaluationSteps", 0))
        self._apply_lr()

    # -- internals ----------------------------------------------------------------------------

    def _apply_lr(self) -> None:
        if self.done:
            return
        lr = self.lr
        for group, scale in zip(self.optimizer.param_groups, self.group_scales, strict=True):
            group["lr"] = lr * scale

    def _device(self) -> torch.device:
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                return torch.device(param.device)
        return torch.device("cpu")

    def _gather_losses(self) -> list[float]:
        mean = self._loss_sum / self._loss_count if self._loss_count else float("nan")
        return self._gather(mean)

    def _gather(self, value: float) -> list[float]:
        mine = torch.tensor([value], dtype=torch.float64, device=self._device())
        gathered = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine, group=self.group)
        return [float(t.item()) for t in gathered]

    def _gather_scores(self) -> list[float] | None:
        if self.scorer is None or not self.controller.moves_at(self.step_count):
            return None
        score, steps = self.scorer()
        self.evaluation_steps += steps
        return self._gather(score)

    def _shared_permutation(self) -> list[int] | None:
        """Rank 0 draws, everyone receives: ranks agree without sharing a global seed."""
        if not self.controller.moves_at(self.step_count):
            return None
        if self.rank == 0:
            order = torch.tensor(self.controller.next_permutation(), device=self._device())
        else:
            order = torch.zeros(self.world_size, dtype=torch.int64, device=self._device())
        dist.broadcast(order, src=self._global_rank_0(), group=self.group)
        return [int(i) for i in order.tolist()]

    def _global_rank_0(self) -> int:
        if self.group is None:
            return 0
        return int(dist.get_global_rank(self.group, 0))

    def _wait_for_device(self) -> None:
        # CUDA collectives return before they finish; the converge time must include them.
        device = self._device()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    @staticmethod
    def _topology(rank: int | None, world_size: int | None, group: Any) -> tuple[int, int]:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "HDETScheduler needs torch.distributed initialised (one process per replica); "
                "see schedsearch.trainers.strategies.hdet.worker for an env:// launcher"
            )
        actual = (dist.get_rank(group), dist.get_world_size(group))
        for name, given, real in (("rank", rank, actual[0]), ("world_size", world_size, actual[1])):
            if given is not None and given != real:
                raise ValueError(f"{name}: given {given} but torch.distributed says {real}")
        return actual

    @staticmethod
    def _check_scales(
        scales: Sequence[float] | None, optimizer: torch.optim.Optimizer
    ) -> list[float]:
        n = len(optimizer.param_groups)
        if scales is None:
            return [1.0] * n
        if len(scales) != n or any(not s > 0 for s in scales):
            raise ValueError(f"group_scales: need {n} positive values, got {list(scales)}")
        return [float(s) for s in scales]
