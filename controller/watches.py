"""The watches that keep ``controller.cache`` current: one HTTP watch stream per watched kind and
namespace (or one per kind, cluster-wide), each event filed into the store as it comes.

A stream starts from the resourceVersion of a list of its kind (``Kube.relist``, which fills the
store), so nothing that changed between the list and the watch is missed. It follows the
versions its events and bookmarks bring, and when the API server ends it (``timeoutSeconds``)
or the connection drops, it watches again from the last one. A version the API server no
longer holds (410 Gone, "too old resource version") means events were lost: the kind is listed
again, which also forgets what was deleted meanwhile. Failures in a row wait longer each time,
with jitter and a cap, so a restarting API server is not met by every stream at once.

Owned kinds are watched with a server-side label selector (``schedsearch.io/search``), so the
API server sends only the objects of searches, not every pod and ConfigMap of the namespace; the
searches themselves with the shard selector, when there is one. Secrets are not watched: the
controller may read its tokens by name but never list Secrets (see ``Kube.observe``).

The streams are aiohttp requests, one connection each, with the kubeconfig's TLS settings and
the token ``kube.Rest`` sends. Each connection takes one token of the client-side rate limit;
the events it brings take none. They are not counted in the request metrics (watches aside).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes import client as k8s

from schedsearch.api.spec import API_GROUP, API_VERSION_NAME
from schedsearch.controller import cache, kube, names, workqueue

log = logging.getLogger(__name__)

# Each watched kind: its API group and version (the kind names are the API's plurals).
WATCHED: dict[cache.Kind, tuple[str, str]] = {
    cache.SEARCHES: (API_GROUP, API_VERSION_NAME),
    cache.PODS: ("", "v1"),
    cache.SERVICES: ("", "v1"),
    cache.CONFIGMAPS: ("", "v1"),
    cache.SCHEDULES: (API_GROUP, API_VERSION_NAME),
}
# The API server ends each stream after a random time in [1, 2) times this (client-go's choice:
# streams started together do not all come back together).
WATCH_SECONDS = 300
# A stream that brought nothing for this long past its own timeout is dead (a lost connection
# a closed socket never reported).
READ_MARGIN_SECONDS = 30.0
CONNECT_SECONDS = kube.TIMEOUT[0]
BACKOFF = (0.25, 10.0)  # first and longest wait after failures in a row (before jitter)


def selector(kind: cache.Kind, shard: str | None) -> str:
    """The label selector ``kind`` is listed and watched with ("" for none)."""
    if kind == cache.SEARCHES:
        return shard or ""
    return names.LABEL_SEARCH


@dataclass(frozen=True)
class Target:
    """What one stream watches: a kind, in a namespace (None: all of them), by labels."""

    kind: cache.Kind
    namespace: str | None
    labels: str

    def __str__(self) -> str:
        return f"{self.kind} in {self.namespace or 'every namespace'}"


def targets(namespaces: Sequence[str | None], shard: str | None) -> list[Target]:
    """One target per watched kind and namespace (``[None]``: cluster-wide)."""
    return [Target(kind, where, selector(kind, shard)) for kind in WATCHED for where in namespaces]


class Gone(Exception):
    """The API server no longer holds the version a stream asked to start from."""


class Streams:
    """Opens watch streams on the API server ``rest`` talks to, as ``rest`` would connect."""

    def __init__(self, rest: kube.Rest, session: aiohttp.ClientSession) -> None:
        self.rest = rest
        self.session = session
        config = rest.client.configuration
        self.host = str(config.host).rstrip("/")
        self._request_options: dict[str, Any] = {}
        if getattr(config, "tls_server_name", None):
            self._request_options["server_hostname"] = config.tls_server_name
        if getattr(config, "proxy", None):
            self._request_options["proxy"] = config.proxy
            self._request_options["proxy_headers"] = getattr(config, "proxy_headers", None)

    @classmethod
    def session_for(cls, configuration: k8s.Configuration) -> aiohttp.ClientSession:
        """A session with the configuration's TLS settings, one connection per stream (no
        pool limit), and no overall timeout (a stream lasts until the server ends it)."""
        connector = aiohttp.TCPConnector(ssl=ssl_context(configuration), limit=0)
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=CONNECT_SECONDS,
            sock_read=2 * WATCH_SECONDS + READ_MARGIN_SECONDS,
        )
        return aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def events(self, target: Target, version: str) -> AsyncGenerator[dict[str, Any], None]:
        """The events of ``target`` after ``version``, parsed, until the server ends the stream.

        Raises :class:`kube.ApiError` for an error answer (410 as :class:`Gone`)."""
        query = {
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(random.randint(WATCH_SECONDS, 2 * WATCH_SECONDS - 1)),
        }
        if target.labels:
            query["labelSelector"] = target.labels
        if self.rest.limiter is not None:
            await asyncio.sleep(self.rest.limiter.reserve())
        url = self.host + kube.collection(target.kind, target.namespace)
        headers = self.rest.headers()
        async with self.session.get(
            url, params=query, headers=headers, **self._request_options
        ) as response:
            if response.status >= 400:
                message, reason = kube.status_message(await response.read())
                if response.status == 410:
                    raise Gone(message)
                raise kube.ApiError(response.status, message, reason)
            async for line in _lines(response.content):
                yield json.loads(line)


async def _lines(content: aiohttp.StreamReader) -> AsyncGenerator[bytearray, None]:
    """The non-empty lines of a stream, however its chunks cut them (no length limit: a
    ConfigMap of a search's state may be a MiB on one line)."""
    pending = bytearray()
    async for chunk in content.iter_any():
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            pending += chunk[start:end]
            if pending.strip():
                yield pending
            pending = bytearray()
            start = end + 1
        pending += chunk[start:]
    if pending.strip():
        yield pending


def ssl_context(configuration: k8s.Configuration) -> ssl.SSLContext | bool:
    """TLS as the official client sets up its connections from a kubeconfig: the CA, a client
    certificate, and whether to check the server's certificate and name."""
    if not str(configuration.host).startswith("https"):
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif configuration.assert_hostname is False:
        context.check_hostname = False
    return context


Lister = Callable[[Target], Awaitable[str]]


class Watch:
    """Keeps the store current with one target: list, then watch from there, for good."""

    def __init__(
        self,
        target: Target,
        *,
        store: cache.Store,
        streams: Streams,
        lister: Lister,
        backoff: tuple[float, float] = BACKOFF,
    ) -> None:
        self.target = target
        self.store = store
        self.streams = streams
        self.lister = lister
        self.version = ""  # the last version this stream's kind was seen at
        self._started = False  # whether the current stream brought an event yet
        self._backoff: workqueue.Backoff[Target] = workqueue.Backoff(*backoff)

    async def run(self) -> None:
        """List, then watch; never returns (cancel it to stop)."""
        await self._list()
        relisted = False  # the version watched from is that of a list made after a 410
        while True:
            try:
                brought = await self._follow()
            except Gone as err:
                log.info("watching %s: %s; listing it again", self.target, err)
                if relisted and not self._started:
                    # The new list's version refused at once too: not again in a tight loop.
                    await asyncio.sleep(self._delay())
                await self._list()
                relisted = True
            except (
                aiohttp.ClientError,
                OSError,
                asyncio.TimeoutError,
                kube.ApiError,
                ValueError,
            ) as err:
                # Dropped, refused, or an ERROR event: again from the last version, after a wait.
                delay = self._delay()
                log.warning("watching %s: %s (again in %.1fs)", self.target, _why(err), delay)
                await asyncio.sleep(delay)
            else:
                if not brought:
                    # Ended with nothing (a misbehaving server or proxy, if at once): again
                    # after the wait a failure would have, not in a tight loop.
                    await asyncio.sleep(self._delay())
                # The server ended a working stream (its timeout): again at once.
            if self._started:
                relisted = False

    async def _list(self) -> None:
        while True:
            try:
                self.version = await self.lister(self.target)
            except Exception as err:
                delay = self._delay()
                log.warning("listing %s: %s (again in %.1fs)", self.target, err, delay)
                await asyncio.sleep(delay)
            else:
                return  # the wait starts over once a stream brings an event

    async def _follow(self) -> bool:
        """Follow one stream until the server ends it; whether it brought any event."""
        kind, store = self.target.kind, self.store
        self._started = False
        # Closed at once when an event raises: its connection goes then, not when collected.
        async with contextlib.aclosing(self.streams.events(self.target, self.version)) as events:
            async for event in events:
                what = event.get("type")
                obj = event.get("object") or {}
                if what == "ERROR":
                    raise _error(obj)
                if not self._started:  # the stream works: its next failure waits the least again
                    self._backoff.forget(self.target)
                    self._started = True
                if what != "BOOKMARK":  # a bookmark only moves the version on
                    store.apply_event(kind, what, obj)
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    self.version = str(version)
        return self._started

    def _delay(self) -> float:
        delay = self._backoff.next(self.target)
        return random.uniform(delay / 2, delay)


def _error(status: dict[str, Any]) -> Exception:
    """An ERROR event's Status as an exception: :class:`Gone` for an expired version."""
    message = str(status.get("message", status))
    if status.get("code") == 410 or status.get("reason") in ("Expired", "Gone"):
        return Gone(message)
    return kube.ApiError(int(status.get("code") or 500), message, str(status.get("reason") or ""))


def _why(err: BaseException) -> str:
    return str(err) or type(err).__name__


def lister(api: kube.Kube) -> Lister:
    """Lists a target into ``api``'s store (in a thread: the client blocks) and returns the
    list's resourceVersion."""

    async def listed(target: Target) -> str:
        _, version = await asyncio.to_thread(
            api.relist, target.kind, target.namespace, target.labels
        )
        return version

    return listed


async def watch(api: kube.Kube, namespaces: Sequence[str | None], shard: str | None) -> None:
    """Keep ``api``'s store current with every watched kind in ``namespaces`` (``[None]``:
    cluster-wide) until cancelled."""
    session = Streams.session_for(api.rest.client.configuration)
    try:
        streams = Streams(api.rest, session)
        found = [
            Watch(target, store=api.store, streams=streams, lister=lister(api))
            for target in targets(namespaces, shard)
        ]
        await asyncio.gather(*(w.run() for w in found))
    finally:
        await session.close()
