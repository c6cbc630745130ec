"""A small JSON client for the Kubernetes REST API, used by the harness and the test kubelet.

The official client turns objects into model classes; the test kubelet reads pods and writes their
status as plain JSON (merge patches, bindings, watch streams), so it speaks to the API in dicts.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import urllib3
import yaml

JsonObj = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")

    @property
    def reason(self) -> str:
        try:
            return str(json.loads(self.body).get("reason", ""))
        except ValueError:
            return ""


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to trust it and be trusted by it."""

    server: str
    ca_file: Path
    token: str


class RestClient:
    """Thread-safe: one connection pool shared by every caller."""

    def __init__(self, credentials: Credentials, *, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self._timeout = timeout
        self._pool = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED", ca_certs=str(credentials.ca_file), maxsize=8
        )
        self._headers = {
            "Authorization": f"Bearer {credentials.token}",
            "Accept": "application/json",
        }

    def send(
        self,
        method: str,
        path: str,
        *,
        body: JsonObj | None = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, str]:
        """One call; returns the status code and the body as text, whatever the status."""
        headers = dict(self._headers)
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        resp = self._pool.request(
            method,
            self.credentials.server + path + _query_string(query),
            body=data,
            headers=headers,
            timeout=self._timeout,
            retries=False,
        )
        return resp.status, resp.data.decode(errors="replace")

    def request(
        self,
        method: str,
        path: str,
        *,
        body: JsonObj | None = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JsonObj:
        """One call whose answer is a JSON object; a non-2xx status raises ``ApiError``."""
        status, text = self.send(method, path, body=body, query=query, content_type=content_type)
        if not 200 <= status < 300:
            raise ApiError(status, method, path, text)
        return json.loads(text) if text else {}

    def get(self, path: str, **query: str) -> JsonObj:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: JsonObj) -> JsonObj:
        return self.request("POST", path, body=body)

    def merge_patch(self, path: str, body: JsonObj) -> JsonObj:
        return self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    def delete(self, path: str, body: JsonObj | None = None) -> JsonObj:
        return self.request("DELETE", path, body=body)

    def watch(
        self, path: str, *, resource_version: str, timeout_seconds: int = 5
    ) -> Iterator[tuple[str, JsonObj]]:
        """Yield ``(type, object)`` events; ends when the server closes the watch.

        An expired resource version arrives as an ERROR event: it is raised as ``ApiError`` with
        the event's code (410), so the caller can relist.
        """
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
            "allowWatchBookmarks": "true",
        }
        resp = self._pool.request(
            "GET",
            self.credentials.server + path + _query_string(query),
            headers=self._headers,
            timeout=urllib3.Timeout(connect=self._timeout, read=timeout_seconds + 30),
            preload_content=False,
            retries=False,
        )
        try:
            if resp.status != 200:
                raise ApiError(resp.status, "WATCH", path, resp.read().decode(errors="replace"))
            for line in _lines(resp.stream(65536)):
                event = json.loads(line)
                if event["type"] == "ERROR":
                    status = event["object"]
                    raise ApiError(int(status.get("code", 500)), "WATCH", path, json.dumps(status))
                yield event["type"], event["object"]
        finally:
            resp.release_conn()


def _query_string(query: dict[str, str] | None) -> str:
    if not query:
        return ""
    return "?" + urllib.parse.urlencode(query)


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            if line.strip():
                yield line.decode()
    if buffer.strip():
        yield buffer.decode()


def write_kubeconfig(
    path: Path, credentials: Credentials, *, user: str, namespace: str = "default"
) -> Path:
    """A self-contained kubeconfig (CA embedded, bearer token) for ``credentials``."""
    ca_data = base64.b64encode(credentials.ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "schedsearch-test",
                "cluster": {"server": credentials.server, "certificate-authority-data": ca_data},
            }
        ],
        "users": [{"name": user, "user": {"token": credentials.token}}],
        "contexts": [
            {
                "name": user,
                "context": {"cluster": "schedsearch-test", "user": user, "namespace": namespace},
            }
        ],
        "current-context": user,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
