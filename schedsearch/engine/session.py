"""Where trials run: a Ray started for one command, or an existing cluster, and what a trial asks.

A local Ray is sized for a laptop or a 2-core CI box: as many CPUs as the machine has, no
dashboard, workers' output not forwarded (the engine shows its own progress), a small object
store (trials exchange only metrics and file paths, never tensors). It is always a private Ray
of this command (``address="local"``), even when a ``ray start`` cluster runs on the machine.

An existing cluster is joined when ``--ray-address`` or ``$RAY_ADDRESS`` names one (Ray's own
convention), as it is, and left running at the end. Its workers may not have this project or
the spec's entrypoint module installed, so both are shipped to them in the job's runtime
environment (:mod:`shipping`).

Trial resources: every trial that must run at the same time (all PBT members) gets the same
share, computed over the nodes so that all of them fit at once. A population larger than the
CPUs time-shares them: each member asks a fraction of a CPU and the operating system shares
the cores (no member queues behind another, so no member falls behind the population).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Trials exchange small dicts and paths; 75 MiB is Ray's floor for the object store.
OBJECT_STORE_BYTES = 80 * 1024 * 1024
NAMESPACE = "schedsearch"
ADDRESS_ENV = "RAY_ADDRESS"
# Ray counts resources in fixed point: 1/10000 of a unit is the finest quantity it accepts.
RESOURCE_UNITS = 10_000
CONNECT_TIMEOUT_SECONDS = 5.0
# Ray Tune moves each trial into its own folder unless this is "0".
CHDIR_ENV = "RAY_CHDIR_TO_TRIAL_DIR"


class RayConnectError(RuntimeError):
    """The Ray cluster named by ``--ray-address`` or ``$RAY_ADDRESS`` could not be joined."""


@dataclass(frozen=True)
class RaySession:
    """The Ray the engine talks to, and what it took to get there.

    ``node_cpus``/``node_gpus`` are the alive nodes' capacities (one entry per node): a trial
    runs on one node, so what fits is decided node by node, not on the totals.
    """

    address: str | None
    started_here: bool
    cpus: float
    gpus: float
    startup_seconds: float
    node_cpus: tuple[float, ...] = ()
    node_gpus: tuple[float, ...] = ()
    address_from_env: bool = False

    def cpu_capacities(self) -> tuple[float, ...]:
        return self.node_cpus or (self.cpus,)

    def gpu_capacities(self) -> tuple[float, ...]:
        return self.node_gpus or (self.gpus,)


def resolve_address(flag: str | None, env: dict[str, str] | None = None) -> tuple[str | None, bool]:
    """The cluster to join (None: start a private local Ray) and whether it came from
    ``$RAY_ADDRESS``. The flag wins over the environment."""
    if flag:
        return flag, False
    env_address = (os.environ if env is None else env).get(ADDRESS_ENV, "").strip()
    return (env_address, True) if env_address else (None, False)


@contextmanager
def ray_session(
    address: str | None = None, *, runtime_env: dict[str, Any] | None = None
) -> Iterator[RaySession]:
    """Start a small local Ray (or join ``address``, else ``$RAY_ADDRESS``) for the block.

    ``runtime_env`` is what a joined cluster's workers need to import (a local Ray's workers
    share this machine's environment and get none). Raises :class:`RayConnectError` when the
    cluster cannot be joined.
    """
    import ray

    # Tune installs its own SIGINT handler that cancels the run its way; the engine handles
    # Ctrl-C itself so the store is left consistent (see interrupt.py).
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    # No CSV/JSON/TensorBoard files per trial: the store holds the history.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Trials keep the directory `run` started in (a joined cluster's: the shipped working
    # directory), so a relative path in the spec or the user's code means the same in a trial.
    os.environ.setdefault(CHDIR_ENV, "0")
    # A new local Ray announces that it turned token authentication on (it stays on).
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    address, from_env = resolve_address(address)
    started = time.monotonic()
    started_here = not ray.is_initialized()
    if started_here:
        _init(address, runtime_env, from_env=from_env)
    resources = ray.cluster_resources()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    session = RaySession(
        address=address,
        started_here=started_here,
        cpus=float(resources.get("CPU", 0.0)),
        gpus=float(resources.get("GPU", 0.0)),
        startup_seconds=time.monotonic() - started,
        node_cpus=tuple(float(n.get("Resources", {}).get("CPU", 0.0)) for n in nodes),
        node_gpus=tuple(float(n.get("Resources", {}).get("GPU", 0.0)) for n in nodes),
        address_from_env=from_env,
    )
    try:
        yield session
    finally:
        if started_here:
            ray.shutdown()


def _init(address: str | None, runtime_env: dict[str, Any] | None, *, from_env: bool) -> None:
    import ray

    source = f" (from ${ADDRESS_ENV})" if from_env else ""
    if address:
        _check_reachable(address, source)
    try:
        ray.init(**_init_kwargs(address, runtime_env))
    except (ConnectionError, TimeoutError, ray.exceptions.RaySystemError) as err:
        raise RayConnectError(f"cannot join the Ray cluster at {address}{source}: {err}") from None


def _check_reachable(address: str, source: str) -> None:
    """Fail in seconds on a wrong ``host:port``: Ray itself retries a missing GCS for minutes."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # "auto", "ray://..." and other forms are Ray's to resolve
    try:
        target = (host.strip("[]"), int(port))  # [::1]:6379 is an IPv6 host
        socket.create_connection(target, timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as err:
        raise RayConnectError(
            f"cannot join the Ray cluster at {address}{source}: nothing answers there ({err}); "
            "start it with `ray start --head` or fix the address"
        ) from None


def _init_kwargs(address: str | None, runtime_env: dict[str, Any] | None = None) -> dict[str, Any]:
    common: dict[str, Any] = {
        "namespace": NAMESPACE,
        "log_to_driver": False,
        "configure_logging": True,
        "logging_level": logging.WARNING,
    }
    if address:
        # Sizes are the cluster's own; Ray refuses num_cpus/num_gpus when joining one.
        joined = {"address": address, **common}
        return {**joined, "runtime_env": runtime_env} if runtime_env else joined
    return {
        **common,
        # "local": a private Ray even if $RAY_ADDRESS or a `ray start` cluster is around.
        "address": "local",
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


def fitting_share(
    capacities: Sequence[float], trials: int, *, whole_above_one: bool = False
) -> float:
    """The most each of ``trials`` equal trials may ask so that all run at once, each on one
    node of these ``capacities`` (0.0 when even Ray's finest quantity does not fit).

    Computed in Ray's fixed-point units and rounded down, so the trials never ask for more than
    a node has: 3 trials on 2 CPUs ask 0.6666 each (0.667 would leave one waiting), 3 trials on
    two 1-CPU nodes ask 0.5 (2/3 fits two on neither node). ``whole_above_one``: quantities
    above 1 must be whole (Ray's rule for GPUs).
    """
    units = sorted((int(c * RESOURCE_UNITS + 1e-6) for c in capacities if c > 0), reverse=True)
    wanted = max(1, trials)
    best = 0
    for capacity in units:
        # On the best share some node holds exactly k trials: the share is capacity // k.
        for k in range(1, wanted + 1):
            share = capacity // k
            if whole_above_one and share > RESOURCE_UNITS:
                share -= share % RESOURCE_UNITS
            if share <= best:
                break
            if sum(u // share for u in units) >= wanted:
                best = share
                break
    return best / RESOURCE_UNITS


def trial_resources(
    session: RaySession, *, concurrent: int, cpu: float | None, gpu: float
) -> TrialResources:
    """Resources per trial so that ``concurrent`` trials all run at once.

    PBT members must train side by side (a member waiting for a slot while the others race
    ahead would never be compared with them), so each asks at most the share that lets all of
    them fit; a population larger than the CPUs time-shares them (fractions of a CPU).
    ``cpu``/``gpu`` are the spec's per-member requests. GPUs are asked for only when the spec
    wants them and both Ray and torch see one.
    """
    share = fitting_share(session.cpu_capacities(), concurrent)
    if share <= 0:
        raise ValueError(
            f"{concurrent} trials cannot share {session.cpus:g} CPU at Ray's finest quantity "
            f"(1/{RESOURCE_UNITS} CPU each)"
        )
    per_trial_cpu = min(cpu, share) if cpu is not None and cpu > 0 else share
    per_trial_gpu = 0.0
    if gpu > 0 and session.gpus > 0 and _torch_sees_gpu():
        gpu_share = fitting_share(session.gpu_capacities(), concurrent, whole_above_one=True)
        per_trial_gpu = min(gpu, gpu_share)
    return TrialResources(cpu=_floor_units(per_trial_cpu), gpu=_floor_units(per_trial_gpu))


def _floor_units(value: float) -> float:
    return int(value * RESOURCE_UNITS + 1e-6) / RESOURCE_UNITS


def _torch_sees_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())
