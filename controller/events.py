"""Events on searches, posted off the reconcile path and out of the way of bursts of writes.

An Event says what happened; nothing waits for it. A reconcile that creates a search's pods
should not hold a worker for one more request, and the Events of a burst of new searches should
not compete with the burst (kubectl creating the searches, the controller creating their pods)
for the API server. So, as client-go's event broadcaster does, a :class:`Recorder` queues them
and a thread of its own posts them: once the controller has written nothing for ``quiet``
seconds, or when the oldest has waited ``max_delay`` (a long burst delays Events, it never
starves them). The same event of one search queued again before it is posted is posted once,
with its count. Best effort: the queue holds at most ``capacity`` events (the oldest is
dropped), and what is queued when the controller stops is posted within the time ``stop``
allows, or lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

QUIET_SECONDS = 1.0
MAX_DELAY_SECONDS = 15.0
CAPACITY = 10_000


@dataclass(frozen=True)
class Event:
    """One Event on a search: who it is about, and what it says."""

    namespace: str
    name: str
    uid: str
    type: str  # Normal or Warning
    reason: str
    message: str


Post = Callable[[Event, int], None]  # an event and how many times it happened


class Recorder:
    """Thread-safe: reconcile threads and the report channel record, one thread posts."""

    def __init__(
        self,
        post: Post,
        *,
        quiet: float = QUIET_SECONDS,
        max_delay: float = MAX_DELAY_SECONDS,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._post, self.quiet, self.max_delay, self.capacity = post, quiet, max_delay, capacity
        self._clock = clock
        # Event -> (when first queued, count); dicts keep insertion order: oldest first.
        self._pending: dict[Event, tuple[float, int]] = {}
        self._written = float("-inf")  # when the controller last wrote
        self._dropped = 0
        self._stopping = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def record(self, event: Event) -> None:
        """Queue ``event`` to be posted (once with a count, if it is queued already)."""
        with self._cond:
            queued = self._pending.get(event)
            if queued is not None:
                self._pending[event] = (queued[0], queued[1] + 1)
                return
            if len(self._pending) >= self.capacity:
                del self._pending[next(iter(self._pending))]
                self._dropped += 1
            self._pending[event] = (self._clock(), 1)
            self._cond.notify()

    def wrote(self) -> None:
        """The controller wrote to the API server: Events wait until it has been quiet."""
        with self._cond:
            self._written = self._clock()

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    def due_in(self) -> float | None:
        """Seconds until the oldest event may be posted (0: now; None: nothing queued)."""
        with self._cond:
            return self._due_in()

    def _due_in(self) -> float | None:
        if not self._pending:
            return None
        if self._stopping:
            return 0.0
        now = self._clock()
        oldest = next(iter(self._pending.values()))[0]
        return max(0.0, min(self._written + self.quiet, oldest + self.max_delay) - now)

    def post_due(self) -> int:
        """Post every event that is due now, oldest first; returns how many were posted."""
        posted = 0
        while True:
            with self._cond:
                if self._due_in() != 0.0:
                    break
                event, (_, count) = next(iter(self._pending.items()))
                del self._pending[event]
                dropped, self._dropped = self._dropped, 0
            if dropped:
                log.warning("dropped %d events: more than %d were waiting", dropped, self.capacity)
            try:
                self._post(event, count)
            except Exception as err:  # best effort: an event lost is not worth a retry
                log.warning("could not record event %s on %s: %s", event.reason, event.name, err)
            posted += 1
        return posted

    # -- the posting thread ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="schedsearch-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Post what is queued (without waiting for quiet), for at most ``timeout`` seconds."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                wait = self._due_in()
                if wait is None and self._stopping:
                    return
                if wait != 0.0:
                    self._cond.wait(wait)
                    continue
            self.post_due()
