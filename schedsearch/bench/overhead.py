"""Trainer-side overhead: our Trainer against a plain PyTorch loop, the time AutoLRS spends
outside training (forecast fits and Bayesian optimisation), and HDET's converge cost.

Timings are taken in wall-clock and process CPU time: on a machine shared with other jobs the
wall-clock rate swings with the load, while CPU time per step stays close to what an idle
machine would show. Loops are measured in alternating rounds and summarised by the median.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from schedsearch.bench import profiles
from schedsearch.trainers import harness
from schedsearch.trainers.strategies.autolrs import runner as autolrs_runner
from schedsearch.trainers.strategies.autolrs.search import AutoLRSSearch
from schedsearch.trainers.strategies.hdet.config import HDETConfig
from schedsearch.trainers.strategies.hdet.runner import run_hdet
from schedsearch.trainers.workloads import Workload, get_workload

WARMUP_STEPS = 10


class Stopwatch:
    """Wall-clock and process CPU seconds of a block."""

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


# --- our Trainer against the loop a user would write ------------------------------------------


def plain_loop(
    work: Workload, *, seed: int, steps: int, lr: float, every: int, ckpt: Path
) -> Stopwatch:
    """The loop a PyTorch user writes: same model, optimizer and batches as the Trainer, LR set
    on the param groups each step, evaluation and a checkpoint every ``every`` steps."""
    model = work.build_model(seed)
    optimizer = work.make_optimizer(model.parameters(), lr)
    batches = work.train_batches(seed)
    for _ in range(WARMUP_STEPS):
        _plain_step(work, model, optimizer, next(batches), lr)
    with Stopwatch() as watch:
        for step in range(1, steps + 1):
            _plain_step(work, model, optimizer, next(batches), lr)
            if step % every == 0:
                model.eval()
                with torch.no_grad():
                    work.evaluate(model)
                model.train()
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, ckpt)
    return watch


def _plain_step(
    work: Workload, model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Any, lr: float
) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss = work.loss(model, batch)
    loss.backward()
    optimizer.step()


def trainer_loop(
    work: Workload, *, seed: int, steps: int, lr: float, every: int, ckpt: Path
) -> Stopwatch:
    """The same work through ``Trainer``: its evaluation and its exact, atomic checkpoints."""
    # The thread count the plain loop runs with (the Trainer would otherwise pick its own).
    threads = torch.get_num_threads()
    trainer = harness.Trainer(work, seed=seed, device="cpu", eval_every=every, num_threads=threads)
    trainer.train(WARMUP_STEPS, lambda _: lr)
    with Stopwatch() as watch:
        for step in range(1, steps + 1):
            trainer.step(lr)
            if step % every == 0:
                trainer.save(ckpt)
    return watch


def compare_loops(
    workload: str, *, steps: int, rounds: int, every: int, seed: int = 0
) -> dict[str, Any]:
    """Alternating rounds of the plain loop and the Trainer; medians of steps/s and the
    Trainer's overhead in percent (positive: the Trainer is slower)."""
    work = get_workload(workload)
    samples: dict[str, list[Stopwatch]] = {"plain": [], "trainer": []}
    loops: dict[str, Callable[..., Stopwatch]] = {"plain": plain_loop, "trainer": trainer_loop}
    with tempfile.TemporaryDirectory(prefix="schedsearch-bench-") as scratch:
        for _ in range(rounds):
            for name, loop in loops.items():
                ckpt = Path(scratch) / f"{name}.pt"
                samples[name].append(
                    loop(work, seed=seed, steps=steps, lr=work.default_lr, every=every, ckpt=ckpt)
                )
    rates = {
        name: {
            "wallStepsPerSecond": statistics.median(steps / w.wall for w in watches),
            "cpuStepsPerSecond": statistics.median(steps / max(w.cpu, 1e-9) for w in watches),
        }
        for name, watches in samples.items()
    }
    return {
        "workload": workload,
        "steps": steps,
        "rounds": rounds,
        "evalAndCheckpointEvery": every,
        "threads": torch.get_num_threads(),
        "plain": rates["plain"],
        "trainer": rates["trainer"],
        "wallOverheadPercent": _overhead(rates, "wallStepsPerSecond"),
        "cpuOverheadPercent": _overhead(rates, "cpuStepsPerSecond"),
    }


def _overhead(rates: dict[str, dict[str, float]], key: str) -> float:
    return 100.0 * (rates["plain"][key] / rates["trainer"][key] - 1.0)


