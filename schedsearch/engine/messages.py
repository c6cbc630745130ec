"""The messages a trial sends the driver through Tune, and the Reporters at both ends.

Inside a trial the runner trains in a thread of its own and reports to a :class:`TrialReporter`,
which only buffers; the trial's Tune thread sends the buffer as one result every ``interval``
seconds (:func:`pump`). ``tune.report`` waits until the driver has taken the previous result, so
training never waits on the driver. On the driver, :func:`replay` feeds a result back into any
Reporter (the progress board, the store).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from schedsearch.trainers.strategies.base import Reporter

PROGRESS_KEY = "progress"
EVENTS_KEY = "events"
# Seconds between two results of one trial.
DEFAULT_INTERVAL = 1.0

Send = Callable[[dict[str, Any]], None]
T = TypeVar("T")


def _tune_report(result: dict[str, Any]) -> None:
    from ray import tune

    tune.report(result)


class TrialReporter:
    """Buffers a runner's reports inside a trial; :meth:`flush` sends them as one Tune result."""

    def __init__(self, send: Send = _tune_report) -> None:
        self._send = send
        self._progress: list[list[Any]] = []
        self._events: list[dict[str, Any]] = []
        self._extra: dict[str, Any] = {}
        # Runners report from their own threads (HDET's output forwarder, the training thread).
        self._lock = threading.Lock()

    def on_progress(
        self, member: int, step: int, loss: float, lr: float, val_loss: float | None = None
    ) -> None:
        with self._lock:
            self._progress.append([member, step, _number(loss), _number(lr), _number(val_loss)])

    def on_event(self, kind: str, message: str, **data: Any) -> None:
        with self._lock:
            self._events.append({"kind": kind, "message": message, "data": _plain(data)})

    def attach(self, key: str, value: Any) -> None:
        """Send ``value`` under ``key`` with the next result (e.g. the trial's final result)."""
        with self._lock:
            self._extra[key] = value

    def flush(self) -> None:
        """Send what is buffered as one result (nothing if the buffer is empty)."""
        with self._lock:
            progress, events, extra = self._progress, self._events, self._extra
            self._progress, self._events, self._extra = [], [], {}
        if progress or events or extra:
            self._send({PROGRESS_KEY: progress, EVENTS_KEY: events, **extra})


def pump(
    work: Callable[[], T],
    reporter: TrialReporter,
    *,
    interval: float = DEFAULT_INTERVAL,
    tick: Callable[[], None] = lambda: None,
) -> T:
    """Run ``work`` in a thread and flush ``reporter`` every ``interval`` seconds until it ends;
    its exception, if any, is raised here. ``tick`` runs before each flush (and once at the
    start), on this thread."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = work()
        except BaseException as err:  # handed to the calling thread below
            box["error"] = err

    thread = threading.Thread(target=target, name="schedsearch-runner", daemon=True)
    tick()
    thread.start()
    while thread.is_alive():
        thread.join(timeout=interval)
        tick()
        reporter.flush()
    reporter.flush()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def replay(result: Mapping[str, Any], *reporters: Reporter) -> None:
    """Hand one trial result's progress and events to ``reporters`` in the order they happened
    within each kind (progress first: an event usually closes the steps before it)."""
    for member, step, loss, lr, val_loss in result.get(PROGRESS_KEY, ()):
        for reporter in reporters:
            reporter.on_progress(
                int(member), int(step), _float(loss), _float(lr), _opt_float(val_loss)
            )
    for event in result.get(EVENTS_KEY, ()):
        for reporter in reporters:
            reporter.on_event(str(event["kind"]), str(event["message"]), **event.get("data", {}))


class Tee:
    """One Reporter that forwards to several."""

    def __init__(self, reporters: Iterable[Reporter]) -> None:
        self.reporters = list(reporters)

    def on_progress(
        self, member: int, step: int, loss: float, lr: float, val_loss: float | None = None
    ) -> None:
        for reporter in self.reporters:
            reporter.on_progress(member, step, loss, lr, val_loss)

    def on_event(self, kind: str, message: str, **data: Any) -> None:
        for reporter in self.reporters:
            reporter.on_event(kind, message, **data)


def _number(value: float | None) -> float | str | None:
    """Tune results pass through JSON in places; a non-finite float travels as its repr."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else repr(value)


def _float(value: Any) -> float:
    return float(value) if value is not None else math.nan


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    """Event data as plain values (numbers, strings, lists, dicts) that pickle anywhere."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, float):
            out[key] = _number(value)
        elif isinstance(value, (int, str, bool, type(None))):
            out[key] = value
        elif isinstance(value, (list, tuple)):
            out[key] = [v if isinstance(v, (int, float, str, bool)) else str(v) for v in value]
        elif isinstance(value, dict):
            out[key] = _plain(value)
        else:
            out[key] = str(value)
    return out
