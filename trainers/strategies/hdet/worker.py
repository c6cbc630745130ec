"""One HDET replica process: ``python -m schedsearch.trainers.strategies.hdet.worker --job FILE``.

The process group comes from the environment (``init_method="env://"``: RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT, and LOCAL_RANK for the device), the variables a Kubernetes pod of an
indexed Job or a local launcher sets alike. Every replica builds the same model (same seed, then a
broadcast from rank 0), spreads it with the warm noisy init *before* training, and draws batches
from its own shard (seed offset by rank). Each step gradients are averaged across the replicas
(leaving out non-finite ones) and applied with the replica's own LR; ``HDETScheduler`` averages
the replicas every ``syncInterval`` steps and at the end, right after which rank 0 writes the
checkpoint (the replicas are identical then, so one file restores all) and evaluates.

Before a fresh start the replicas run the probes that choose the starting peak (``probe.py``),
each its share of the candidates, alone (no gradient averaging), from the shared initialisation.
With annealed evaluation on (``job.phases.anneal_steps``), each replica scores itself at the
syncs that move the base LR by a cooldown branch of its own (alone, then restored exactly), and
the auto-LR weighs those scores instead of the interval losses.

Rank 0 reports through a :class:`~schedsearch.trainers.strategies.base.Reporter`; run as a
script, it prints the reports as tagged JSON lines for the launcher to forward.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

import torch
import torch.distributed as dist

from schedsearch.trainers import evaluation, families, workloads
from schedsearch.trainers.strategies import base, peaks
from schedsearch.trainers.strategies.hdet import probe
from schedsearch.trainers.strategies.hdet import scheduler as hdet_scheduler
from schedsearch.trainers.strategies.hdet.controller import Converge, peak_step
from schedsearch.trainers.strategies.hdet.job import REPORT_TAG, ReplicaJob
from schedsearch.trainers.workloads import base as workload_base

# A replica that died leaves the others blocked in a collective; this bounds how long.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
CHECKPOINT_FORMAT = "schedsearch.io/hdet-checkpoint-v1"
# Each replica's data shard: its stream's seed is the run's seed plus rank times this.
SHARD_SEED_STRIDE = 7919


class TaggedLinesReporter:
    """Reports as JSON lines tagged with ``REPORT_TAG`` (for the local launcher to forward)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def _emit(self, record: dict[str, Any]) -> None:
        stream = self._stream or sys.stdout
        stream.write(REPORT_TAG + json.dumps(record, default=str) + "\n")
        stream.flush()

    def on_progress(
        self, member: int, step: int, loss: float, lr: float, val_loss: float | None = None
    ) -> None:
        self._emit(
            {
                "type": "progress",
                "member": member,
                "step": step,
                "loss": _num(loss),
                "lr": lr,
                "valLoss": None if val_loss is None else _num(val_loss),
            }
        )

    def on_event(self, kind: str, message: str, **data: Any) -> None:
        self._emit({"type": "event", "kind": kind, "message": message, "data": data})


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


# -- process group and device --------------------------------------------------------------------


def resolve_backend(requested: str) -> str:
    """``auto``: NCCL when CUDA is available, else gloo."""
    if requested == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if requested == "nccl" and not torch.cuda.is_available():
        raise ValueError("backend: nccl needs CUDA, which this process does not have; use gloo")
    return requested


def replica_device(backend: str) -> torch.device:
    """NCCL: the GPU of this process's local rank; gloo: the CPU."""
    if backend != "nccl":
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


def init_process_group(job: ReplicaJob) -> tuple[str, torch.device]:
    missing = [
        v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ
    ]
    if missing:
        raise RuntimeError(f"env:// needs {', '.join(missing)} in the environment")
    backend = resolve_backend(job.config.backend)
    dist.init_process_group(backend, init_method="env://", timeout=COLLECTIVE_TIMEOUT)
    return backend, replica_device(backend)


# -- the replica ---------------------------------------------------------------------------------


