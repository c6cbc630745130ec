"""``schedsearch ui``'s JSON endpoints over a store with known searches (built through the store's
own API), its downloads against ``schedsearch export``, and what it says on start."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from schedsearch.api import load_spec
from schedsearch.cli.export import export_schedule
from schedsearch.cli.main import cli
from schedsearch.engine.pbt import PBTCoordinator
from schedsearch.engine.state import EngineState
from schedsearch.store import HistoryPoint, SQLiteStore
from schedsearch.trainers.strategies.pbt.config import PBTConfig
from schedsearch.ui import data, events, server
from tests.unit.test_cli import FOUND

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
PBT_BUDGET = load_spec(EXAMPLES / "digits-pbt.yaml").spec.budget.steps
T = TypeVar("T")
POPULATION = 4
STEPS = range(0, 601, 100)
CONTROL = {"seed": 1000003, "metric": "val_loss", "mode": "min", "found": 0.2, "base": 0.25}
STAGES = [
    {
        "stage": 0,
        "startStep": 0,
        "tau": 100,
        "tauPrime": 10,
        "lr": 0.05,
        "candidates": [
            {"lr": 0.05, "forecast": 0.4, "diverged": False},
            {"lr": 0.5, "forecast": None, "diverged": True},
        ],
        "failedCommits": [],
    },
    {
        "stage": 1,
        "startStep": 100,
        "tau": 200,
        "tauPrime": 20,
        "lr": 0.02,
        "candidates": [{"lr": 0.02, "forecast": 0.3, "diverged": False}],
        "failedCommits": [0.1],
    },
]


def pbt_coordinator() -> PBTCoordinator:
    config = PBTConfig(population=POPULATION, perturbation_interval=100, seed=5)  # type: ignore[call-arg]
    return PBTCoordinator(config, lr_min=1e-3, lr_max=1.0, total_steps=600)


def pbt_state() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A real PBT coordinator's state after one round and an exploit: (state, its exploits)."""
    coordinator = pbt_coordinator()
    for member, objective in enumerate([4.0, 3.0, 2.0, 1.0]):
        coordinator.report(member, 100, objective, f"m{member}/step-100.pt")
    coordinator.report(0, 200, 9.0, "m0/step-200.pt")  # the worst member copies a top one
    exploits = [e for e in coordinator.population.history if e["event"] == "exploit"]
    assert exploits, "the known store needs an exploit"
    return coordinator.state_dict(), exploits


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return known_store(tmp_path)


def known_store(tmp_path: Path) -> SQLiteStore:
    """digits-pbt (Succeeded, control run, saved PBT state), digits-autolrs (Running, stages
    recorded) and digits-hdet (Pending, nothing reported), in ``tmp_path/results.db``."""
    store = SQLiteStore(tmp_path / "results.db")
    pbt = load_spec(EXAMPLES / "digits-pbt.yaml")
    store.create_search(pbt)
    store.set_phase(pbt.name, "Running")
    store.append_history(
        pbt.name,
        [
            HistoryPoint(m, s, 0.05 * (m + 1), 2.0 / (1 + s / 100) + m, 1.9 / (1 + s / 100) + m)
            for m in range(POPULATION)
            for s in STEPS
        ],
        member_steps=2400,
    )
    state, _ = pbt_state()
    store.save_engine_state(pbt.name, EngineState("pbt", tmp_path / "runs", state).to_bytes())
    found = FOUND.with_provenance(control={**CONTROL, "summary": "found 0.2 vs base 0.25"})
    store.finish(pbt.name, schedule=found, objective=0.3, member=1, member_steps=2600)

    autolrs = load_spec(EXAMPLES / "digits-autolrs.yaml")
    store.create_search(autolrs)
    store.set_phase(autolrs.name, "Running")
    store.append_history(autolrs.name, [HistoryPoint(0, 100, 0.05, 1.0, 0.9)], member_steps=300)
    job = {"checkpointDir": str(tmp_path), "result": {"history": [*STAGES, {"final": {}}]}}
    store.save_engine_state(autolrs.name, EngineState("autolrs", tmp_path / "runs", job).to_bytes())

    hdet = load_spec(EXAMPLES / "digits-hdet.yaml")
    store.create_search(hdet)
    return store