# --- AutoLRS: time outside training, per stage ---------------------------------------------------


class TimedAutoLRSSearch(AutoLRSSearch):
    """AutoLRS that also counts, per stage, the seconds spent in its own decisions and the
    stage's wall-clock time. ``ask``: choosing the next LR (the Bayesian optimiser fits its GP and
    maximises the acquisition); ``tell``: a probe's report (the loss-forecast fit, then the
    optimiser records it); ``commit``: closing the stage."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stage_timings: list[dict[str, float]] = []
        self._spent = dict.fromkeys(("ask", "tell", "commit"), 0.0)
        self._stage_started = time.perf_counter()

    @contextlib.contextmanager
    def _timed(self, part: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._spent[part] += time.perf_counter() - started

    def next_decision(self) -> Any:
        with self._timed("ask"):
            return super().next_decision()

    def report_candidate(self, *args: Any, **kwargs: Any) -> float:
        with self._timed("tell"):
            return super().report_candidate(*args, **kwargs)

    def report_commit(self, *args: Any, **kwargs: Any) -> None:
        stage = self.stage
        with self._timed("commit"):
            super().report_commit(*args, **kwargs)
        if self.stage != stage:  # the stage closed (a diverged commit retries it instead)
            now = time.perf_counter()
            self.stage_timings.append(
                {
                    "stage": stage,
                    "askSeconds": self._spent["ask"],
                    "tellSeconds": self._spent["tell"],
                    "searchSeconds": sum(self._spent.values()),
                    "stageSeconds": now - self._stage_started,
                }
            )
            self._spent = dict.fromkeys(self._spent, 0.0)
            self._stage_started = now


@contextlib.contextmanager
def timed_autolrs() -> Iterator[list[TimedAutoLRSSearch]]:
    """While active, ``run_autolrs`` builds a ``TimedAutoLRSSearch``; the yielded list receives
    it. The runner exposes no timings of its own, hence the substitution of its search class."""
    built: list[TimedAutoLRSSearch] = []

    def factory(*args: Any, **kwargs: Any) -> TimedAutoLRSSearch:
        built.append(TimedAutoLRSSearch(*args, **kwargs))
        return built[-1]

    original = autolrs_runner.AutoLRSSearch
    autolrs_runner.AutoLRSSearch = factory  # type: ignore[assignment,misc]
    try:
        yield built
    finally:
        autolrs_runner.AutoLRSSearch = original  # type: ignore[misc]


def summarize_autolrs_timings(stages: list[dict[str, float]]) -> dict[str, Any] | None:
    """Mean seconds per stage outside training and their share of the stages' wall-clock."""
    if not stages:
        return None
    search = [s["searchSeconds"] for s in stages]
    total = sum(s["stageSeconds"] for s in stages)
    return {
        "stages": len(stages),
        "meanSearchSecondsPerStage": statistics.fmean(search),
        "meanAskSecondsPerStage": statistics.fmean(s.get("askSeconds", 0.0) for s in stages),
        "meanTellSecondsPerStage": statistics.fmean(s.get("tellSeconds", 0.0) for s in stages),
        "maxSearchSecondsPerStage": max(search),
        "searchFractionOfWall": sum(search) / total if total > 0 else None,
        "perStage": stages,
    }


# --- HDET: converge cost at T = 1000 -------------------------------------------------------------


def hdet_converge_cost(
    workload: str, *, steps: int, interval: int, replicas: int, out_dir: Path, seed: int = 0
) -> dict[str, Any]:
    """Run HDET locally and read the worker's own timing of the converge all-reduce."""
    # No probes: this run measures the converge all-reduce.
    config = HDETConfig.model_validate(
        {"replicas": replicas, "syncInterval": interval, "probe": {"factors": []}}
    )
    with Stopwatch() as watch:
        result = run_hdet(
            config,
            workload,
            total_steps=steps,
            base=profiles.hdet_base(workload),
            lr_bounds=profiles.lr_bounds(workload),
            seed=seed,
            out_dir=out_dir,
        )
    timing = next((h for h in reversed(result.history) if h.get("kind") == "Timing"), None)
    return {
        "workload": workload,
        "steps": steps,
        "syncInterval": interval,
        "replicas": replicas,
        "wallSeconds": watch.wall,
        "timing": timing,
        "convergeFractionOfWall": (
            None if timing is None else timing["convergeSeconds"] / max(watch.wall, 1e-9)
        ),
    }
