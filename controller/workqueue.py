"""Bounded work: which searches to reconcile next, how fast, and after a failure how late.

The queue holds search keys, not events: a key added ten times before a worker takes it is
reconciled once, and a key added while a worker reconciles it is reconciled once more after
(never by two workers at once). A failed reconcile comes back after a per-key exponential
backoff that a success resets; ``TokenBucket`` bounds the rate of those retries overall, and
the rate of the controller's requests to the API server.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
Key = TypeVar("Key", bound=Hashable)


class TokenBucket:
    """``qps`` tokens a second, at most ``burst`` saved up; thread-safe."""

    def __init__(
        self, qps: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if qps <= 0:
            raise ValueError(f"qps: must be > 0, got {qps}")
        if burst < 1:
            raise ValueError(f"burst: must be >= 1, got {burst}")
        self.qps, self.burst, self._clock = qps, burst, clock
        self._tokens, self._at = float(burst), clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token; returns how many seconds to wait before using it (0: at once)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.qps)
            self._at = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def acquire(self) -> None:
        """Block the calling thread until a token is available."""
        wait = self.reserve()
        if wait > 0:
            time.sleep(wait)


class Backoff(Generic[Key]):
    """Per key: ``base * 2**(failures - 1)`` seconds, at most ``cap``."""

    def __init__(self, base: float = 0.5, cap: float = 300.0) -> None:
        self.base, self.cap = base, cap
        self._failures: dict[Key, int] = {}

    def next(self, key: Key) -> float:
        """One more failure of ``key``: the delay before its retry."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        return min(self.cap, self.base * 2 ** min(failures - 1, 64))

    def forget(self, key: Key) -> None:
        """``key`` succeeded: its next failure starts from ``base`` again."""
        self._failures.pop(key, None)

    def failures(self, key: Key) -> int:
        return self._failures.get(key, 0)


class WorkQueue(Generic[Key]):
    """De-duplicating FIFO of keys for asyncio workers (``get`` ... ``done``)."""

    def __init__(
        self,
        *,
        backoff: Backoff[Key] | None = None,
        limiter: TokenBucket | None = None,
    ) -> None:
        self.backoff: Backoff[Key] = backoff or Backoff()
        self.limiter = limiter or TokenBucket(qps=10.0, burst=100)
        self._order: asyncio.Queue[Key | None] = asyncio.Queue()
        self._dirty: set[Key] = set()
        self._processing: set[Key] = set()
        self._timers: dict[Key, tuple[float, asyncio.TimerHandle]] = {}
        self._shut = False

    def __len__(self) -> int:
        return len(self._dirty)

    def add(self, key: Key) -> None:
        """Reconcile ``key`` soon (once, however often it is added before that)."""
        if self._shut or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._order.put_nowait(key)

    def add_after(self, key: Key, delay: float) -> None:
        """Reconcile ``key`` in ``delay`` seconds, unless an earlier time is already set."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= when:
                return
            pending[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: Key) -> float:
        """``key`` failed: retry it after its backoff (or later, if retries are too many)."""
        delay = max(self.backoff.next(key), self.limiter.reserve())
        self.add_after(key, delay)
        return delay

    def forget(self, key: Key) -> None:
        self.backoff.forget(key)

    async def get(self) -> Key | None:
        """The next key to work on, marked as being processed; None once shut down."""
        key = await self._order.get()
        if key is None or self._shut:
            self._order.put_nowait(None)  # the next worker's stop signal
            return None
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: Key) -> None:
        """The worker finished ``key``; if it was added meanwhile, it goes round again."""
        self._processing.discard(key)
        if key in self._dirty and not self._shut:
            self._order.put_nowait(key)

    def pending_timer(self, key: Key) -> float | None:
        """Seconds until ``key``'s delayed add (None: none set)."""
        pending = self._timers.get(key)
        if pending is None:
            return None
        return pending[0] - asyncio.get_running_loop().time()

    def shutdown(self) -> None:
        """Workers return once they finish what they hold; nothing more is taken."""
        self._shut = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._order.put_nowait(None)


class Terminal(Exception):
    """A reconcile error that retrying cannot fix: logged, not retried until the next change."""


async def work(
    queue: WorkQueue[Key],
    handle: Callable[[Key], float | None],
    *,
    is_terminal: Callable[[BaseException], bool] = lambda err: isinstance(err, Terminal),
) -> None:
    """One worker: take a key, run ``handle`` in a thread, requeue as it says, until shut down.

    ``handle`` returns when to look again (None: only when something changes)."""
    while True:
        key = await queue.get()
        if key is None:
            return
        try:
            again = await asyncio.to_thread(handle, key)
        except Exception as err:
            if is_terminal(err):
                queue.forget(key)
                log.error("reconcile %s failed, not retrying until it changes: %s", key, err)
            else:
                delay = queue.add_rate_limited(key)
                log.warning("reconcile %s failed (retry in %.1fs): %s", key, delay, err)
        else:
            queue.forget(key)
            if again is not None:
                queue.add_after(key, again)
        finally:
            queue.done(key)