class Replica:
    """The state of one replica: model, optimizer, HDET scheduler and its data shard."""

    def __init__(self, job: ReplicaJob, device: torch.device) -> None:
        self.job, self.device = job, device
        self.rank = dist.get_rank()
        self.workload = workloads.get_workload(job.workload)
        self.model = self.workload.build_model(job.seed).to(device)
        base_schedule = families.build_schedule(job.base, job.total_steps) if job.base else None
        self.optimizer = self.workload.make_optimizer(self.model.parameters(), 0.0)
        # Every replica must all-reduce the same gradient buffers, even one that skips backward.
        for param in self.model.parameters():
            if param.requires_grad and param.grad is None:
                param.grad = torch.zeros_like(param)
        self.scheduler = hdet_scheduler.HDETScheduler(
            self.optimizer,
            job.config,
            total_steps=job.total_steps,
            base_schedule=base_schedule,
            lr_bounds=job.lr_bounds,
            model=self.model,
            seed=job.seed,
            phases=job.phases,
            scorer=self.annealed_score if _scores_annealed(job) else None,
        )
        self.batches = self.workload.train_batches(job.seed + SHARD_SEED_STRIDE * self.rank)
        self.val_loss = math.nan
        self.train_seconds = 0.0
        # Member-steps of the probes, all replicas together (counted once, on every rank).
        self.probe_steps = 0

    def local_step(self, lr: float) -> bool:
        """One step of this replica alone (no gradient averaging) at ``lr``; True if diverged."""
        return _local_step(self.workload, self.model, self.optimizer, self.batches, lr, self.device)

    def annealed_score(self) -> tuple[float, int]:
        """This replica's validation loss after a cooldown branch from its current LR to the
        floor, trained alone; the replica is restored exactly afterwards. Returns the loss
        (NaN if the branch diverged) and the steps the branch trained."""
        phases = self.job.phases
        assert phases is not None
        saved = (
            copy.deepcopy(self.model.state_dict()),
            copy.deepcopy(self.optimizer.state_dict()),
            copy.deepcopy(self.batches.state_dict()),
            torch.get_rng_state(),
        )
        lrs = [float(group["lr"]) for group in self.optimizer.param_groups]
        try:
            trained = evaluation.train_cooldown_branch(
                self.local_step,
                phases.anneal_steps,
                start=lrs[0],
                floor=phases.floor,
                shape=phases.anneal_shape,
            )
            loss = _evaluate(self.workload, self.model)
        finally:
            self.model.load_state_dict(saved[0])
            self.optimizer.load_state_dict(saved[1])
            self.batches.load_state_dict(saved[2])
            torch.set_rng_state(saved[3])
            for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
                group["lr"] = lr
        return loss, trained

    @torch.no_grad()
    def start_fresh(self) -> None:
        """Identical init on every replica, then each its own warm noisy spread."""
        for tensor in [*self.model.parameters(), *self.model.buffers()]:
            dist.broadcast(tensor.data, src=0)
        hdet_scheduler.spread_parameters(
            self.model, self.job.config.noise_scale, seed=self.job.seed, rank=self.rank
        )

    def train_step(self) -> tuple[float, float, Converge | None]:
        """One step; returns the loss, the LR it was trained with, and the sync's decision."""
        batch = next(self.batches)
        self.model.train()
        loss = self.workload.loss(self.model, workload_base.to_device(batch, self.device))
        self.optimizer.zero_grad(set_to_none=False)
        finite = bool(torch.isfinite(loss))
        if finite:
            loss.backward()
        # NaN guard: a diverged replica contributes no gradient; the next sync resets it.
        hdet_scheduler.average_gradients(self.model, include=finite)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.optimizer.step()
        return float(loss.detach()), lr, self.scheduler.step(loss.detach())

    def evaluate(self) -> float:
        self.val_loss = _evaluate(self.workload, self.model)
        return self.val_loss

    # -- the probes that choose the starting peak ------------------------------------------------

    def probe_plan(self) -> probe.ProbePlan | None:
        """The probes of a fresh start (None when the config asks for none)."""
        config, job = self.job.config, self.job
        if not config.probe.factors:
            return None
        controller = self.scheduler.controller
        steps = min(config.probe_steps(), job.total_steps)
        fraction = job.phases.anneal_fraction if job.phases is not None else 0.0
        return probe.plan(
            base_peak=controller.peak,
            factors=config.probe.factors,
            bounds=controller.lr_bounds,
            steps=steps,
            rise=peak_step(controller.base_schedule),
            branch_steps=round(fraction * steps),
            floor=job.phases.floor if job.phases is not None else 0.0,
            shape=job.phases.anneal_shape if job.phases is not None else "linear",
        )

    def run_probes(self, plan: probe.ProbePlan, reporter: base.Reporter) -> peaks.ProbeOutcome:
        """Train this replica's share of the probes, gather everyone's, and scale the base
        schedule to the chosen peak (the same choice on every rank)."""
        mine = [
            _probe(self.workload, self.job.seed, plan, plan.candidates[i], self.device)
            for i in plan.assigned(self.rank, dist.get_world_size())
        ]
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, mine)
        outcomes = sorted((o for share in gathered for o in share), key=lambda o: o.peak)
        chosen = peaks.choose(outcomes)
        self.probe_steps = sum(o.steps for o in outcomes)
        self.scheduler.set_peak(chosen.peak)
        reporter.on_event(
            "probe",
            f"starting peak {chosen.peak:.4g} from {len(outcomes)} annealed probes of "
            f"{plan.steps}+{plan.branch_steps} steps: "
            + ", ".join(f"{o.peak:.3g}: {o.loss:.4g}" for o in outcomes),
            peak=chosen.peak,
            probes=[o.to_dict() for o in outcomes],
            steps=self.probe_steps,
        )
        return chosen

    # -- checkpoints: written by rank 0 right after a sync, read by every rank --------------------

    def save(self) -> None:
        streams: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(streams, self.batches.state_dict())
        if self.rank != 0:
            return
        path = self.job.checkpoint_path
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "streams": streams,
            "valLoss": self.val_loss,
            "trainSeconds": self.train_seconds,
            "probeSteps": self.probe_steps,
        }
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous checkpoint

    def restore(self) -> bool:
        path = self.job.checkpoint_path
        if not path.exists():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not an HDET checkpoint (format {state.get('format')!r})")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.batches.load_state_dict(state["streams"][self.rank])
        self.val_loss = float(state["valLoss"])
        self.train_seconds = float(state["trainSeconds"])
        self.probe_steps = int(state.get("probeSteps", 0))
        return True


