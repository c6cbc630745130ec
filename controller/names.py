"""Deterministic names and labels of everything the controller creates for a search.

Names are functions of the search name (and member index) only, so a restarted controller finds
the objects its predecessor created, and a create that races with an earlier one fails with 409
instead of making a duplicate.
"""

from __future__ import annotations

import hashlib
import re
from typing import NewType

SearchName = NewType("SearchName", str)
Namespace = NewType("Namespace", str)

GROUP = "schedsearch.io"
LABEL_SEARCH = f"{GROUP}/search"
LABEL_ROLE = f"{GROUP}/role"
LABEL_MEMBER = f"{GROUP}/member"
LABEL_WORKLOAD = f"{GROUP}/workload"
LABEL_STRATEGY = f"{GROUP}/strategy"
ANNOTATION_ATTEMPT = f"{GROUP}/attempt"
# The finalizer controllers before the cache put on searches; nothing needs it now, and a search
# that still carries it could not be deleted: the reconciler takes it off (``Kube.drop_finalizer``).
FORMER_FINALIZER = f"{GROUP}/controller"
MANAGED_BY = {
    "app.kubernetes.io/managed-by": "schedsearch",
    "app.kubernetes.io/part-of": "schedsearch",
}

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def member_pod(search: str, role: str, member: int) -> str:
    """``<search>-<role>-<i>``: one pod per member (PBT), replica (HDET) or trainer (AutoLRS)."""
    return f"{search}-{role}-{member}"


def control_pod(search: str) -> str:
    """``<search>-control``: the pod of the control run (found vs base schedule, fresh seed)."""
    return f"{search}-control"


def token_secret(search: str) -> str:
    """The Secret holding the bearer token the search's pods report with."""
    return f"{search}-report-token"


def state_configmap(search: str) -> str:
    """The ConfigMap holding the search's durable state (members' progress, PBT population)."""
    return f"{search}-state"


def replica_service(search: str, role: str) -> str:
    """The headless Service giving a replica set's pods DNS names (rank 0 is the rendezvous)."""
    return dns_label(f"{search}-{role}")


def replica_hostname(search: str, role: str, rank: int) -> str:
    """A replica's hostname under the headless Service (a DNS label, unlike pod names)."""
    return dns_label(member_pod(search, role, rank))


def dns_label(base: str) -> str:
    """``base`` if it is a DNS-1035 label (Service names, hostnames), else a stable short form.

    Search names are DNS-1123 labels: they may start with a digit or, with a suffix, pass 63
    characters; a hash of the full name keeps the short form unique.
    """
    if len(base) <= 63 and _DNS1035.match(base):
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    head = re.sub(r"[^-a-z0-9]", "-", base.lower())[: 63 - len(digest) - 3].strip("-")
    return f"s-{head}-{digest}" if head else f"s-{digest}"


def selector(search: str) -> str:
    """Label selector of all the search's pods and Services."""
    return f"{LABEL_SEARCH}={search}"


def labels(search: str, **extra: str) -> dict[str, str]:
    return {**MANAGED_BY, LABEL_SEARCH: search, **extra}
