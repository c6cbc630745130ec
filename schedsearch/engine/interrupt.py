"""Ctrl-C as a request: the first SIGINT asks the search to stop cleanly, the second aborts.

A clean stop lets Tune stop the trials and the engine save its state and mark the search
Interrupted, so ``--resume`` continues it. Ray's own processes survive the SIGINT a terminal
sends to the whole foreground group (workers run in their own process groups), which is what
lets the engine still ask the PBT coordinator for its state after the trials stopped.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any


class Interrupt:
    """Installs a SIGINT handler for the duration of a ``with`` block (main thread only)."""

    def __init__(self, on_request: Callable[[], None] | None = None) -> None:
        self._event = threading.Event()
        self._on_request = on_request
        self._previous: Any = None
        self._installed = False

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self) -> None:
        """Ask for a clean stop (what the first Ctrl-C does)."""
        first = not self._event.is_set()
        self._event.set()
        if first and self._on_request is not None:
            self._on_request()

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._event.is_set():
            # Second Ctrl-C: the person does not want to wait for the clean stop.
            raise KeyboardInterrupt
        self.request()