def _scores_annealed(job: ReplicaJob) -> bool:
    """Whether the replicas score themselves by annealed evaluation (else by interval loss)."""
    return job.config.score == "annealed" and job.phases is not None and job.phases.anneal_steps > 0


def _evaluate(workload: workload_base.Workload, model: torch.nn.Module) -> float:
    model.eval()
    with torch.no_grad():
        return float(workload.evaluate(model)["val_loss"])


def _local_step(
    workload: workload_base.Workload,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Any,
    lr: float,
    device: torch.device,
) -> bool:
    """One training step of ``model`` alone at ``lr``; True when its loss is not finite."""
    model.train()
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = workload.loss(model, workload_base.to_device(next(batches), device))
    if not torch.isfinite(loss):
        return True
    optimizer.zero_grad(set_to_none=False)
    loss.backward()
    optimizer.step()
    return False


def _probe(
    workload: workload_base.Workload,
    seed: int,
    plan: probe.ProbePlan,
    peak: float,
    device: torch.device,
) -> peaks.ProbeOutcome:
    """One probe from the run's initialisation, with the run's first batches (every candidate
    sees the same ones, so they differ by their LR alone)."""
    model = workload.build_model(seed).to(device)
    optimizer = workload.make_optimizer(model.parameters(), 0.0)
    batches = workload.train_batches(seed)
    trained, diverged = 0, False
    for step in range(plan.steps):
        trained += 1
        if _local_step(workload, model, optimizer, batches, plan.lr(peak, step), device):
            diverged = True
            break
    if not diverged:
        branch: list[bool] = []

        def branch_step(lr: float) -> bool:
            branch.append(_local_step(workload, model, optimizer, batches, lr, device))
            return branch[-1]

        trained += evaluation.train_cooldown_branch(
            branch_step, plan.branch_steps, start=peak, floor=plan.floor, shape=plan.shape
        )
        diverged = any(branch)
    loss = math.nan if diverged else _evaluate(workload, model)
    return peaks.ProbeOutcome(peak, loss if math.isfinite(loss) else math.nan, trained)


# -- the run -------------------------------------------------------------------------------------