def call(
    store: SQLiteStore, path: str, *, method: str = "GET", raw: bool = False
) -> tuple[int, Any, dict[str, str]]:
    """One request to the app over ``store``: status, body (JSON unless ``raw``), headers."""

    async def go(client: TestClient[Any, Any]) -> tuple[int, Any, dict[str, str]]:
        response = await client.request(method, path)
        if response.content_type == "application/json" and not raw:
            body: Any = await response.json()
        else:
            body = await response.text()
        return response.status, body, dict(response.headers)

    return run_client(store, go)


def run_client(store: SQLiteStore, use: Callable[[TestClient[Any, Any]], Awaitable[T]]) -> T:
    async def main() -> T:
        app = server.make_app(store, where=str(store.path))
        async with TestClient(TestServer(app)) as client:
            return await use(client)

    return asyncio.run(main())


# --- the searches list ----------------------------------------------------------------------


def test_the_list_has_every_search_with_progress_best_control_and_cost(
    store: SQLiteStore,
) -> None:
    status, body, _ = call(store, "/api/searches")
    assert status == 200
    rows = {row["name"]: row for row in body["searches"]}
    assert sorted(rows) == ["digits-autolrs", "digits-hdet", "digits-pbt"]
    pbt = rows["digits-pbt"]
    assert (pbt["strategy"], pbt["workload"], pbt["phase"]) == ("pbt", "digits-cnn", "Succeeded")
    assert (pbt["steps"], pbt["members"], pbt["running"]) == (600, POPULATION, 0)
    assert pbt["budget"] == PBT_BUDGET
    assert (pbt["best"], pbt["bestMember"], pbt["cost"]) == (0.3, 1, 2600)
    assert pbt["control"]["found"] == 0.2 and pbt["control"]["base"] == 0.25
    assert math.isclose(pbt["control"]["change"], -0.2)
    autolrs = rows["digits-autolrs"]
    assert (autolrs["phase"], autolrs["steps"], autolrs["running"]) == ("Running", 100, 1)
    assert autolrs["best"] is None and autolrs["control"] is None and autolrs["cost"] == 300
    hdet = rows["digits-hdet"]
    assert (hdet["phase"], hdet["members"], hdet["cost"]) == ("Pending", 0, None)


def test_the_list_follows_the_store_as_the_engine_writes(store: SQLiteStore) -> None:
    store.set_phase("digits-hdet", "Running")
    store.append_history("digits-hdet", [HistoryPoint(0, 50, 0.01, 1.5, None)])
    rows = {row["name"]: row for row in call(store, "/api/searches")[1]["searches"]}
    assert (rows["digits-hdet"]["phase"], rows["digits-hdet"]["steps"]) == ("Running", 50)


# --- one search -----------------------------------------------------------------------------


def test_a_pbt_search_has_member_series_lineage_and_exploits(store: SQLiteStore) -> None:
    status, body, _ = call(store, "/api/searches/digits-pbt")
    assert status == 200
    members = body["members"]
    assert [m["member"] for m in members] == list(range(POPULATION))
    assert members[2]["steps"] == list(STEPS)
    assert members[2]["lr"] == [pytest.approx(0.15)] * len(STEPS)
    assert members[2]["valLoss"][1] == pytest.approx(1.9 / 2 + 2)
    _, exploits = pbt_state()
    ev = body["events"]
    assert ev["recorded"] is True
    assert [(e["step"], e["src"], e["dst"]) for e in ev["exploits"]] == [
        (e["step"], e["src"], e["dst"]) for e in exploits
    ]
    # A node per member's start and per exploit; an edge per exploit, from the copied stretch.
    graph = ev["lineage"]
    assert len(graph["nodes"]) == POPULATION + len(exploits)
    assert [(e["from"], e["to"]) for e in graph["edges"]] == [
        (f"{e['src']}@0", f"{e['dst']}@{e['step']}") for e in exploits
    ]
    # Each start at the LR the member began with, even one whose lineage is now inherited.
    first = {m: s.config["lr"] for m, s in pbt_coordinator().population.members.items()}
    starts = {n["member"]: n["lr"] for n in graph["nodes"] if n["step"] == 0}
    assert starts == pytest.approx(first)
    # What PBT ranked each member by (raw: this population trained no cooldown branches); the
    # member that copied member 3 took its step and objective with its weights.
    assert ev["rankedBy"] == "raw" and exploits[0]["src"] == 3
    assert [(m["member"], m["step"], m["objective"]) for m in ev["members"]] == [
        (0, 100, 1.0),
        (1, 100, 3.0),
        (2, 100, 2.0),
        (3, 100, 1.0),
    ]
    assert body["best"]["totalSteps"] == FOUND.total_steps
    assert body["base"]["totalSteps"] == body["search"]["budget"]
    assert "kind: ScheduleSearch" in body["specYAML"] and "pbt:" in body["specYAML"]


