"""Finished runs on disk, one JSON file per run under ``<out>/runs``, so a re-run skips them.

A run's file name carries a digest of everything that defines it (see ``tasks.Task.key``): change
a budget, a seed or a schedule and the run is redone; delete the folder to start over.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


class RunCache:
    """JSON results by key; writes are atomic (a killed run leaves no half-written file)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # unreadable: run it again rather than fail the whole benchmark
        return data if isinstance(data, dict) else None

    def put(self, key: str, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{key}.", dir=self.root)
        with os.fdopen(handle, "w") as stream:
            json.dump(clean_floats(data), stream, allow_nan=False)
        os.replace(temporary, self.path(key))


def clean_floats(value: Any) -> Any:
    """``value`` with every NaN/inf float replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_floats(v) for v in value]
    return value