def run_replica(job: ReplicaJob, reporter: base.Reporter) -> base.SearchResult | None:
    """Train this process's replica to the end; rank 0 returns (and writes) the result."""
    started = time.perf_counter()
    backend, device = init_process_group(job)
    try:
        replica = Replica(job, device)
        lead = replica.rank == 0
        resumed = replica.restore()
        if not resumed:
            plan = replica.probe_plan()
            if plan is not None:
                replica.run_probes(plan, reporter if lead else base.NullReporter())
            replica.start_fresh()
        if lead:
            reporter.on_event(
                "start",
                f"HDET: {job.config.replicas} replicas on {backend}/{device.type}, "
                + (f"resumed at step {replica.scheduler.step_count}" if resumed else "fresh start"),
                resumed=resumed,
                step=replica.scheduler.step_count,
            )
        _train(replica, reporter if lead else base.NullReporter())
        branches: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(branches, replica.scheduler.evaluation_steps)
        result = None
        if lead:
            result = _result(replica, time.perf_counter() - started, sum(branches))
            job.result_path.parent.mkdir(parents=True, exist_ok=True)
            job.result_path.write_text(json.dumps(result.to_dict(), indent=2))
            reporter.on_event(
                "finished", f"val_loss={replica.val_loss:.4f}", result=str(job.result_path)
            )
        # Every replica tears the process group down together: one that leaves while a peer is
        # still connected can abort inside gloo at exit ("terminate called without an active
        # exception", seen on a loaded machine).
        dist.barrier()
        return result
    finally:
        dist.destroy_process_group()


def _train(replica: Replica, reporter: base.Reporter) -> None:
    job, sched = replica.job, replica.scheduler
    while not sched.done:
        tick = time.perf_counter()
        loss, lr, decision = replica.train_step()
        replica.train_seconds += time.perf_counter() - tick
        step = sched.step_count
        if decision is not None and sched.averaged_replicas == 0:
            # Nothing finite to average: keep the last good checkpoint and stop.
            reporter.on_event("diverged", f"every replica diverged by step {step}; stopping")
            replica.val_loss = math.nan
            return
        val_loss = _after_sync(replica, decision, reporter) if decision is not None else None
        if step % job.progress_every == 0 or val_loss is not None:
            reporter.on_progress(replica.rank, step, loss, lr, val_loss)


def _after_sync(replica: Replica, decision: Converge, reporter: base.Reporter) -> float | None:
    """Report the sync, checkpoint the (now identical) replicas; rank 0 evaluates them."""
    if decision.nonfinite:
        reporter.on_event(
            "diverged",
            f"replicas {list(decision.nonfinite)} diverged; they receive the average",
            step=decision.step,
            replicas=list(decision.nonfinite),
        )
    reporter.on_event(
        "stage",
        f"sync at {decision.step}: base lr {decision.base_lr:.4g} ({decision.auto_lr})",
        decision=decision.to_dict(),
    )
    val_loss = replica.evaluate() if replica.rank == 0 else None
    replica.save()
    return val_loss


def _result(replica: Replica, wall_seconds: float, branch_steps: int) -> base.SearchResult:
    """Rank 0's result; ``branch_steps``: every replica's scoring branches together."""
    sched, job = replica.scheduler, replica.job
    evaluation_steps = replica.probe_steps + branch_steps
    history = [
        *sched.controller.history,
        {
            "kind": "Timing",
            "convergeSeconds": sched.converge_seconds,
            "syncWaitSeconds": sched.sync_wait_seconds,
            "trainSeconds": replica.train_seconds,
            "convergeFraction": sched.converge_seconds / max(replica.train_seconds, 1e-9),
        },
    ]
    return base.SearchResult(
        strategy="hdet",
        workload=job.workload,
        best_schedule=sched.schedule(),
        best_objective=replica.val_loss,
        best_member=0,
        member_steps=job.config.replicas * sched.step_count + evaluation_steps,
        history=history,
        wall_seconds=wall_seconds,
        evaluation_steps=evaluation_steps,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, required=True, help="the job file the runner wrote")
    args = parser.parse_args(argv)
    run_replica(ReplicaJob.read(args.job), TaggedLinesReporter())
    return 0


if __name__ == "__main__":
    sys.exit(main())