def test_lineage_follows_chains_of_copies() -> None:
    exploits = [
        {"step": 100, "src": 1, "dst": 0, "newLR": 0.1},
        {"step": 200, "src": 0, "dst": 2, "newLR": 0.2},
        {"step": 200, "src": 1, "dst": 0, "newLR": 0.3},
    ]
    graph = events.lineage_graph([0, 1, 2], exploits, {0: 0.01, 1: 0.02, 2: 0.03})
    assert [n["id"] for n in graph["nodes"]] == ["0@0", "1@0", "2@0", "0@100", "2@200", "0@200"]
    # Member 2 copied member 0's stretch that began with member 0's copy of member 1.
    assert [(e["from"], e["to"]) for e in graph["edges"]] == [
        ("1@0", "0@100"),
        ("0@100", "2@200"),
        ("1@0", "0@200"),
    ]


def test_autolrs_stages_show_their_probed_lrs_and_forecasts(store: SQLiteStore) -> None:
    ev = call(store, "/api/searches/digits-autolrs")[1]["events"]
    assert [s["stage"] for s in ev["stages"]] == [0, 1]
    first = ev["stages"][0]
    assert (first["startStep"], first["steps"], first["probeSteps"], first["lr"]) == (
        0,
        100,
        10,
        0.05,
    )
    assert first["candidates"][1] == {"lr": 0.5, "forecast": None, "diverged": True}
    assert ev["stages"][1]["failedCommits"] == [0.1]
    assert ev["exploits"] == [] and "lineage" not in ev


def test_hdet_syncs_are_read_from_the_saved_result() -> None:
    sync = {
        "kind": "Converge",
        "step": 1000,
        "base_lr": 0.04,
        "multipliers": [0.9, 1.1],
        "losses": [0.5, None],
        "auto_lr": "updated",
    }
    ev = events.from_engine_job({"result": {"history": [sync, {"final": {}}]}})
    assert ev["syncs"] == [
        {
            "step": 1000,
            "baseLR": 0.04,
            "multipliers": [0.9, 1.1],
            "losses": [0.5, None],
            "autoLR": "updated",
        }
    ]


def test_a_backend_that_keeps_no_decisions_says_so(store: SQLiteStore) -> None:
    class ClusterLike:  # the ResultsBackend read side only: no engine state
        def __init__(self, inner: SQLiteStore) -> None:
            self.list_searches = inner.list_searches
            self.get_search = inner.get_search
            self.best_schedule = inner.best_schedule
            self.history = inner.history
            self.list_schedules = inner.list_schedules

    detail = data.search_detail(ClusterLike(store), "digits-pbt")
    assert detail["events"]["recorded"] is False and detail["events"]["exploits"] == []
    assert len(detail["members"]) == POPULATION


def test_unknown_names_and_bad_parameters_are_named_in_the_answer(store: SQLiteStore) -> None:
    status, body, _ = call(store, "/api/searches/no-such-search")
    assert status == 404 and "no-such-search" in body["error"]
    status, body, _ = call(store, "/api/searches/digits-pbt/baseline?family=triangle")
    assert status == 400 and "'triangle'" in body["error"] and "cosine" in body["error"]
    status, body, _ = call(store, "/api/searches/digits-pbt/download?format=xlsx")
    assert status == 400 and "'xlsx'" in body["error"]
    status, body, _ = call(store, "/api/searches/digits-pbt/baseline")
    assert status == 400 and "family" in body["error"]
    status, body, _ = call(store, "/api/searches/digits-hdet/download?format=json")
    assert status == 404 and "digits-hdet" in body["error"]


def test_nothing_can_be_changed_through_the_server(store: SQLiteStore) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert call(store, "/api/searches/digits-pbt", method=method)[0] == 405
    assert store.get_search("digits-pbt").phase == "Succeeded"


# --- schedules --------------------------------------------------------------------------------


def test_the_stored_schedules_come_with_their_base_schedules(store: SQLiteStore) -> None:
    schedules = call(store, "/api/schedules")[1]["schedules"]
    assert [s["name"] for s in schedules] == ["digits-pbt-best"]
    only = schedules[0]
    assert only["search"] == "digits-pbt" and only["objective"]["value"] == 0.3
    assert only["baseFamily"] == "cosine" and only["base"]["totalSteps"] == PBT_BUDGET
    steps, lrs = only["schedule"]["steps"], only["schedule"]["lr"]
    assert all(lr == FOUND.lr_at(step) for step, lr in zip(steps, lrs, strict=True))
    assert {p["step"] for p in FOUND.to_dict()["points"]} <= set(steps)  # the jumps show


