"""The watches that keep ``controller.cache`` current: kopf streams each kind into the store.

Kopf lists, watches, reconnects and backs off; its handlers here only file each event. Owned
kinds are watched with a server-side label selector (``schedsearch.io/search``), so the API
server sends only the objects of searches, not every pod and ConfigMap of the namespace; the
searches themselves with the shard selector, when there is one. Kopf never writes here (no
handler of ours needs a finalizer or its bookkeeping), except to remove the finalizer that
controllers before the cache put on searches. Secrets are not watched: the controller may read
its tokens by name but never list Secrets (see ``Kube.observe``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf

from schedsearch.api.spec import API_GROUP, API_VERSION_NAME
from schedsearch.controller import cache, names

# Each watched kind: its API group and version (the kind names are the API's plurals).
WATCHED: dict[cache.Kind, tuple[str, str]] = {
    cache.SEARCHES: (API_GROUP, API_VERSION_NAME),
    cache.PODS: ("", "v1"),
    cache.SERVICES: ("", "v1"),
    cache.CONFIGMAPS: ("", "v1"),
    cache.SCHEDULES: (API_GROUP, API_VERSION_NAME),
}
# Earlier controllers' finalizer: kopf removes it from searches, since nothing here needs it.
FINALIZER = f"{API_GROUP}/controller"


def selector(kind: cache.Kind, shard: str | None) -> str:
    """The label selector ``kind`` is listed and watched with ("" for none)."""
    if kind == cache.SEARCHES:
        return shard or ""
    return names.LABEL_SEARCH


def registry(store: cache.Store) -> kopf.OperatorRegistry:
    """Kopf's handlers: log in with the Kubernetes client, file every event of every kind."""
    found = kopf.OperatorRegistry()

    @kopf.on.login(registry=found)
    def login(**kwargs: object) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)  # type: ignore[arg-type]

    for kind, (group, version) in WATCHED.items():
        _file_events(found, store, kind, group, version)
    return found


def _file_events(
    found: kopf.OperatorRegistry, store: cache.Store, kind: cache.Kind, group: str, version: str
) -> None:
    async def on_event(event: kopf.RawEvent, **_: Any) -> None:
        # Async: it runs in kopf's loop at once, not in a thread pool, and is only a dict update.
        store.apply_event(kind, event.get("type"), dict(event["object"]))

    kopf.on.event(group=group, version=version, plural=kind, registry=found, id=f"cache-{kind}")(
        on_event
    )


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf builds a diff base (a deep copy of the object) on every event, for handlers that
    react to changes of fields; ours only file events, so there is no base to build or keep.
    Built, it was a tenth of the controller's CPU while 100 new searches got their pods."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def operator_settings(level: str, *, shard: str | None) -> kopf.OperatorSettings:
    config = kopf.OperatorSettings()
    config.persistence.finalizer = FINALIZER
    config.persistence.diffbase_storage = NoDiffBase()
    for kind, (group, version) in WATCHED.items():
        labels = selector(kind, shard)
        if labels:
            config.watching.label_selectors[(f"{group}/{version}" if group else version, kind)] = (
                labels
            )
    # We post our own Events; kopf's would turn every log line into one.
    config.posting.enabled = False
    config.posting.level = logging.getLevelName(level.upper())
    return config
