"""The JSON layer on the client's connection pool: bodies sent as JSON, queries encoded, the
Authorization header from the client's auth settings (read again only every so often, so a
rotated token is followed), API errors with their status and reason."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from schedsearch.controller import kube


class Answer:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.data = json.dumps(body).encode() if body is not None else b""


class Pool:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.answers: list[Answer] = []

    def request(self, method: str, url: str, **kw: Any) -> Answer:
        self.sent.append({"method": method, "url": url, **kw})
        return self.answers.pop(0) if self.answers else Answer(200, {"kind": "Pod"})


class Configuration:
    host = "https://api.example:6443"

    def __init__(self) -> None:
        self.token = "one"
        self.reads = 0

    def auth_settings(self) -> dict[str, Any]:
        self.reads += 1
        value = f"Bearer {self.token}"
        return {"BearerToken": {"in": "header", "key": "authorization", "value": value}}


class Client:
    def __init__(self) -> None:
        self.configuration = Configuration()
        self.default_headers = {"User-Agent": "test"}
        self.rest_client = type("RestClient", (), {"pool_manager": Pool()})()

    def sanitize_for_serialization(self, body: Any) -> Any:
        return json.loads(json.dumps(body, default=str))


def test_requests_carry_json_query_and_the_token_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Client()
    seen: list[tuple[str, int | None]] = []
    rest = kube.Rest(client, on_request=lambda m, s: seen.append((m, s)))  # type: ignore[arg-type]
    assert rest.get("/api/v1/pods", labelSelector="schedsearch.io/search") == {"kind": "Pod"}
    rest.request("PATCH", "/x/status", body={"status": {"phase": "Running"}}, content_type="m")
    pool = client.rest_client.pool_manager
    first, second = pool.sent
    assert first["url"] == (
        "https://api.example:6443/api/v1/pods?labelSelector=schedsearch.io%2Fsearch"
    )
    assert first["body"] is None and first["headers"]["authorization"] == "Bearer one"
    assert first["headers"]["User-Agent"] == "test"
    assert json.loads(second["body"]) == {"status": {"phase": "Running"}}
    assert second["headers"]["Content-Type"] == "m"
    assert client.configuration.reads == 1 and seen == [("GET", 200), ("PATCH", 200)]
    # A rotated token is picked up once the header is due to be read again.
    client.configuration.token = "two"
    monkeypatch.setattr(kube, "AUTH_REFRESH_SECONDS", 0.0)
    rest._auth_until = float("-inf")
    rest.get("/api/v1/pods")
    assert pool.sent[-1]["headers"]["authorization"] == "Bearer two"


def test_a_body_json_does_not_know_goes_through_the_clients_serializer() -> None:
    client = Client()
    rest = kube.Rest(client)  # type: ignore[arg-type]
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    rest.request("POST", "/api/v1/namespaces/ml/events", body={"firstTimestamp": when})
    body = json.loads(client.rest_client.pool_manager.sent[0]["body"])
    assert body == {"firstTimestamp": str(when)}


def test_an_error_answer_raises_with_its_status_and_reason() -> None:
    client = Client()
    seen: list[tuple[str, int | None]] = []
    rest = kube.Rest(client, on_request=lambda m, s: seen.append((m, s)))  # type: ignore[arg-type]
    status = {"kind": "Status", "message": 'pods "p" already exists', "reason": "AlreadyExists"}
    client.rest_client.pool_manager.answers.append(Answer(409, status))
    assert rest.create("/api/v1/namespaces/ml/pods", {"metadata": {"name": "p"}}) is None
    client.rest_client.pool_manager.answers.append(Answer(422, status))
    with pytest.raises(kube.ApiError) as raised:
        rest.create("/api/v1/namespaces/ml/pods", {"metadata": {"name": "p"}})
    assert raised.value.status == 422 and raised.value.reason == "AlreadyExists"
    assert seen == [("POST", 409), ("POST", 422)]
