"""The contract between the controller and its trainer pods: environment and report channel.

The controller starts each member pod with the environment variables named here, and the pod
talks back over HTTP: ``POST {reportURL}/v1/namespaces/{ns}/schedulesearches/{name}/reports``
with ``Authorization: Bearer <token>`` (the per-search Secret) and an ``Idempotency-Key`` header
equal to :meth:`Report.key`. The answer is ``{"decision": <decision or null>, "duplicate": bool}``
where the decision is :func:`schedsearch.trainers.strategies.base.decision_to_dict` data. A PBT
member's answers also carry ``"keep"``: its checkpoint paths that another member's start point
names (that member was told to copy one), which its checkpoint rotation must not delete.

Idempotency: each member numbers its reports (``seq``, 1, 2, ...; a replacement pod continues
from ``SCHEDSEARCH_REPORT_SEQ``, the last number the controller applied). The key is
``<member>:<seq>``: a retry carries the same number and gets the stored answer; a number at or
below the last applied one that is not that retry is stale (a pod that should no longer exist)
and is refused with 409. The step cannot be the key: a PBT member that copies another member
goes back to that member's step and reaches the same step numbers again.

Both sides import this module, so a field renamed here is renamed for both. It imports nothing
from the controller or Kubernetes: trainers run inside the pods.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args
from urllib.parse import quote

from schedsearch.trainers.strategies.registry import StrategyName

# -- environment a member pod is started with ------------------------------------------------
ENV_SEARCH = "SCHEDSEARCH_SEARCH"
ENV_NAMESPACE = "SCHEDSEARCH_NAMESPACE"
ENV_SEARCH_UID = "SCHEDSEARCH_SEARCH_UID"
ENV_ROLE = "SCHEDSEARCH_ROLE"
ENV_MEMBER = "SCHEDSEARCH_MEMBER"
ENV_ATTEMPT = "SCHEDSEARCH_ATTEMPT"
ENV_SPEC = "SCHEDSEARCH_SPEC"
# Where a PBT member (re)starts: {"config": {...}, "step": n, "checkpoint": path|null,
# "memberSteps": k} - its last checkpoint, or the one it was last told to exploit.
ENV_MEMBER_START = "SCHEDSEARCH_MEMBER_START"
# What the control run's pod trains: {"found": schedule, "base": schedule, "seed": n}, the
# schedules as ``Schedule.to_dict()`` data.
ENV_CONTROL = "SCHEDSEARCH_CONTROL"
ENV_CHECKPOINT_DIR = "SCHEDSEARCH_CHECKPOINT_DIR"
ENV_REPORT_URL = "SCHEDSEARCH_REPORT_URL"
ENV_REPORT_TOKEN = "SCHEDSEARCH_REPORT_TOKEN"
ENV_REPORT_SEQ = "SCHEDSEARCH_REPORT_SEQ"
# Key of the token in the per-search Secret.
TOKEN_KEY = "token"
# A pod exits with this code when its spec cannot run (unknown workload, bad entrypoint): the
# controller does not retry it (sysexits' EX_CONFIG).
EXIT_CONFIG = 78

# The strategies' roles (their names), and the control run that trains the found and the base
# schedule.
Role = StrategyName | Literal["control"]
ROLES: tuple[str, ...] = (*get_args(StrategyName), "control")
ReportKind = Literal["checkpoint", "poll", "restart", "final", "fatal", "control"]
REPORT_KINDS: tuple[str, ...] = get_args(ReportKind)
IDEMPOTENCY_HEADER = "Idempotency-Key"
API_VERSION = "v1"


def reports_path(namespace: str, search: str) -> str:
    """The URL path reports of one search are posted to."""
    return (
        f"/{API_VERSION}/namespaces/{quote(namespace, safe='')}"
        f"/schedulesearches/{quote(search, safe='')}/reports"
    )


class ReportError(ValueError):
    """A report body that does not follow the contract; the message names the field."""


class StaleReport(ReportError):
    """A report numbered at or below the member's last applied one, and not its retry."""


