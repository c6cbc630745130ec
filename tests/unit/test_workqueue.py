"""The work queue: one reconcile per key however often it is added, never two at once, a
backoff that grows with failures and resets on success, and rate limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from schedsearch.controller import workqueue

Key = tuple[str, str]
KEY: Key = ("ml", "s1")


async def drain(queue: workqueue.WorkQueue[Key], handle: Callable[[Key], float | None]) -> None:
    """Run one worker until the queue holds nothing (timers left pending stay pending)."""
    worker = asyncio.create_task(workqueue.work(queue, handle))
    while len(queue) or queue._processing:
        await asyncio.sleep(0.01)
    queue.shutdown()
    await asyncio.wait_for(worker, timeout=10)


def test_a_key_added_many_times_is_reconciled_once() -> None:
    seen: list[Key] = []

    async def scenario() -> None:
        queue: workqueue.WorkQueue[Key] = workqueue.WorkQueue()
        for _ in range(5):
            queue.add(KEY)
        queue.add(("ml", "s2"))
        await drain(queue, lambda key: seen.append(key))

    asyncio.run(scenario())
    assert seen == [KEY, ("ml", "s2")]


def test_a_key_added_while_it_is_reconciled_goes_round_once_more_never_in_parallel() -> None:
    running: list[Key] = []
    overlaps: list[Key] = []
    calls: list[Key] = []

    async def scenario() -> None:
        queue: workqueue.WorkQueue[Key] = workqueue.WorkQueue()
        loop = asyncio.get_running_loop()

        def handle(key: Key) -> None:
            if key in running:
                overlaps.append(key)
            running.append(key)
            calls.append(key)
            if len(calls) == 1:  # a change arrives while the first pass runs
                loop.call_soon_threadsafe(queue.add, key)
                loop.call_soon_threadsafe(queue.add, key)
                while len(queue) == 0:
                    pass
            running.remove(key)

        queue.add(KEY)
        workers = [asyncio.create_task(workqueue.work(queue, handle)) for _ in range(3)]
        while len(calls) < 2 or len(queue) or queue._processing:
            await asyncio.sleep(0.01)
        queue.shutdown()
        await asyncio.wait_for(asyncio.gather(*workers), timeout=10)

    asyncio.run(scenario())
    assert calls == [KEY, KEY] and overlaps == []


def test_backoff_grows_on_errors_and_resets_on_success() -> None:
    # Delays of minutes: no retry can fire while the test looks at it, however loaded the
    # machine (with delays of milliseconds a retry fired under load and took the next outcome).
    outcomes = iter(["fail", "fail", "fail", "ok", "fail"])
    delays: list[float | None] = []

    async def scenario() -> None:
        queue: workqueue.WorkQueue[Key] = workqueue.WorkQueue(
            backoff=workqueue.Backoff(base=60.0, cap=150.0)
        )

        def handle(key: Key) -> float | None:
            if next(outcomes) == "fail":
                raise RuntimeError("API server busy")
            return None

        worker = asyncio.create_task(workqueue.work(queue, handle))
        for _ in range(5):
            queue.add(KEY)
            while len(queue) or queue._processing:
                await asyncio.sleep(0.005)
            delays.append(queue.pending_timer(KEY))
            failures = queue.backoff.failures(KEY)
            delays.append(float(failures))
            # the retry is due later: cancel it (the next round adds the key itself)
            pending = queue._timers.pop(KEY, None)
            if pending is not None:
                pending[1].cancel()
        queue.shutdown()
        await asyncio.wait_for(worker, timeout=10)

    asyncio.run(scenario())
    timers, failures = delays[0::2], delays[1::2]
    assert failures == [1.0, 2.0, 3.0, 0.0, 1.0]
    assert timers[3] is None  # a success schedules nothing
    assert timers[0] is not None and timers[1] is not None and timers[2] is not None
    assert 30.0 < timers[0] <= 60.0 < timers[1] <= 120.0  # 60 s, then 120 s
    assert 120.0 < timers[2] <= 150.0  # 240 s, capped at 150 s
    assert timers[4] is not None and 30.0 < timers[4] <= 60.0  # from the base again


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff: workqueue.Backoff[Key] = workqueue.Backoff(base=0.5, cap=4.0)
    assert [backoff.next(KEY) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.forget(KEY)
    assert backoff.next(KEY) == 0.5


def test_a_terminal_error_is_not_retried() -> None:
    calls: list[Key] = []

    def handle(key: Key) -> None:
        calls.append(key)
        raise workqueue.Terminal("the API server refuses this status (422)")

    async def scenario() -> workqueue.WorkQueue[Key]:
        queue: workqueue.WorkQueue[Key] = workqueue.WorkQueue()
        queue.add(KEY)
        await drain(queue, handle)
        return queue

    queue = asyncio.run(scenario())
    assert calls == [KEY] and queue._timers == {} and queue.backoff.failures(KEY) == 0


def test_asked_to_look_again_later_the_key_waits_for_its_time_and_the_earliest_wins() -> None:
    async def scenario() -> tuple[float | None, float | None]:
        queue: workqueue.WorkQueue[Key] = workqueue.WorkQueue()
        queue.add_after(KEY, 30.0)
        queue.add_after(KEY, 60.0)  # later: the 30 s stands
        first = queue.pending_timer(KEY)
        queue.add_after(KEY, 10.0)  # earlier: replaces it
        second = queue.pending_timer(KEY)
        assert len(queue) == 0
        queue.shutdown()
        return first, second

    first, second = asyncio.run(scenario())
    assert first is not None and 29.0 < first <= 30.0
    assert second is not None and 9.0 < second <= 10.0


def test_the_token_bucket_allows_a_burst_then_its_rate() -> None:
    now = [0.0]
    bucket = workqueue.TokenBucket(qps=10.0, burst=3, clock=lambda: now[0])
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve() == pytest.approx(0.1)
    assert bucket.reserve() == pytest.approx(0.2)
    now[0] = 10.0  # long idle: the burst is back, not more
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve() > 0


@pytest.mark.parametrize(("qps", "burst", "field"), [(0.0, 1, "qps"), (1.0, 0, "burst")])
def test_token_bucket_refuses_bad_limits_naming_them(qps: float, burst: int, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        workqueue.TokenBucket(qps=qps, burst=burst)
