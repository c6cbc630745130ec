"""The driver's side of Ray Tune: run a set of trials, watch their results, stop on request.

One Tune experiment per ``schedsearch run``: a grid over the trials' configs (one per PBT member,
or a single AutoLRS/HDET trial), all running at once, each retried from its checkpoint up to the
spec's ``failurePolicy.maxMemberRestarts``. Tune's per-trial files, progress printing and SIGINT
handler are off: the store, the progress board and :mod:`interrupt` do those jobs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from schedsearch.engine import messages
from schedsearch.engine.interrupt import Interrupt
from schedsearch.engine.session import TrialResources
from schedsearch.trainers.strategies.base import Reporter

TRIAL_KEY = "trial"
JOB_KEY = "job"


@dataclass
class TrialOutcome:
    """How each trial ended, as the driver saw it."""

    completed: set[int] = field(default_factory=set)
    errors: dict[int, str] = field(default_factory=dict)


class _DriverOnly:
    """Tune pickles its run config (for its own restore, which the engine does not use); these
    objects hold the live driver (locks, the terminal) and are pickled as empty shells."""

    def __getstate__(self) -> dict[str, Any]:
        return {}


class _InterruptStopper(_DriverOnly, tune.Stopper):
    """Stops the whole experiment once Ctrl-C was pressed: at once, or after the grace the
    ``before_stop`` hook asks for, in which the trials are expected to end on their own."""

    def __init__(
        self,
        interrupt: Interrupt,
        before_stop: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interrupt = interrupt
        self._before_stop = before_stop
        self._clock = clock
        self._deadline: float | None = None

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        if self._interrupt.requested and self._deadline is None:
            # On Tune's loop, not in the signal handler: the hook may talk to Ray.
            grace = max(0.0, float(self._before_stop() or 0.0))
            self._deadline = self._clock() + grace
        return self._deadline is not None and self._clock() >= self._deadline


class _ResultsCallback(_DriverOnly, tune.Callback):
    """Feeds every trial result to the Reporter and records how trials end."""

    def __init__(
        self,
        reporter: Reporter,
        outcome: TrialOutcome,
        after_result: Callable[[dict[str, Any]], None],
        after_error: Callable[[int, str], None],
        after_start: Callable[[int], None] = lambda index: None,
    ) -> None:
        self._reporter = reporter
        self._outcome = outcome
        self._after_result = after_result
        self._after_error = after_error
        self._after_start = after_start

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._after_start(trial_index(trial.config))

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        messages.replay(result, self._reporter)
        self._after_result(result)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._outcome.completed.add(trial_index(trial.config))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        index, text = trial_index(trial.config), _error_text(trial)
        self._outcome.errors[index] = text
        self._after_error(index, text)


def run_trials(
    trainable: Callable[[dict[str, Any]], None],
    configs: Sequence[Mapping[str, Any]],
    *,
    name: str,
    storage: Path,
    resources: TrialResources,
    reporter: Reporter,
    interrupt: Interrupt,
    max_failures: int,
    after_result: Callable[[dict[str, Any]], None] = lambda result: None,
    after_error: Callable[[int, str], None] = lambda index, text: None,
    after_start: Callable[[int], None] = lambda index: None,
    before_stop: Callable[[], float] = lambda: 0.0,
) -> TrialOutcome:
    """Run one trial per config (each gets ``trial`` = its index) until all end or Ctrl-C.

    ``after_result`` sees every raw result once the reporter has, on the driver's thread;
    ``after_error`` hears of each trial that failed for good (its retries spent);
    ``after_start`` of each trial Ray has given its resources to (its process is starting);
    ``before_stop`` runs once on Ctrl-C and returns how many seconds the trials get to end on
    their own before Tune stops them.
    """
    # Tune warns that it found no per-trial result files: the engine turned them off on purpose.
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    outcome = TrialOutcome()
    trials = [{**config, TRIAL_KEY: index} for index, config in enumerate(configs)]
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources.as_tune()),
        param_space={JOB_KEY: tune.grid_search(trials)},
        tune_config=tune.TuneConfig(
            num_samples=1,
            max_concurrent_trials=len(trials),
            reuse_actors=False,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage),
            stop=_InterruptStopper(interrupt, before_stop),
            callbacks=[_ResultsCallback(reporter, outcome, after_result, after_error, after_start)],
            failure_config=tune.FailureConfig(max_failures=max_failures),
            verbose=0,
            log_to_file=False,
        ),
    )
    tuner.fit()
    return outcome


def _trial_name(trial: Any) -> str:
    # Tune's default name spells out the whole config, the spec included.
    return f"trial-{trial_index(trial.config)}"


def trial_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Inside a trainable: the config :func:`run_trials` was given for this trial."""
    return dict(config[JOB_KEY])


def trial_index(config: Mapping[str, Any]) -> int:
    return int(config[JOB_KEY][TRIAL_KEY])


def _error_text(trial: Any) -> str:
    """The last line of a failed trial's error: the exception, without Ray's wrapping."""
    try:
        error = trial.get_error()
    except Exception:  # the error file may be gone; the trial still failed
        error = None
    text = str(error) if error is not None else "trial failed"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "trial failed"
