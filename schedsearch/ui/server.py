"""The web server of ``schedsearch ui``: the page's files and its JSON, read-only.

aiohttp serves a single page (``static/``) and a small JSON API over one ``ResultsBackend``.
The backend's reads block (SQLite, the Kubernetes client), so they run one at a time on a worker
thread: the event loop stays free, and a backend never sees two calls at once. Only GET is
routed; nothing can change results through the server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from schedsearch.cli.export import FORMATS
from schedsearch.store import NotFoundError, ResultsBackend, StoreError
from schedsearch.ui import data

STATIC = Path(__file__).resolve().parent / "static"
BACKEND_KEY = web.AppKey("backend", ResultsBackend)
WHERE_KEY = web.AppKey("where", str)
EXECUTOR_KEY = web.AppKey("executor", ThreadPoolExecutor)
log = logging.getLogger(__name__)
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(backend: ResultsBackend, *, where: str, local_only: bool = True) -> web.Application:
    """The application over ``backend``; ``where`` names it on the page (a store's path, a
    cluster's namespace). ``local_only``: answer only requests addressed to this machine by a
    loopback name, so that no web page elsewhere can read results through a name of its own that
    resolves to 127.0.0.1 (DNS rebinding)."""
    middlewares = [_loopback_names_only] if local_only else []
    app = web.Application(middlewares=[*middlewares, _errors_as_json])
    app[BACKEND_KEY] = backend
    app[WHERE_KEY] = where
    app[EXECUTOR_KEY] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="schedsearch-ui")
    app.on_cleanup.append(_stop_executor)
    app.router.add_get("/", _index)
    app.router.add_get("/api/info", _info)
    app.router.add_get("/api/searches", _searches)
    app.router.add_get("/api/searches/{name}", _search)
    app.router.add_get("/api/searches/{name}/baseline", _baseline)
    app.router.add_get("/api/searches/{name}/download", _download)
    app.router.add_get("/api/schedules", _schedules)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    return app


def url_of(host: str, port: int) -> str:
    """``http://HOST:PORT/`` (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (a loopback address or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Listen on ``host:port`` (port 0: any free port); the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)


def serve(
    backend: ResultsBackend,
    *,
    where: str,
    host: str,
    port: int,
    announce: Callable[[str], None],
) -> None:
    """Serve until interrupted; ``announce`` gets the lines saying where (printed on start)."""

    async def main() -> None:
        app = make_app(backend, where=where, local_only=is_loopback(host))
        runner, bound = await start(app, host, port)
        try:
            for line in start_lines(where, host, bound):
                announce(line)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


def start_lines(where: str, host: str, port: int) -> list[str]:
    """What ``schedsearch ui`` says on start: what it reads, its URL, who can connect."""
    if is_loopback(host):
        reach = f"bound to {host}: only this machine can connect (--host to change)"
    else:
        reach = (
            f"bound to {host}: every machine that reaches this one on port {port} can read "
            "these results (no login)"
        )
    return [
        f"schedsearch ui: reading {where} (read-only)",
        f"open {url_of(host, port)}",
        reach,
    ]


# --- handlers -------------------------------------------------------------------------------


async def _read(request: web.Request, read: Callable[..., T], *args: Any) -> T:
    """``read(backend, *args)`` on the backend's thread."""
    app = request.app
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(app[EXECUTOR_KEY], read, app[BACKEND_KEY], *args)


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _info(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "where": request.app[WHERE_KEY],
            "readOnly": True,
            "families": list(data.FAMILIES),
            "formats": list(FORMATS),
        }
    )


async def _searches(request: web.Request) -> web.Response:
    return web.json_response({"searches": await _read(request, data.search_rows)})


async def _search(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return web.json_response(await _read(request, data.search_detail, name))


async def _schedules(request: web.Request) -> web.Response:
    return web.json_response({"schedules": await _read(request, data.stored_schedules)})


async def _baseline(request: web.Request) -> web.Response:
    family = _query(request, "family")
    name = request.match_info["name"]
    return web.json_response(await _read(request, data.baseline, name, family))


async def _download(request: web.Request) -> web.Response:
    fmt = _query(request, "format")
    name = request.match_info["name"]
    file = await _read(request, data.download, name, fmt)
    return web.Response(
        body=file.text.encode("utf-8"),
        content_type=file.content_type,
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{file.filename}"'},
    )


def _query(request: web.Request, key: str) -> str:
    value = request.query.get(key)
    if value is None:
        raise ValueError(f"{key}: missing (add ?{key}=...)")
    return value


@web.middleware
async def _loopback_names_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_loopback(host_name(request.host)):
        return _error(
            403, f"Host {request.host!r}: this server answers requests to loopback names only"
        )
    return await handler(request)


def host_name(host: str) -> str:
    """A Host header without its port: ``localhost:8080`` -> ``localhost``, ``[::1]:80`` ->
    ``::1``."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The library's errors as JSON answers the page shows: 404 for a missing name, 400 for a
    bad parameter, 503 when the results cannot be read."""
    try:
        return await handler(request)
    except NotFoundError as err:
        return _error(404, str(err))
    except StoreError as err:
        return _error(503, str(err))
    except ValueError as err:
        return _error(400, str(err))


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _stop_executor(app: web.Application) -> None:
    app[EXECUTOR_KEY].shutdown(wait=False, cancel_futures=True)