def test_a_schedule_whose_search_was_deleted_is_still_listed_and_downloadable(
    store: SQLiteStore,
) -> None:
    store.delete_search("digits-pbt")
    [only] = call(store, "/api/schedules")[1]["schedules"]
    assert (only["name"], only["searchExists"], only["base"]) == ("digits-pbt-best", False, None)
    status, body, _ = call(store, "/api/searches/digits-pbt/download?format=json", raw=True)
    assert status == 200 and body == export_schedule(
        store.best_schedule("digits-pbt").schedule, "json"
    )
    assert call(store, "/api/searches/digits-pbt/baseline?family=wsd")[0] == 404


@pytest.mark.parametrize("family", data.FAMILIES)
def test_every_baseline_family_of_the_menu_lays_out_over_the_budget(
    store: SQLiteStore, family: str
) -> None:
    status, body, _ = call(store, f"/api/searches/digits-pbt/baseline?family={family}")
    assert status == 200, body
    view = body["schedule"]
    peak = load_spec(EXAMPLES / "digits-pbt.yaml").spec.base_schedule.peak_lr
    assert view["totalSteps"] == PBT_BUDGET and max(view["lr"]) == pytest.approx(peak)


@pytest.mark.parametrize("fmt", ["json", "yaml", "csv", "torch"])
def test_a_download_is_what_export_writes(store: SQLiteStore, tmp_path: Path, fmt: str) -> None:
    status, body, headers = call(store, f"/api/searches/digits-pbt/download?format={fmt}", raw=True)
    assert status == 200
    filename = data.download_filename("digits-pbt", fmt)
    assert headers["Content-Disposition"] == f'attachment; filename="{filename}"'
    target = tmp_path / filename
    result = CliRunner().invoke(
        cli, ["export", "digits-pbt", "--store", str(store.path), "-o", fmt, "-f", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert body == target.read_text(encoding="utf-8")


# --- the page and the command -----------------------------------------------------------------


def test_the_page_and_its_plotting_library_are_served_from_the_package(
    store: SQLiteStore,
) -> None:
    status, page, _ = call(store, "/")
    assert status == 200 and "/static/app.js" in page and "//" not in page.split("<body>")[1]
    status, library, _ = call(store, "/static/vendor/uplot/uPlot.iife.min.js")
    assert status == 200 and "uPlot" in library
    assert call(store, "/static/vendor/uplot/LICENSE")[0] == 200
    assert call(store, "/static/../data.py")[0] == 404
    info = call(store, "/api/info")[1]
    assert info["readOnly"] is True and info["where"] == str(store.path)


def test_requests_to_other_names_are_refused_when_bound_to_loopback(
    store: SQLiteStore,
) -> None:
    async def ask(client: TestClient[Any, Any]) -> list[int]:
        statuses = []
        for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "evil.example:8080"):
            response = await client.get("/api/searches", headers={"Host": host})
            statuses.append(response.status)
        return statuses

    assert run_client(store, ask) == [200, 200, 200, 403]
    assert server.host_name("[::1]:80") == "::1" and server.host_name("localhost") == "localhost"


def test_start_says_what_is_read_and_who_can_connect() -> None:
    local = server.start_lines("/data/results.db", "127.0.0.1", 8080)
    assert local[0] == "schedsearch ui: reading /data/results.db (read-only)"
    assert local[1] == "open http://127.0.0.1:8080/"
    assert "only this machine can connect" in local[2]
    everyone = server.start_lines("/data/results.db", "0.0.0.0", 9000)
    assert "every machine that reaches this one on port 9000" in everyone[2]
    assert server.url_of("::1", 8080) == "http://[::1]:8080/"
    assert server.is_loopback("::1") and server.is_loopback("localhost")
    assert not server.is_loopback("0.0.0.0") and not server.is_loopback("example.org")


def test_the_command_refuses_a_store_that_is_not_there(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    result = CliRunner().invoke(cli, ["ui", "--store", str(missing)])
    assert result.exit_code == 1 and str(missing) in result.output
    result = CliRunner().invoke(cli, ["ui", "--port", "70000"])
    assert result.exit_code == 2 and "70000" in result.output
