"""Leader election on a Lease, against an in-memory API that checks resourceVersions as the
API server does: one leader at a time, takeover only after the Lease expired by the follower's
own clock, and at once after a release."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from schedsearch.controller import kube, leader

TIMING = leader.Timing(lease=15.0, renew_deadline=10.0, retry=2.0)


class LeaseApi:
    """One Lease object: GET, POST and PUT with optimistic concurrency."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.requests: list[str] = []

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        self.requests.append("GET")
        return copy.deepcopy(self.lease)

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self.requests.append("POST")
        if self.lease is not None:
            return None
        return self._store(body)

    def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> dict[str, Any]:
        self.requests.append(method)
        assert method == "PUT" and self.lease is not None
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise kube.ApiError(409, "the object has been modified", "Conflict")
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"] = {**body["metadata"], "resourceVersion": str(self.version)}
        return copy.deepcopy(self.lease)


def elector(api: LeaseApi, identity: str, clock: list[float]) -> leader.Elector:
    return leader.Elector(
        api,  # type: ignore[arg-type]
        namespace="schedsearch-system",
        name="schedsearch-controller",
        identity=identity,
        timing=TIMING,
        clock=lambda: clock[0],
    )


def test_one_leader_and_a_follower_that_takes_over_only_once_the_lease_expired() -> None:
    api, clock = LeaseApi(), [0.0]
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.try_acquire_or_renew() and a.leading
    assert not b.try_acquire_or_renew() and not b.leading
    clock[0] = 10.0
    assert a.try_acquire_or_renew()  # renewed
    assert not b.try_acquire_or_renew()
    clock[0] = 24.0  # 14 s after b saw the last renewal: still valid
    assert not b.try_acquire_or_renew()
    clock[0] = 26.0  # a stopped renewing 16 s ago by b's clock
    assert b.try_acquire_or_renew() and b.leading
    assert api.lease is not None and api.lease["spec"]["leaseTransitions"] == 1
    # a comes back: its renewal conflicts, and it does not take the Lease back
    assert not a.try_acquire_or_renew() and not a.leading


def test_a_leader_renews_without_reading_the_lease_again() -> None:
    api, clock = LeaseApi(), [0.0]
    a = elector(api, "a", clock)
    assert a.try_acquire_or_renew()
    api.requests.clear()
    for _ in range(3):
        assert a.try_acquire_or_renew()
    assert api.requests == ["PUT", "PUT", "PUT"]


def test_a_released_lease_is_taken_at_once() -> None:
    api, clock = LeaseApi(), [0.0]
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release()
    assert not a.leading
    assert b.try_acquire_or_renew() and b.leading


@pytest.mark.parametrize(
    ("lease", "renew", "retry"), [(15.0, 15.0, 2.0), (15.0, 10.0, 10.0), (15.0, 10.0, 0.0)]
)
def test_timings_that_cannot_work_are_refused(lease: float, renew: float, retry: float) -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        leader.Timing(lease=lease, renew_deadline=renew, retry=retry)
