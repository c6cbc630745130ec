"""A trainers ``Reporter`` that keeps coarse member history in the local store.

Runners call ``on_progress`` every few steps; the store keeps every evaluation (a report with a
validation loss) and every ``every``-th step, written in batches so a fast member does not turn
into one SQLite transaction per step. Events flush the batch: they mark moments worth seeing.
"""

from __future__ import annotations

import threading
from typing import Any

from schedsearch.store.base import HistoryPoint
from schedsearch.store.sqlite import SQLiteStore


class StoreReporter:
    """Buffers coarse progress of one search and appends it to ``store`` in batches."""

    def __init__(
        self, store: SQLiteStore, search: str, *, every: int = 100, batch: int = 64
    ) -> None:
        if every < 1 or batch < 1:
            raise ValueError(f"every and batch must be >= 1, got {every} and {batch}")
        self._store = store
        self._search = search
        self._every = every
        self._batch = batch
        self._buffer: list[HistoryPoint] = []
        # Runners may report from several threads (one per member).
        self._lock = threading.Lock()

    def on_progress(
        self, member: int, step: int, loss: float, lr: float, val_loss: float | None = None
    ) -> None:
        if val_loss is None and step % self._every != 0:
            return
        with self._lock:
            self._buffer.append(HistoryPoint(member, step, lr, loss, val_loss))
            full = len(self._buffer) >= self._batch
        if full:
            self.flush()

    def on_event(self, kind: str, message: str, **data: Any) -> None:
        self.flush()

    def flush(self) -> None:
        """Write what is buffered (one transaction)."""
        with self._lock:
            points, self._buffer = self._buffer, []
        if points:
            self._store.append_history(self._search, points)
