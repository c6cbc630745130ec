"""Where trials run: a Ray started for one command, or an existing cluster, and what a trial asks.

A local Ray is sized for a laptop or a 2-core CI box: as many CPUs as the machine has, no
dashboard, workers' output not forwarded (the engine shows its own progress), a small object
store (trials exchange only metrics and file paths, never tensors). An existing cluster
(``--ray-address``) is joined as it is and left running at the end.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Trials exchange small dicts and paths; 75 MiB is Ray's floor for the object store.
OBJECT_STORE_BYTES = 80 * 1024 * 1024
NAMESPACE = "schedsearch"


@dataclass(frozen=True)
class RaySession:
    """The Ray the engine talks to, and what it took to get there."""

    address: str | None
    started_here: bool
    cpus: float
    gpus: float
    startup_seconds: float


@contextmanager
def ray_session(address: str | None = None) -> Iterator[RaySession]:
    """Start a small local Ray (or join ``address``) for the duration of the block."""
    import ray

    # Tune installs its own SIGINT handler that cancels the run its way; the engine handles
    # Ctrl-C itself so the store is left consistent (see interrupt.py).
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    # No CSV/JSON/TensorBoard files per trial: the store holds the history.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # A new local Ray announces that it turned token authentication on (it stays on).
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    started = time.monotonic()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(**_init_kwargs(address))
    resources = ray.cluster_resources()
    session = RaySession(
        address=address,
        started_here=started_here,
        cpus=float(resources.get("CPU", 0.0)),
        gpus=float(resources.get("GPU", 0.0)),
        startup_seconds=time.monotonic() - started,
    )
    try:
        yield session
    finally:
        if started_here:
            ray.shutdown()


def _init_kwargs(address: str | None) -> dict[str, Any]:
    common: dict[str, Any] = {
        "namespace": NAMESPACE,
        "log_to_driver": False,
        "configure_logging": True,
        "logging_level": logging.WARNING,
    }
    if address:
        return {"address": address, **common}
    return {
        **common,
        "num_cpus": os.cpu_count() or 1,
        "include_dashboard": False,
        "object_store_memory": OBJECT_STORE_BYTES,
    }


@dataclass(frozen=True)
class TrialResources:
    """What one trial asks Ray for (Ray sets the trial's OMP_NUM_THREADS from its CPUs, which
    the harness follows)."""

    cpu: float
    gpu: float

    def as_tune(self) -> dict[str, float]:
        return {"cpu": self.cpu, "gpu": self.gpu}


def trial_resources(
    session: RaySession, *, concurrent: int, cpu: float | None, gpu: float
) -> TrialResources:
    """Resources per trial so that ``concurrent`` trials all run at once.

    PBT members must train side by side (a member waiting for a slot while the others race
    ahead would never be compared with them), so each asks at most its share of the session;
    ``cpu``/``gpu`` are the spec's per-member requests. GPUs are asked for only when the spec
    wants them and both Ray and torch see one.
    """
    share = session.cpus / max(1, concurrent)
    wanted = cpu if cpu is not None else share
    per_trial_cpu = max(0.1, min(wanted, share))
    per_trial_gpu = 0.0
    if gpu > 0 and session.gpus > 0 and _torch_sees_gpu():
        per_trial_gpu = min(gpu, session.gpus / max(1, concurrent))
    return TrialResources(cpu=round(per_trial_cpu, 3), gpu=round(per_trial_gpu, 3))


def _torch_sees_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())
