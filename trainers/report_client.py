"""The trainer pods' side of the report channel: a small urllib client, and PBT's coordinator.

``ReportClient.send`` numbers each new :class:`~schedsearch.trainers.channel.Report` (``seq``,
continuing from the number the pod was started with), posts it with the search's bearer token
and its idempotency key, and retries - exponential backoff with full jitter - while
the controller is unreachable or answers 5xx/429 (it may be restarting). Because the key travels
with every attempt, a report whose answer was lost is applied once and answered the same way.
A 4xx other than 404/408/429 means the report itself is wrong: it is raised, not retried.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from schedsearch.trainers import channel
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.pbt import coordinator as pbt_coordinator

log = logging.getLogger(__name__)
# 404: the controller may not yet see the token Secret it just created; a pod only exists while
# its search does, so waiting is safe. 408/429/5xx: busy or restarting. (409, a stale report, is
# final: this pod has been replaced.)
RETRYABLE_STATUS = frozenset({404, 408, 429, 500, 502, 503, 504})


class MemberStopped(Exception):
    """The controller answered a member's restart with Stop: it trains no more."""


class ReportRejected(Exception):
    """The controller refused the report for good (4xx); the message is its explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"report refused ({status}): {message}")
        self.status = status


class ChannelUnavailable(Exception):
    """The controller could not be reached within the allowed time."""


Opener = Callable[..., Any]


class ReportClient:
    """Posts reports of one search; safe to retry, so it retries."""

    def __init__(
        self,
        base_url: str,
        namespace: str,
        search: str,
        token: str,
        *,
        timeout: float = 30.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_elapsed: float | None = None,
        opener: Opener = urllib.request.urlopen,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        last_seq: int = 0,
    ) -> None:
        self.url = base_url.rstrip("/") + channel.reports_path(namespace, search)
        self.token = token
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_elapsed = max_elapsed
        self._open, self._sleep, self._rng, self._clock = opener, sleep, rng, clock
        self._seq = last_seq
        self._seq_lock = threading.Lock()

    def send(self, report: channel.Report, *, max_elapsed: float | None = None) -> dict[str, Any]:
        """Post ``report`` until it is answered; the answer's JSON.

        ``max_elapsed`` (default: the client's, None = forever) bounds the time spent retrying;
        then :class:`ChannelUnavailable` is raised.
        """
        limit = self.max_elapsed if max_elapsed is None else max_elapsed
        report = self._numbered(report)
        started = self._clock()
        attempt = 0
        while True:
            try:
                return self._post(report)
            except _Retry as retry:
                attempt += 1
                delay = self._delay(attempt, retry.after)
                if limit is not None and self._clock() - started + delay > limit:
                    raise ChannelUnavailable(
                        f"report {report.key()} not delivered in {limit:.0f}s: {retry}"
                    ) from None
                log.warning("report %s: %s; retrying in %.1fs", report.key(), retry, delay)
                self._sleep(delay)

    def _numbered(self, report: channel.Report) -> channel.Report:
        """``report`` with the next sequence number (one per report, kept across its retries)."""
        if report.seq > 0:
            return report
        with self._seq_lock:
            self._seq += 1
            return dataclasses.replace(report, seq=self._seq)

    def _delay(self, attempt: int, after: float | None) -> float:
        # Full jitter: members that lost the controller together do not return in lockstep.
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        delay = self._rng() * ceiling
        return max(delay, after or 0.0)

    def _post(self, report: channel.Report) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(report.to_json()).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                channel.IDEMPOTENCY_HEADER: report.key(),
            },
        )
        try:
            with self._open(request, timeout=self.timeout) as response:
                return dict(json.loads(response.read() or b"{}"))
        except urllib.error.HTTPError as err:
            message = _error_message(err)
            if err.code in RETRYABLE_STATUS:
                raise _Retry(f"{err.code} {message}", _retry_after(err)) from None
            raise ReportRejected(err.code, message) from None
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            raise _Retry(f"controller unreachable: {err}") from None


class _Retry(Exception):
    def __init__(self, message: str, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after


def _error_message(err: urllib.error.HTTPError) -> str:
    try:
        body = err.read()
        return str(json.loads(body).get("error", body[:300]))
    except Exception:
        return err.reason if isinstance(err.reason, str) else str(err)


def _retry_after(err: urllib.error.HTTPError) -> float | None:
    value = err.headers.get("Retry-After") if err.headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def decision_of(answer: dict[str, Any]) -> Any:
    """The decision in an answer (None when the report asked for none)."""
    data = answer.get("decision")
    return None if data is None else base.decision_from_dict(data)


class HTTPCoordinator:
    """PBT's ``Coordinator`` over the report channel: the controller hosts the population.

    ``trained_steps`` reports how many steps this member has trained in all its pods so far
    (the search's cost), read from the member loop when each report is sent. ``pinned`` holds,
    as of the last answer, this member's checkpoints that another member's start point names
    (its ``keep`` list): the member loop's rotation must not delete them.
    """

    def __init__(
        self,
        client: ReportClient,
        *,
        trained_steps: Callable[[], int] = lambda: 0,
        attempt: int | None = None,
    ) -> None:
        self.client = client
        self.trained_steps = trained_steps
        self.attempt = attempt
        self._step = 0
        self.pinned: set[str] = set()

    def report(
        self,
        member: int,
        step: int,
        objective: float,
        checkpoint_path: str | None,
        config: dict[str, float] | None = None,
    ) -> base.PBTDecision:
        self._step = step
        report = channel.Report(
            member=member,
            kind="checkpoint",
            step=step,
            objective=objective,
            checkpoint_path=checkpoint_path,
            config=config,
            member_steps=self.trained_steps(),
            attempt=self.attempt,
        )
        return pbt_coordinator.loadable(self._decision(report), self.restart_point)

    def poll(self, member: int) -> base.PBTDecision:
        decision = self._decision(channel.Report(member=member, kind="poll", step=self._step))
        return pbt_coordinator.loadable(decision, self.restart_point)

    def restart_point(self, member: int) -> pbt_coordinator.StartPoint:
        """The coordinator's restart point: the file this member's start point names is gone.
        Raises :class:`MemberStopped` when the controller says this member trains no more."""
        answer = self.client.send(channel.Report(member=member, kind="restart", step=self._step))
        if answer.get("start") is None:
            decision = decision_of(answer)
            reason = decision.reason if isinstance(decision, base.Stop) else repr(decision)
            raise MemberStopped(f"member {member}: {reason}")
        try:
            start = pbt_coordinator.StartPoint.from_dict(answer["start"])
        except ValueError as err:
            raise ReportRejected(200, f"answer.{err}") from None
        self._step = start.step
        return start

    def finish(self, member: int, step: int) -> None:
        report = channel.Report(
            member=member, kind="final", step=step, member_steps=self.trained_steps()
        )
        self.client.send(report)

    def _decision(self, report: channel.Report) -> base.PBTDecision:
        answer = self.client.send(report)
        if "keep" in answer:  # updated in place: the member loop holds this very set
            self.pinned.clear()
            self.pinned.update(str(path) for path in answer["keep"])
        decision = decision_of(answer)
        if decision is None:
            return base.Continue()
        if not isinstance(decision, base.Continue | base.Exploit | base.Stop | base.Wait):
            raise ReportRejected(200, f"not a PBT decision: {decision!r}")
        return decision
