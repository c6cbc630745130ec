"""What the controller knows of the cluster without asking: the searches and the objects they
own, kept current by watches, read by every reconcile pass.

Objects are the API's own JSON dicts. Owned objects (pods, Services, ConfigMaps, LRSchedules,
and the token Secrets the controller created or read by name) are filed under the search named
by their ``schedsearch.io/search`` label, so :meth:`Store.owned` answers "everything of this
kind for that search" without a list request.

Three writers feed the store, and it must not matter in which order they arrive:

* watch events (``apply_event``);
* a full list (``replace``), at start and on every resync: it also forgets objects deleted while
  a watch was reconnecting, which a stream of events alone never says;
* the controller's own writes (``put``): the API's answer to a create or patch is filed at
  once, so the next pass sees what it just did instead of doing it again. They queue nothing:
  the reconcile that wrote plans again at once, and the report channel queues its search
  itself (a reconcile more per write would only find what the writer knew). The watch often
  brings the same object before the answer does: while a write is in flight (``writing``), a
  watch event of that object files it without queueing, and when the write ends its search is
  queued only if the watch brought a version other than the writes' own (someone else's
  change, before or after them), or a write got no answer.

An object is only ever replaced by a newer version (by ``resourceVersion``), so a late event or
a list that started before a write never rolls the store back.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NewType

from schedsearch.controller import names

JsonObj = dict[str, Any]
Kind = NewType("Kind", str)
SEARCHES = Kind("schedulesearches")
PODS = Kind("pods")
SERVICES = Kind("services")
SECRETS = Kind("secrets")
CONFIGMAPS = Kind("configmaps")
SCHEDULES = Kind("lrschedules")
SearchKey = tuple[str, str]  # namespace, name


@dataclass(frozen=True)
class _Slot:
    """Where an object is filed: its search (None for searches themselves) and version."""

    search: str | None
    uid: str
    version: str


def newer(candidate: str, current: str) -> bool:
    """Whether ``candidate`` is a later resourceVersion than ``current``.

    Versions are opaque to clients, but every API server numbers them from etcd's revision;
    when either is not a number the candidate wins (the API's latest word).
    """
    if candidate.isdigit() and current.isdigit():
        return int(candidate) > int(current)
    return candidate != current


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def search_of(kind: Kind, obj: Mapping[str, Any]) -> str | None:
    """The search an owned object is filed under: its search label."""
    if kind == SEARCHES:
        return None
    return (_meta(obj).get("labels") or {}).get(names.LABEL_SEARCH)


class Store:
    """Thread-safe: the event loop files events while reconcile threads read."""

    def __init__(self, on_change: Callable[[str, str], None] = lambda ns, name: None) -> None:
        # (kind, namespace, name) -> object, and where it is filed.
        self._objects: dict[tuple[Kind, str, str], JsonObj] = {}
        self._slots: dict[tuple[Kind, str, str], _Slot] = {}
        # (kind, namespace, search) -> names of the objects it owns.
        self._by_search: dict[tuple[Kind, str, str], set[str]] = {}
        # Deleted objects: (kind, namespace, name) -> (uid, resourceVersion) of the deletion, so
        # that a list which started before the deletion does not bring them back.
        self._gone: dict[tuple[Kind, str, str], tuple[str, str]] = {}
        # Objects this process is writing: how many writes are in flight, the versions a watch
        # brought meanwhile (their search not queued yet) and the versions the writes made.
        self._writing: dict[tuple[Kind, str, str], int] = {}
        self._held: dict[tuple[Kind, str, str], set[str]] = {}
        self._own: dict[tuple[Kind, str, str], set[str]] = {}
        self._lock = threading.Lock()
        self.on_change = on_change

    # -- reading ---------------------------------------------------------------------------------

    def search(self, namespace: str, name: str) -> JsonObj | None:
        with self._lock:
            return self._objects.get((SEARCHES, namespace, name))

    def searches(self) -> list[SearchKey]:
        with self._lock:
            return [(ns, name) for kind, ns, name in self._objects if kind == SEARCHES]

    def owned(self, kind: Kind, namespace: str, search: str) -> list[JsonObj]:
        """The objects of ``kind`` labelled with ``search`` (owned by it or by an earlier search
        of that name: the caller checks owner references)."""
        with self._lock:
            found = self._by_search.get((kind, namespace, search), set())
            return [self._objects[(kind, namespace, name)] for name in sorted(found)]

    def get(self, kind: Kind, namespace: str, name: str) -> JsonObj | None:
        with self._lock:
            return self._objects.get((kind, namespace, name))

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    # -- writing ---------------------------------------------------------------------------------

    def apply_event(self, kind: Kind, event_type: str | None, obj: JsonObj) -> None:
        """A watch event (``type`` None: an object of an initial listing)."""
        if event_type == "DELETED":
            self.delete(kind, obj)
        else:
            self.put(kind, obj)

    def put(self, kind: Kind, obj: JsonObj, *, wake: bool = True) -> None:
        """File ``obj`` unless the store already holds it at this or a later version; ``wake``
        False files it without queueing its search (the controller's own writes)."""
        meta = _meta(obj)
        if not meta.get("name"):
            return  # not an object (a Status, or a test double's answer)
        key = (kind, str(meta.get("namespace", "")), str(meta["name"]))
        with self._lock:
            touched = self._put(key, kind, obj)
            if key in self._writing:
                version = str(meta.get("resourceVersion", ""))
                if not wake:
                    self._own.setdefault(key, set()).add(version)
                elif touched is not None:
                    self._held.setdefault(key, set()).add(version)
                    touched = None  # decided when the write ends
        if wake:
            self._notify([touched])

    @contextlib.contextmanager
    def writing(self, kind: Kind, namespace: str, name: str) -> Iterator[None]:
        """This process writes that object meanwhile (and files the answer with ``put(...,
        wake=False)``): its own change coming back through the watch queues nothing."""
        key = (kind, namespace, name)
        with self._lock:
            self._writing[key] = self._writing.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._writing.pop(key) - 1
                touched = None
                if left:
                    self._writing[key] = left
                else:
                    held, own = self._held.pop(key, set()), self._own.pop(key, set())
                    slot = self._slots.get(key)
                    # Any version but the writes' own is a change this process did not make.
                    if held - own and slot is not None:
                        touched = self._touched(key, slot.search)
            self._notify([touched])

    def delete(self, kind: Kind, obj: JsonObj) -> None:
        """Forget ``obj`` (a DELETED event, or a delete the API answered with the object gone)."""
        meta = _meta(obj)
        key = (kind, str(meta.get("namespace", "")), str(meta.get("name", "")))
        uid, version = str(meta.get("uid", "")), str(meta.get("resourceVersion", ""))
        with self._lock:
            slot = self._slots.get(key)
            # A newer object of that name (created after this one went) stays.
            if slot is not None and slot.uid != uid and newer(slot.version, version):
                return
            self._gone[key] = (uid, version)
            touched = self._remove(key)
        self._notify([touched])

    def replace(
        self, kind: Kind, namespace: str | None, listed: Iterable[JsonObj], version: str
    ) -> None:
        """A full list of ``kind`` (in ``namespace``, or everywhere for None) at ``version``:
        file what it holds and forget what it does not, unless the store saw that object change
        after the list was taken."""
        touched: list[SearchKey | None] = []
        seen: set[tuple[Kind, str, str]] = set()
        with self._lock:
            for obj in listed:
                meta = _meta(obj)
                key = (kind, str(meta.get("namespace", "")), str(meta["name"]))
                seen.add(key)
                touched.append(self._put(key, kind, obj))
            for key, slot in list(self._slots.items()):
                in_scope = key[0] == kind and (namespace is None or key[1] == namespace)
                if in_scope and key not in seen and not newer(slot.version, version):
                    touched.append(self._remove(key))
            self._gone = {k: v for k, v in self._gone.items() if newer(v[1], version)}
        self._notify(touched)

    def _deleted_since(self, key: tuple[Kind, str, str], meta: Mapping[str, Any]) -> bool:
        """Whether this version of an object is known to be deleted: a list taken before the
        deletion, or the answer to our own delete arriving after the deletion's watch event."""
        gone = self._gone.get(key)
        if gone is None or gone[0] != meta.get("uid"):
            return False
        return not newer(str(meta.get("resourceVersion", "")), gone[1])

    def _put(self, key: tuple[Kind, str, str], kind: Kind, obj: JsonObj) -> SearchKey | None:
        """File ``obj``; returns the search to look at again (None: nothing changed)."""
        meta = _meta(obj)
        version = str(meta.get("resourceVersion", ""))
        slot = self._slots.get(key)
        if slot is not None and version and not newer(version, slot.version):
            return None
        if self._deleted_since(key, meta):
            return None
        search = search_of(kind, obj)
        if slot is not None and slot.search != search:
            self._remove(key)
        self._objects[key] = obj
        self._slots[key] = _Slot(search, str(meta.get("uid", "")), version)
        if search is not None:
            self._by_search.setdefault((kind, key[1], search), set()).add(key[2])
        return self._touched(key, search)

    def _remove(self, key: tuple[Kind, str, str]) -> SearchKey | None:
        slot = self._slots.pop(key, None)
        if slot is None:
            return None
        self._objects.pop(key, None)
        if slot.search is not None:
            filed = self._by_search.get((key[0], key[1], slot.search))
            if filed is not None:
                filed.discard(key[2])
                if not filed:
                    del self._by_search[(key[0], key[1], slot.search)]
        return self._touched(key, slot.search)

    def _touched(self, key: tuple[Kind, str, str], search: str | None) -> SearchKey | None:
        """The search to look at again after the object at ``key``, filed under ``search``,
        changed: the search itself, or the one that owns it, if the store holds that one.
        (Called with the lock held.) A change to an object of a search the store does not hold
        has nothing to reconcile: its search's arrival queues it, and its deletion queued it
        already (the pods and state of a deleted search go after it, each a watch event)."""
        kind, namespace, name = key
        if kind == SEARCHES:
            return namespace, name
        if search is None or (SEARCHES, namespace, search) not in self._objects:
            return None
        return namespace, search

    def _notify(self, touched: Iterable[SearchKey | None]) -> None:
        # Outside the lock: the callback enqueues, and may read the store.
        for search in dict.fromkeys(t for t in touched if t is not None):
            self.on_change(*search)
