"""Where a local search keeps its files, and the engine state the store holds for ``--resume``.

Files of search ``NAME`` live in ``<store's directory>/runs/NAME/`` (checkpoints, Tune's
experiment directory), unless ``$SCHEDSEARCH_RUNS_DIR`` or the caller names another root. The
engine state is one JSON document in the store's engine-state blob: the strategy's own state
(the PBT coordinator's, the single trial's checkpoint directory) and the run directory it refers
to, so a resume finds the checkpoints even if the default location changed.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schedsearch.store.base import StoreError

RUNS_DIR_ENV = "SCHEDSEARCH_RUNS_DIR"
STATE_FORMAT = "schedsearch.io/engine-state-v1"


class RunInUseError(StoreError):
    """Another process is running this search right now."""


@dataclass(frozen=True)
class EngineState:
    """What ``--resume`` needs: the strategy, the run directory, the strategy's own state."""

    strategy: str
    run_dir: Path
    job: dict[str, Any]

    def to_bytes(self) -> bytes:
        document = {
            "format": STATE_FORMAT,
            "strategy": self.strategy,
            "runDir": str(self.run_dir),
            "job": self.job,
        }
        return json.dumps(document, sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> EngineState:
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"the stored engine state is not readable JSON ({err})") from None
        if not isinstance(document, Mapping) or document.get("format") != STATE_FORMAT:
            found = document.get("format") if isinstance(document, Mapping) else None
            raise ValueError(
                f"the stored engine state has format {found!r}, expected {STATE_FORMAT!r}"
            )
        return cls(str(document["strategy"]), Path(document["runDir"]), dict(document["job"]))


def default_run_dir(store_path: Path, search: str, env: Mapping[str, str] | None = None) -> Path:
    """``$SCHEDSEARCH_RUNS_DIR/NAME``, else ``runs/NAME`` beside the store file."""
    env = os.environ if env is None else env
    root = Path(env[RUNS_DIR_ENV]).expanduser() if env.get(RUNS_DIR_ENV) else None
    return (root or store_path.expanduser().resolve().parent / "runs") / search


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory for this process; a second ``schedsearch run`` of the same search
    is refused instead of training the same members twice."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInUseError(
                f"{run_dir} is in use: this search is being run by another process"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
