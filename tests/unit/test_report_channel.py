"""The report channel end to end without a cluster: the trainers' client against the
controller's HTTP server over a stand-in for the API server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from schedsearch.controller import kube, server
from schedsearch.controller import metrics as metrics_mod
from schedsearch.controller import state as state_mod
from schedsearch.trainers import channel, pod, report_client
from schedsearch.trainers.strategies import base

from .controller_fixtures import _builtin_workloads, fresh_state, raw_spec, view  # noqa: F401

TOKEN = "s3cret"


class FakeApi:
    """What the report channel asks of ``kube.Kube``, kept in memory."""

    def __init__(self, state: state_mod.SearchState | None) -> None:
        self.state = state
        self.writes = 0
        self.events: list[str] = []
        self.down = False

    def token(self, namespace: str, search: str, *, fresh: bool = False) -> str | None:
        return TOKEN if (namespace, search) == ("ml", "s1") else None

    def update_state(
        self, namespace: str, search: str, change: Callable[[Any], Any]
    ) -> state_mod.SearchState:
        if self.down:
            raise ConnectionError("API server unreachable")
        if self.state is None:
            raise kube.NotReady("no state yet")
        new = change(self.state)
        if new is not None:
            self.state, self.writes = new, self.writes + 1
        return self.state

    def record_event(self, ref: Any, kind: str, reason: str, message: str) -> None:
        self.events.append(reason)


@pytest.fixture
def channel_server() -> Iterator[tuple[FakeApi, str, list[str]]]:
    api = FakeApi(fresh_state(view("pbt")))
    pokes: list[str] = []
    metrics = metrics_mod.ControllerMetrics()
    reports = server.ReportChannel(
        api,  # type: ignore[arg-type]
        metrics,
        on_change=lambda ns, name: pokes.append(name),
    )
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def boot() -> None:
        holder["runner"] = await server.start(reports.app(), "127.0.0.1", 0)
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(boot(), loop)
    assert started.wait(10)
    url = f"http://127.0.0.1:{server.bound_port(holder['runner'])}"
    try:
        yield api, url, pokes
    finally:
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def client(url: str, token: str = TOKEN, **kwargs: Any) -> report_client.ReportClient:
    return report_client.ReportClient(url, "ml", "s1", token, backoff_base=0.01, **kwargs)


def checkpoint(member: int, step: int, objective: float) -> channel.Report:
    return channel.Report(
        member=member,
        kind="checkpoint",
        step=step,
        objective=objective,
        checkpoint_path=f"/c/{member}/{step}",
        config={"lr": 0.01},
    )


def test_pbt_decisions_over_http(
    channel_server: tuple[FakeApi, str, list[str]], tmp_path: Path
) -> None:
    api, url, pokes = channel_server
    coordinator = report_client.HTTPCoordinator(client(url))
    files = [tmp_path / f"member-{m}-step-100.pt" for m in range(4)]
    for path in files:
        path.write_bytes(b"checkpoint")  # an exploit names a file its member can load
    decisions = [
        coordinator.report(m, 100, obj, str(files[m]), {"lr": 0.01})
        for m, obj in enumerate([0.1, 0.5, 0.6, 0.9])
    ]
    assert isinstance(decisions[0], base.Continue)
    exploit = decisions[3]
    assert isinstance(exploit, base.Exploit) and exploit.dst == 3
    assert api.writes == 4 and pokes == ["s1"] * 4
    deadline = time.monotonic() + 5
    while "Exploit" not in api.events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "Exploit" in api.events
    # A retry (the answer was lost: same report, same number) gets the same decision and
    # writes nothing.
    retry = dataclasses.replace(checkpoint(3, 100, 0.9), seq=4, checkpoint_path=str(files[3]))
    again = client(url).send(retry)
    assert again["duplicate"] and base.decision_from_dict(again["decision"]) == exploit
    assert api.writes == 4


def test_refusals_name_the_problem(channel_server: tuple[FakeApi, str, list[str]]) -> None:
    _, url, _ = channel_server
    with pytest.raises(report_client.ReportRejected, match="401"):
        client(url, token="wrong").send(checkpoint(0, 100, 0.5))
    with pytest.raises(report_client.ReportRejected, match=r"member: must be in 0\.\.3"):
        client(url).send(checkpoint(9, 100, 0.5))
    request = urllib.request.Request(
        url + channel.reports_path("ml", "s1"),
        data=b'{"member": 0, "kind": "checkpoint", "step": 5, "seq": 5}',
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", channel.IDEMPOTENCY_HEADER: "0:4"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert "Idempotency-Key" in refused.value.read().decode()


def test_reports_wait_out_an_unavailable_controller(
    channel_server: tuple[FakeApi, str, list[str]],
) -> None:
    api, url, _ = channel_server
    api.down = True
    threading.Timer(0.3, lambda: setattr(api, "down", False)).start()
    answer = client(url).send(checkpoint(0, 100, 0.5))
    assert answer["decision"]["kind"] == "Continue" and api.writes == 1
    api.down = True
    with pytest.raises(report_client.ChannelUnavailable):
        client(url, last_seq=1).send(checkpoint(0, 200, 0.5), max_elapsed=0.2)


def test_client_backoff_is_exponential_with_jitter() -> None:
    sleeps: list[float] = []
    calls = {"n": 0}

    def flaky(request: urllib.request.Request, timeout: float) -> Any:
        calls["n"] += 1
        assert request.headers[channel.IDEMPOTENCY_HEADER.capitalize()] == "0:8"
        if calls["n"] < 5:
            raise urllib.error.URLError("connection refused")
        return _Answer(b'{"decision": null, "duplicate": false}')

    reporter = report_client.ReportClient(
        "http://ctl",
        "ml",
        "s1",
        TOKEN,
        backoff_base=1.0,
        backoff_cap=5.0,
        opener=flaky,
        sleep=sleeps.append,
        rng=lambda: 1.0,
        last_seq=7,
    )
    assert reporter.send(channel.Report(member=0, kind="final", step=7))["decision"] is None
    assert sleeps == [1.0, 2.0, 4.0, 5.0]


class _Answer:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def read(self) -> bytes:
        return self.body

    def __enter__(self) -> _Answer:
        return self

    def __exit__(self, *_: object) -> None:
        return None


def pod_environ(url: str, spec: dict[str, Any], **extra: str) -> dict[str, str]:
    return {
        channel.ENV_SEARCH: "s1",
        channel.ENV_NAMESPACE: "ml",
        channel.ENV_ROLE: "pbt",
        channel.ENV_MEMBER: "1",
        channel.ENV_SPEC: json.dumps(spec),
        channel.ENV_CHECKPOINT_DIR: "/nonexistent",
        channel.ENV_REPORT_URL: url,
        channel.ENV_REPORT_TOKEN: TOKEN,
        **extra,
    }


def test_pod_with_an_unknown_workload_reports_fatal_and_exits_config(
    channel_server: tuple[FakeApi, str, list[str]],
) -> None:
    api, url, _ = channel_server
    spec = raw_spec("pbt", workload={"entrypoint": "no_such_module_xyz:make", "image": "x"})
    assert pod.main(pod_environ(url, spec)) == channel.EXIT_CONFIG
    assert api.state is not None
    fatal = api.state.members[1].fatal
    assert fatal is not None and fatal.startswith("UnknownWorkload:")
    assert "no_such_module_xyz" in fatal


def test_pod_environment_is_checked_by_name() -> None:
    environ = pod_environ("http://ctl", raw_spec("pbt"))
    del environ[channel.ENV_REPORT_TOKEN]
    with pytest.raises(pod.PodConfigError, match=f"^{channel.ENV_REPORT_TOKEN}: required"):
        pod.PodEnv.from_environ(environ)
    environ = pod_environ("http://ctl", raw_spec("pbt"), **{channel.ENV_MEMBER: "x"})
    with pytest.raises(pod.PodConfigError, match=f"^{channel.ENV_MEMBER}: must be an integer"):
        pod.PodEnv.from_environ(environ)


def test_pod_reads_its_part_of_the_wire_spec() -> None:
    spec = pod.PodSpec.parse(raw_spec("hdet", seed=7))
    assert spec.workload_ref == "mypkg.train:workload"
    assert spec.strategy.hdet is not None and spec.strategy.hdet.replicas == 2
    assert (spec.budget.steps, spec.bounds, spec.seed) == (1000, (1e-4, 1.0), 7)
    with pytest.raises(pod.PodConfigError, match=r"^spec\.budget\.steps"):
        pod.PodSpec.parse(raw_spec("pbt", budget={"steps": 0}))


def test_control_pod_trains_both_schedules_and_reports_the_comparison(
    channel_server: tuple[FakeApi, str, list[str]],
) -> None:
    api, url, _ = channel_server
    assert api.state is not None
    api.state.control.attempts = 1  # the controller started the control run's pod
    index = api.state.control_index
    spec = raw_spec("pbt", workload={"builtin": "regression"}, budget={"steps": 20})
    found = {"totalSteps": 20, "points": [{"step": 0, "lr": 0.02}]}
    base_ = {"totalSteps": 20, "points": [{"step": 0, "lr": 0.05}]}
    given = json.dumps({"found": found, "base": base_, "seed": 11})
    environ = pod_environ(
        url,
        spec,
        **{channel.ENV_ROLE: "control", channel.ENV_MEMBER: str(index), channel.ENV_CONTROL: given},
    )
    assert pod.main(environ) == 0
    kept = api.state.control_result
    assert kept is not None
    assert (kept["seed"], kept["steps"], kept["metric"]) == (11, 20, "val_loss")
    assert kept["summary"].startswith("found ")
    assert api.state.control.member_steps == 40
    assert api.state.members[1].last_seq == 0, "no member's reports were touched"


def test_control_pod_without_its_inputs_cannot_run(
    channel_server: tuple[FakeApi, str, list[str]],
) -> None:
    api, url, _ = channel_server
    assert api.state is not None
    api.state.control.attempts = 1
    index = str(api.state.control_index)
    spec = raw_spec("pbt", workload={"builtin": "regression"})
    environ = pod_environ(url, spec, **{channel.ENV_ROLE: "control", channel.ENV_MEMBER: index})
    assert pod.main(environ) == channel.EXIT_CONFIG
    fatal = api.state.control.fatal
    assert fatal is not None and channel.ENV_CONTROL in fatal
