"""The embedded local engine: `schedsearch run spec.yaml` on this machine or an existing Ray.

Ray Tune runs the trials (PBT members, the AutoLRS trainer, the HDET replica group); the
strategies in :mod:`schedsearch.trainers.strategies` make the decisions; the store keeps the
search, its engine state for ``--resume``, and the result. Entry point: :func:`run.run_search`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RayConnectError", "SearchFailed", "SearchInterrupted", "run_search"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (e.g. for the PBT coordinator) must not pull in Ray Tune.
    if name in __all__:
        from schedsearch.engine import run

        return getattr(run, name)
    raise AttributeError(f"module 'schedsearch.engine' has no attribute {name!r}")
