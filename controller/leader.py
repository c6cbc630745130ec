"""Leader election on a coordination.k8s.io Lease: of several controller replicas, one acts.

The leader renews the Lease every ``retry`` seconds; the others read it as often and take it over
once it has not been renewed for ``lease`` seconds, as measured by their own clock from when they
saw it change (clocks of different machines are never compared). A leader that cannot renew for
``renew_deadline`` seconds stops acting (``LeadershipLost``) before anyone else may start. A
leader that shuts down cleanly releases the Lease, so a follower takes over at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from schedsearch.controller import kube

log = logging.getLogger(__name__)
JsonObj = dict[str, Any]


class LeadershipLost(Exception):
    """This replica could not renew its Lease in time: it must stop acting at once."""


@dataclass(frozen=True)
class Timing:
    """Seconds: a Lease is valid this long, a leader gives up renewing after ``renew_deadline``,
    and everyone tries again every ``retry``."""

    lease: float = 15.0
    renew_deadline: float = 10.0
    retry: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry < self.renew_deadline < self.lease:
            raise ValueError(
                "leader election: need 0 < retry period < renew deadline < lease duration, got "
                f"{self.retry}, {self.renew_deadline}, {self.lease}"
            )


def _micro_time(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    """One replica's side of the Lease; ``try_acquire_or_renew`` is one round (blocking)."""

    def __init__(
        self,
        rest: kube.Rest,
        *,
        namespace: str,
        name: str,
        identity: str,
        timing: Timing = Timing(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rest, self.identity, self.timing, self._clock = rest, identity, timing, clock
        self.path = (
            f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace, safe='')}"
            f"/leases/{quote(name, safe='')}"
        )
        self.namespace, self.name = namespace, name
        self._lease: JsonObj | None = None  # the Lease as last read or written
        self._seen: tuple[tuple[Any, ...], float] | None = None  # its record, and when it changed

    @property
    def leading(self) -> bool:
        return self._lease is not None and self._holder(self._lease) == self.identity

    def try_acquire_or_renew(self) -> bool:
        """Hold the Lease after this round? (API errors propagate: the caller retries.)"""
        # Renewing what we wrote last needs no read: a 409 means someone else wrote since.
        if self.leading and self._write(self._lease):
            return True
        lease = self.rest.get_or_none(self.path)
        if lease is None:
            return self._create()
        self._lease = lease
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        if self._seen is None or self._seen[0] != record:
            self._seen = (record, self._clock())
        holder = self._holder(lease)
        duration = float(spec.get("leaseDurationSeconds") or self.timing.lease)
        if holder and holder != self.identity and self._clock() < self._seen[1] + duration:
            return False  # another replica holds a live Lease
        return self._write(lease)

    def release(self) -> None:
        """Give the Lease up (a clean shutdown): followers need not wait for it to expire."""
        if not self.leading or self._lease is None:
            return
        lease = dict(self._lease)
        lease["spec"] = {**lease.get("spec", {}), "holderIdentity": None, "leaseDurationSeconds": 1}
        try:
            self.rest.request("PUT", self.path, body=lease)
        except kube.ApiError as err:
            log.warning("could not release the Lease %s: %s", self.name, err)
        self._lease = None

    def _create(self) -> bool:
        now = _micro_time(datetime.datetime.now(datetime.timezone.utc))
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": self._spec(acquire=now, renew=now, transitions=0),
        }
        created = self.rest.create(self.path.rsplit("/", 1)[0], body)
        self._lease = created
        return created is not None

    def _write(self, lease: JsonObj | None) -> bool:
        assert lease is not None
        spec = lease.get("spec") or {}
        now = _micro_time(datetime.datetime.now(datetime.timezone.utc))
        ours = self._holder(lease) == self.identity
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        acquire = spec.get("acquireTime") if ours else now
        body = {**lease, "spec": self._spec(acquire=acquire, renew=now, transitions=transitions)}
        try:
            self._lease = self.rest.request("PUT", self.path, body=body)
        except kube.ApiError as err:
            if err.status != 409:
                raise
            self._lease = None
            return False
        return True

    def _spec(self, *, acquire: str | None, renew: str, transitions: int) -> JsonObj:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": round(self.timing.lease),
            "acquireTime": acquire,
            "renewTime": renew,
            "leaseTransitions": transitions,
        }

    @staticmethod
    def _holder(lease: JsonObj) -> str:
        return str((lease.get("spec") or {}).get("holderIdentity") or "")


async def acquire(elector: Elector) -> None:
    """Return once this replica holds the Lease."""
    announced = False
    while True:
        try:
            if await asyncio.to_thread(elector.try_acquire_or_renew):
                log.info("leading (Lease %s/%s)", elector.namespace, elector.name)
                return
        except Exception as err:
            log.warning("leader election: %s", err)
        if not announced:
            log.info("following: another replica holds Lease %s", elector.name)
            announced = True
        await asyncio.sleep(elector.timing.retry)


async def keep(elector: Elector) -> None:
    """Renew the Lease until cancelled; raises ``LeadershipLost`` when renewing fails too long."""
    renewed = time.monotonic()
    while True:
        await asyncio.sleep(elector.timing.retry)
        try:
            ok = await asyncio.to_thread(elector.try_acquire_or_renew)
        except Exception as err:
            log.warning("leader election: renewing failed: %s", err)
            ok = False
        if ok:
            renewed = time.monotonic()
        elif time.monotonic() - renewed > elector.timing.renew_deadline or not elector.leading:
            raise LeadershipLost(f"Lease {elector.name} not renewed; stopping")
