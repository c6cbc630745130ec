"""Prometheus metrics of the controller and the trainers: naming conventions and moving values."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from schedsearch.controller.metrics import ControllerMetrics
from schedsearch.trainers import metrics as trainer_metrics
from schedsearch.trainers.metrics import PrometheusReporter
from schedsearch.trainers.strategies.base import Reporter

ALLOWED_LABELS = {"namespace", "search", "member", "phase", "state", "kind", "metric", "mode"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def families(registry: CollectorRegistry) -> list[Metric]:
    return list(registry.collect())


def populated_registries() -> list[CollectorRegistry]:
    controller = ControllerMetrics()
    controller.observe_search(
        "ml", "a", phase="Running", members={"Running": 3}, best_objective=1.0
    )
    controller.count_exploit("ml", "a")
    controller.count_member_restart("ml", "a")
    with controller.time_reconcile("ml"):
        pass
    with controller.time_report("progress"):
        pass
    trainer = PrometheusReporter(CollectorRegistry(), search="a", namespace="ml")
    trainer.on_progress(0, 10, 1.0, 0.1, val_loss=1.2)
    trainer.on_progress(0, 20, 0.9, 0.1)
    trainer.on_event("exploit", "copied 1 into 0")
    return [controller.registry, trainer.registry]


def test_every_series_follows_the_naming_conventions() -> None:
    seen = set()
    for registry in populated_registries():
        for family in families(registry):
            seen.add(family.name)
            assert family.name.startswith("schedsearch_"), family.name
            assert family.documentation, f"{family.name} has no help text"
            if family.type == "counter":
                assert all(s.name.endswith("_total") for s in family.samples)
            else:
                assert not family.name.endswith("_total"), family.name
            if family.type == "histogram":
                assert family.name.endswith("_seconds"), family.name
            for sample in family.samples:
                labels = set(sample.labels) - {"le"}
                assert labels <= ALLOWED_LABELS, (family.name, labels)
                assert "step" not in sample.labels
    assert len(seen) >= 12  # every series asked for is present once populated


def test_trainer_values_move_when_the_reporter_is_fed() -> None:
    clock = FakeClock()
    reporter = PrometheusReporter(CollectorRegistry(), search="s", namespace="ns", clock=clock)
    as_protocol: Reporter = reporter  # the runners' Reporter protocol, checked by type checkers
    assert callable(as_protocol.on_progress) and callable(as_protocol.on_event)

    def value(name: str, member: str = "2") -> float | None:
        return reporter.registry.get_sample_value(
            f"schedsearch_trainer_{name}", {"namespace": "ns", "search": "s", "member": member}
        )

    reporter.on_progress(2, 100, loss=2.5, lr=0.1)
    assert value("step") == 100
    assert value("training_loss") == 2.5
    assert value("learning_rate") == 0.1
    assert value("validation_loss") is None
    assert value("steps_per_second") is None  # one report cannot give a speed

    clock.now += 4.0
    reporter.on_progress(2, 300, loss=1.5, lr=0.05, val_loss=1.75)
    assert value("step") == 300
    assert value("training_loss") == 1.5
    assert value("validation_loss") == 1.75
    assert value("learning_rate") == 0.05
    assert value("steps_per_second") == pytest.approx(50.0)
    assert value("steps_total") == 200


def test_a_restore_to_an_earlier_step_does_not_count_negative_steps() -> None:
    clock = FakeClock()
    reporter = PrometheusReporter(CollectorRegistry(), search="s", clock=clock)
    reporter.on_progress(0, 500, 1.0, 0.1)
    clock.now += 1.0
    reporter.on_progress(0, 400, 1.0, 0.1)  # AutoLRS restores the stage checkpoint
    labels = {"namespace": "", "search": "s", "member": "0"}
    assert reporter.registry.get_sample_value("schedsearch_trainer_step", labels) == 400
    assert reporter.registry.get_sample_value("schedsearch_trainer_steps_total", labels) in (
        None,
        0,
    )


def test_member_labels_are_capped() -> None:
    reporter = PrometheusReporter(CollectorRegistry(), search="s", max_members=4)
    for member in range(50):
        reporter.on_progress(member, 1, 1.0, 0.1)
    members = {
        s.labels["member"]
        for f in families(reporter.registry)
        if f.name == "schedsearch_trainer_step"
        for s in f.samples
    }
    assert members == {"0", "1", "2", "3", "overflow"}


def test_unknown_event_kinds_share_one_label() -> None:
    reporter = PrometheusReporter(CollectorRegistry(), search="s")
    reporter.on_event("exploit", "x")
    reporter.on_event("made-up-1", "x")
    reporter.on_event("made-up-2", "x")

    def count(kind: str) -> float | None:
        return reporter.registry.get_sample_value(
            "schedsearch_trainer_events_total", {"namespace": "", "search": "s", "kind": kind}
        )

    assert count("exploit") == 1
    assert count("other") == 2


def test_registries_are_independent() -> None:
    a = PrometheusReporter(CollectorRegistry(), search="s")
    b = PrometheusReporter(CollectorRegistry(), search="s")
    a.on_progress(0, 7, 1.0, 0.1)
    labels = {"namespace": "", "search": "s", "member": "0"}
    assert a.registry.get_sample_value("schedsearch_trainer_step", labels) == 7
    assert b.registry.get_sample_value("schedsearch_trainer_step", labels) is None
    ControllerMetrics()
    ControllerMetrics()  # a second one must not clash with the first


def test_metrics_port_is_off_unless_given() -> None:
    assert trainer_metrics.port_from(None, {}) is None
    assert trainer_metrics.port_from(0, {"SCHEDSEARCH_METRICS_PORT": "9400"}) is None
    assert trainer_metrics.port_from(None, {"SCHEDSEARCH_METRICS_PORT": "9400"}) == 9400
    assert trainer_metrics.port_from(9500, {"SCHEDSEARCH_METRICS_PORT": "9400"}) == 9500
    assert trainer_metrics.reporter_from_env(search="s", namespace="n", environ={}) is None
    with pytest.raises(ValueError, match="SCHEDSEARCH_METRICS_PORT"):
        trainer_metrics.port_from(None, {"SCHEDSEARCH_METRICS_PORT": "http"})
    with pytest.raises(ValueError, match="--metrics-port"):
        trainer_metrics.port_from(70000, {})


def test_trainer_metrics_are_served_over_http() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"SCHEDSEARCH_METRICS_PORT": str(port)}
    reporter = trainer_metrics.reporter_from_env(search="web", namespace="ml", environ=env)
    assert reporter is not None
    reporter.on_progress(1, 42, 0.5, 0.01)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'schedsearch_trainer_step{member="1",namespace="ml",search="web"} 42.0' in body


def test_controller_search_series_follow_snapshots() -> None:
    m = ControllerMetrics()

    def get(name: str, **labels: str) -> float | None:
        return m.registry.get_sample_value(name, labels)

    assert get("schedsearch_searches", namespace="ml", phase="Running") is None
    m.observe_search("ml", "a", phase="Running", members={"Running": 4, "Pending": 2})
    m.observe_search("ml", "b", phase="Running", best_objective=0.3)
    m.observe_search(
        "ml", "c", phase="Succeeded", best_objective=0.1, metric="val_loss", mode="min"
    )
    assert get("schedsearch_searches", namespace="ml", phase="Running") == 2
    assert get("schedsearch_searches", namespace="ml", phase="Succeeded") == 1
    assert get("schedsearch_searches", namespace="ml", phase="Failed") == 0  # zero-filled
    assert get("schedsearch_search_members", namespace="ml", search="a", state="Pending") == 2
    objective = {"metric": "val_loss", "mode": "min"}
    assert get("schedsearch_search_best_objective", namespace="ml", search="c", **objective) == 0.1
    assert get("schedsearch_search_best_objective", namespace="ml", search="a") is None

    m.observe_search("ml", "a", phase="Succeeded", best_objective=0.05)
    m.forget_search("ml", "b")
    assert get("schedsearch_searches", namespace="ml", phase="Running") == 0
    assert get("schedsearch_searches", namespace="ml", phase="Succeeded") == 2
    assert get("schedsearch_search_best_objective", namespace="ml", search="b") is None


def test_a_deleted_search_leaves_no_series_behind() -> None:
    m = ControllerMetrics()
    m.observe_search("ml", "a", phase="Running", members={"Running": 2}, best_objective=0.5)
    m.count_exploit("ml", "a")
    m.count_member_restart("ml", "a")
    m.count_exploit("ml", "b")
    m.forget_search("ml", "a")
    labels_left = [
        sample.labels
        for family in m.registry.collect()
        for sample in family.samples
        if sample.labels.get("search") == "a"
    ]
    assert labels_left == []
    assert (
        m.registry.get_sample_value(
            "schedsearch_exploits_total", {"namespace": "ml", "search": "b"}
        )
        == 1
    )
    m.forget_search("ml", "never-seen")  # nothing to drop is fine


def test_counters_expose_no_created_series() -> None:
    for registry in populated_registries():
        names = [s.name for family in registry.collect() for s in family.samples]
        assert names and not [n for n in names if n.endswith("_created")], names


def test_reconcile_errors_are_zero_before_the_first_error() -> None:
    m = ControllerMetrics(namespaces=["ml"])
    get = m.registry.get_sample_value
    assert get("schedsearch_reconcile_errors_total", {"namespace": "ml"}) == 0
    assert get("schedsearch_reconcile_errors_total", {"namespace": "other"}) is None
    with m.time_reconcile("other"):
        pass
    assert get("schedsearch_reconcile_errors_total", {"namespace": "other"}) == 0


def test_best_objective_says_which_metric_and_mode() -> None:
    m = ControllerMetrics()
    m.observe_search("ml", "a", phase="Running", best_objective=0.9, metric="val_loss", mode="max")
    (sample,) = [
        s
        for family in m.registry.collect()
        if family.name == "schedsearch_search_best_objective"
        for s in family.samples
    ]
    assert sample.labels == {"namespace": "ml", "search": "a", "metric": "val_loss", "mode": "max"}


def test_controller_counters_and_histograms_move() -> None:
    m = ControllerMetrics()
    m.count_exploit("ml", "a")
    m.count_exploit("ml", "a", 2)
    m.count_member_restart("ml", "a")
    with m.time_reconcile("ml"):
        pass
    with pytest.raises(RuntimeError), m.time_reconcile("ml"):
        raise RuntimeError("API down")
    with m.time_report("event"):
        pass
    get = m.registry.get_sample_value
    assert get("schedsearch_exploits_total", {"namespace": "ml", "search": "a"}) == 3
    assert get("schedsearch_member_restarts_total", {"namespace": "ml", "search": "a"}) == 1
    assert get("schedsearch_reconcile_duration_seconds_count", {}) == 2
    assert get("schedsearch_reconcile_errors_total", {"namespace": "ml"}) == 1
    assert get("schedsearch_report_duration_seconds_count", {"kind": "event"}) == 1
    with pytest.raises(ValueError, match="progress"), m.time_report("upload"):
        pass


def test_the_reconciler_labels_the_best_objective_with_the_specs_objective() -> None:
    from schedsearch.controller import app, plan

    from .controller_fixtures import CONFIG, view

    metrics = ControllerMetrics()
    reconciler = app.Reconciler(None, CONFIG, metrics)  # type: ignore[arg-type]
    best = {"objective": 0.2, "member": 1, "step": 40, "schedule": "s1-best"}
    search = view("pbt", status={"phase": "Running", "best": best})
    reconciler._observe_metrics(search, plan.Plan())
    labels = {"namespace": "ml", "search": "s1", "metric": "val_loss", "mode": "min"}
    assert metrics.registry.get_sample_value("schedsearch_search_best_objective", labels) == 0.2


def test_a_search_gone_from_the_cache_drops_its_series() -> None:
    from schedsearch.controller import app, cache, kube

    from .controller_fixtures import CONFIG

    metrics = ControllerMetrics()
    store = cache.Store()
    reconciler = app.Reconciler(kube.Kube(None, store=store), CONFIG, metrics)  # type: ignore[arg-type]
    metrics.observe_search("ml", "s1", phase="Running", best_objective=0.5)
    metrics.count_exploit("ml", "s1")
    # The search's DELETED event queued it; the pass finds it gone from the cache.
    assert reconciler.handle(("ml", "s1")) is None
    left = [s.name for f in metrics.registry.collect() for s in f.samples if s.labels.get("search")]
    assert left == []
