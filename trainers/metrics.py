"""Per-member training metrics for Prometheus: a Reporter that exports what the runners report.

A trainer pod (or the local engine, when asked) feeds a :class:`PrometheusReporter` alongside its
other reporters; an HTTP server on a port given by ``--metrics-port`` or the
``SCHEDSEARCH_METRICS_PORT`` environment variable serves the values. Nothing is served unless a
port is given: the local engine runs many members in one process and must not open ports by
default.

Label cardinality stays bounded: the labels are the namespace, the search and the member index,
and member indices at or above ``max_members`` share one ``"overflow"`` label value. Steps are
values, never labels.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    start_http_server,
)

from schedsearch.trainers.strategies import base

PREFIX = "schedsearch_trainer_"
PORT_ENV = "SCHEDSEARCH_METRICS_PORT"
OVERFLOW = "overflow"
OTHER = "other"
DEFAULT_MAX_MEMBERS = 64
MEMBER_LABELS = ("namespace", "search", "member")
EVENT_KINDS = frozenset(get_args(base.EventKind))


class PrometheusReporter:
    """A :class:`~schedsearch.trainers.strategies.base.Reporter` that keeps Prometheus gauges.

    Exposed series (all labelled namespace, search, member; events by kind instead of member):
    ``schedsearch_trainer_step``, ``schedsearch_trainer_training_loss``,
    ``schedsearch_trainer_validation_loss``, ``schedsearch_trainer_learning_rate``,
    ``schedsearch_trainer_steps_per_second``, ``schedsearch_trainer_steps_total`` and
    ``schedsearch_trainer_events_total``.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        search: str = "",
        namespace: str = "",
        max_members: int = DEFAULT_MAX_MEMBERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_members < 1:
            raise ValueError(f"max_members must be >= 1, got {max_members}")
        # No ``_created`` series: one per counter child, of use to no dashboard (process-wide).
        disable_created_metrics()
        self.registry = registry
        self._fixed = {"namespace": namespace, "search": search}
        self._max_members = max_members
        self._clock = clock
        # member index -> (step, time) of its previous report, for steps per second.
        self._last: dict[int, tuple[int, float]] = {}
        self.step = _gauge(registry, "step", "Last optimiser step a member reported.")
        self.training_loss = _gauge(registry, "training_loss", "Last training loss of a member.")
        self.validation_loss = _gauge(
            registry, "validation_loss", "Last validation loss of a member."
        )
        self.learning_rate = _gauge(registry, "learning_rate", "Learning rate a member applies.")
        self.steps_per_second = _gauge(
            registry, "steps_per_second", "Training speed between a member's last two reports."
        )
        self.steps = Counter(
            PREFIX + "steps",
            "Optimiser steps reported, summed over members (rate() gives throughput).",
            MEMBER_LABELS,
            registry=registry,
        )
        self.events = Counter(
            PREFIX + "events",
            "Search events (stage, candidate, exploit, diverged, ...) by kind.",
            ("namespace", "search", "kind"),
            registry=registry,
        )

    def member_label(self, member: int) -> str:
        """The label value of a member index: the index, or ``overflow`` past the cap."""
        return str(member) if 0 <= member < self._max_members else OVERFLOW

    def on_progress(
        self, member: int, step: int, loss: float, lr: float, val_loss: float | None = None
    ) -> None:
        labels = {**self._fixed, "member": self.member_label(member)}
        now = self._clock()
        previous = self._last.get(member)
        if previous is not None and step > previous[0] and now > previous[1]:
            done = step - previous[0]
            self.steps_per_second.labels(**labels).set(done / (now - previous[1]))
            self.steps.labels(**labels).inc(done)
        self._last[member] = (step, now)
        self.step.labels(**labels).set(step)
        self.training_loss.labels(**labels).set(loss)
        self.learning_rate.labels(**labels).set(lr)
        if val_loss is not None:
            self.validation_loss.labels(**labels).set(val_loss)

    def on_event(self, kind: str, message: str, **data: Any) -> None:
        # Kinds outside the protocol's list are folded into one value to keep cardinality fixed.
        label = kind if kind in EVENT_KINDS else OTHER
        self.events.labels(**self._fixed, kind=label).inc()


def _gauge(registry: CollectorRegistry, name: str, doc: str) -> Gauge:
    return Gauge(PREFIX + name, doc, MEMBER_LABELS, registry=registry)


def port_from(flag: int | None, environ: Mapping[str, str] = os.environ) -> int | None:
    """The metrics port: the flag if given, else ``SCHEDSEARCH_METRICS_PORT``; None means off."""
    if flag is not None:
        return _valid_port(flag, "--metrics-port")
    raw = environ.get(PORT_ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{PORT_ENV} must be a port number in 1..65535, got {raw!r}") from None
    return _valid_port(value, PORT_ENV)


def _valid_port(port: int, name: str) -> int | None:
    if port == 0:
        return None  # 0 is the documented "off"
    if not 1 <= port <= 65535:
        raise ValueError(f"{name} must be 0 (off) or a port in 1..65535, got {port}")
    return port


def serve(registry: CollectorRegistry, port: int, *, addr: str = "0.0.0.0") -> None:
    """Serve ``registry`` at http://addr:port/metrics from a daemon thread."""
    start_http_server(port, addr=addr, registry=registry)


def reporter_from_env(
    *,
    search: str,
    namespace: str,
    flag: int | None = None,
    environ: Mapping[str, str] = os.environ,
) -> PrometheusReporter | None:
    """The pod entrypoint's one call: a serving reporter if a port is configured, else None."""
    port = port_from(flag, environ)
    if port is None:
        return None
    reporter = PrometheusReporter(CollectorRegistry(), search=search, namespace=namespace)
    serve(reporter.registry, port)
    return reporter