@dataclass(frozen=True)
class Report:
    """One message from a member pod.

    * ``checkpoint``: the member saved ``checkpoint_path`` at ``step`` with ``objective``
      (None = diverged); a PBT member gets its Continue/Exploit/Stop/Wait decision back.
    * ``poll``: a PBT member told to Wait asks again.
    * ``restart``: the checkpoint a PBT member's start point names is gone; the answer's
      ``start`` is where it resumes instead (its lineage re-recorded to match).
    * ``final``: the member trained its whole budget; AutoLRS and HDET rank 0 attach ``result``
      (``SearchResult.to_dict()``).
    * ``fatal``: the member cannot run this spec (``reason`` CamelCase, ``message`` for people);
      the controller fails the search instead of retrying (a control run's ``fatal`` ends only
      the control: the search succeeds without it).
    * ``control``: the control run trained both schedules; ``result`` is
      ``ControlResult.to_dict()`` (non-finite objectives as null), ``member_steps`` its cost.
    """

    member: int
    kind: ReportKind
    step: int = 0
    seq: int = 0
    objective: float | None = None
    checkpoint_path: str | None = None
    config: dict[str, float] | None = None
    member_steps: int | None = None
    result: dict[str, Any] | None = None
    reason: str | None = None
    message: str | None = None
    attempt: int | None = field(default=None, compare=False)

    def key(self) -> str:
        """The idempotency key: a retried report carries the same key and is applied once."""
        return f"{self.member}:{self.seq}"

    def diverged(self) -> bool:
        return self.objective is None or not math.isfinite(self.objective)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "member": self.member,
            "kind": self.kind,
            "step": self.step,
            "seq": self.seq,
        }
        optional = {
            "objective": _finite_or_none(self.objective),
            "checkpointPath": self.checkpoint_path,
            "config": self.config,
            "memberSteps": self.member_steps,
            "result": self.result,
            "reason": self.reason,
            "message": self.message,
            "attempt": self.attempt,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        return data

    @classmethod
    def from_json(cls, data: Any) -> Report:
        """Parse and check a report body; raises :class:`ReportError` naming the bad field."""
        if not isinstance(data, Mapping):
            raise ReportError(f"body: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise ReportError(f"{unknown[0]}: unknown field; allowed: {', '.join(sorted(_FIELDS))}")
        kind = data.get("kind")
        if kind not in REPORT_KINDS:
            raise ReportError(f"kind: must be one of {', '.join(REPORT_KINDS)}, got {kind!r}")
        return cls(
            member=_int(data, "member", required=True),
            kind=kind,
            step=_int(data, "step"),
            seq=_int(data, "seq", required=True),
            objective=_number(data, "objective"),
            checkpoint_path=_string(data, "checkpointPath", 4096),
            config=_config(data),
            member_steps=_optional_int(data, "memberSteps"),
            result=_object(data, "result"),
            reason=_string(data, "reason", 256),
            message=_string(data, "message", 4096),
            attempt=_optional_int(data, "attempt"),
        )


_FIELDS = frozenset(
    {
        "member",
        "kind",
        "step",
        "seq",
        "objective",
        "checkpointPath",
        "config",
        "memberSteps",
        "result",
        "reason",
        "message",
        "attempt",
    }
)


def _finite_or_none(value: float | None) -> float | None:
    # JSON has no NaN: a diverged objective travels as null.
    return value if value is not None and math.isfinite(value) else None


def _int(data: Mapping[str, Any], name: str, *, required: bool = False) -> int:
    value = data.get(name)
    if value is None and not required:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReportError(f"{name}: must be an integer >= 0, got {value!r}")
    return value


def _optional_int(data: Mapping[str, Any], name: str) -> int | None:
    return None if data.get(name) is None else _int(data, name)


def _number(data: Mapping[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReportError(f"{name}: must be a number or null, got {value!r}")
    return float(value)


def _string(data: Mapping[str, Any], name: str, max_length: int) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_length:
        raise ReportError(f"{name}: must be a string of at most {max_length} characters")
    return value


def _object(data: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ReportError(f"{name}: must be a JSON object")
    return dict(value)


def _config(data: Mapping[str, Any]) -> dict[str, float] | None:
    value = _object(data, "config")
    if value is None:
        return None
    out: dict[str, float] = {}
    for key, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise ReportError(f"config.{key}: must be a number, got {number!r}")
        out[str(key)] = float(number)
    return out
