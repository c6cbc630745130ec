"""Events posted off the reconcile path: not while the controller writes, not later than their
longest delay, the same event queued twice posted once with its count, a bounded queue, and
everything queued posted when the recorder stops."""

from __future__ import annotations

import threading
from typing import Any

from schedsearch.controller import events, kube, plan, pods
from schedsearch.controller.observe import SearchView

from .controller_fixtures import search_object


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def event(reason: str = "MembersStarted", message: str = "pods a, b") -> events.Event:
    return events.Event("ml", "s1", "uid-1", "Normal", reason, message)


def recorder(clock: Clock, posted: list[tuple[events.Event, int]], **kw: Any) -> events.Recorder:
    return events.Recorder(lambda e, n: posted.append((e, n)), clock=clock, **kw)


def test_events_wait_while_the_controller_writes_and_go_once_it_is_quiet() -> None:
    clock, posted = Clock(), []  # type: ignore[var-annotated]
    rec = recorder(clock, posted, quiet=1.0, max_delay=15.0)
    rec.wrote()
    rec.record(event())
    assert rec.post_due() == 0 and rec.due_in() == 1.0
    clock.now += 0.5
    rec.wrote()  # still writing: the quiet starts again
    clock.now += 0.9
    assert rec.post_due() == 0
    clock.now += 0.1
    assert rec.post_due() == 1
    assert posted == [(event(), 1)] and len(rec) == 0 and rec.due_in() is None


def test_a_long_burst_delays_events_no_longer_than_max_delay() -> None:
    clock, posted = Clock(), []  # type: ignore[var-annotated]
    rec = recorder(clock, posted, quiet=1.0, max_delay=15.0)
    rec.record(event("First"))
    for _ in range(14):
        clock.now += 1.0
        rec.wrote()
        rec.post_due()
    rec.record(event("Second"))
    assert posted == []
    clock.now += 1.0
    rec.wrote()
    rec.post_due()
    # The oldest has waited its longest; the newer one waits for quiet (or its own delay).
    assert posted == [(event("First"), 1)]


def test_the_same_event_queued_again_is_posted_once_with_its_count() -> None:
    clock, posted = Clock(), []  # type: ignore[var-annotated]
    rec = recorder(clock, posted)
    for _ in range(3):
        rec.record(event("MemberRestarted", "member 2"))
    rec.record(event("MemberRestarted", "member 3"))
    clock.now += 60
    rec.post_due()
    assert posted == [
        (event("MemberRestarted", "member 2"), 3),
        (event("MemberRestarted", "member 3"), 1),
    ]


def test_a_full_queue_drops_its_oldest_event() -> None:
    clock, posted = Clock(), []  # type: ignore[var-annotated]
    rec = recorder(clock, posted, capacity=2)
    for reason in ("A", "B", "C"):
        rec.record(event(reason))
    clock.now += 60
    rec.post_due()
    assert [e.reason for e, _ in posted] == ["B", "C"]


def test_a_failing_post_is_logged_and_the_rest_still_go() -> None:
    clock, posted = Clock(), []  # type: ignore[var-annotated]

    def post(e: events.Event, n: int) -> None:
        if e.reason == "A":
            raise RuntimeError("API server unreachable")
        posted.append((e, n))

    rec = events.Recorder(post, clock=clock)
    rec.record(event("A"))
    rec.record(event("B"))
    clock.now += 60
    assert rec.post_due() == 2
    assert posted == [(event("B"), 1)]


def test_the_thread_posts_what_is_due_and_stop_posts_the_rest() -> None:
    posted: list[tuple[events.Event, int]] = []
    went = threading.Event()

    def post(e: events.Event, n: int) -> None:
        posted.append((e, n))
        went.set()

    rec = events.Recorder(post, quiet=0.01, max_delay=3600.0)
    rec.start()
    rec.record(event("A"))
    assert went.wait(30)
    rec.wrote()
    rec.quiet = 3600.0  # from now on nothing is due before the stop
    rec.record(event("B"))
    rec.stop(timeout=30)
    assert [e.reason for e, _ in posted] == ["A", "B"]


class PostingRest:
    def __init__(self) -> None:
        self.posted: list[tuple[str, Any]] = []

    def create(self, path: str, body: Any) -> Any:
        self.posted.append((path, body))
        return body

    def request(self, method: str, path: str, **kw: Any) -> Any:
        self.posted.append((path, kw.get("body")))
        return {}


def test_kube_queues_events_with_a_recorder_and_marks_its_writes() -> None:
    rest, clock = PostingRest(), Clock()
    api = kube.Kube(rest)  # type: ignore[arg-type]
    api.recorder = events.Recorder(api.post_event, clock=clock)
    ref = pods.SearchRef("ml", "s1", "uid-1")
    api.record_event(ref, "Normal", "MembersStarted", "pods a, b")
    api.record_event(ref, "Normal", "MembersStarted", "pods a, b")
    assert rest.posted == [] and len(api.recorder) == 1
    search = SearchView.from_object(search_object("pbt"))
    api.apply(search, plan.Plan(actions=(), status=search.status))
    assert api.recorder.due_in() == events.QUIET_SECONDS  # a write just now
    clock.now += 60
    api.recorder.post_due()
    [(path, body)] = [p for p in rest.posted if p[0].endswith("/events")]
    assert path == "/api/v1/namespaces/ml/events"
    assert body["count"] == 2 and body["reason"] == "MembersStarted"
    assert body["involvedObject"]["uid"] == "uid-1"


def test_kube_without_a_recorder_posts_at_once() -> None:
    rest = PostingRest()
    api = kube.Kube(rest)  # type: ignore[arg-type]
    api.record_event(pods.SearchRef("ml", "s1", "uid-1"), "Warning", "WriteFailed", "409")
    [(path, body)] = rest.posted
    assert path.endswith("/events") and body["count"] == 1 and body["type"] == "Warning"
