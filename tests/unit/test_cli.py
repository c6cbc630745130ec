"""The schedsearch command: validation output and exit codes, reading and exporting results."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import sys
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from schedsearch.api import LRSchedule, load_spec
from schedsearch.cli import main as cli_main
from schedsearch.cli import textplot
from schedsearch.cli.main import cli
from schedsearch.store import HistoryPoint, SQLiteStore
from schedsearch.trainers.schedules import ChangePoint, Schedule

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BAD = sorted((EXAMPLES / "bad").glob("*.yaml"))

# A found schedule with every kind of segment the exports must replay: warm-up, a cosine cut
# short (endLR/span), a jump, constants.
FOUND = Schedule(
    (
        ChangePoint(0, 0.0, "linear"),
        ChangePoint(20, 0.05, "cosine", 0.01, 200),
        ChangePoint(100, 0.06),
        ChangePoint(250, 0.03, "exponential"),
        ChangePoint(400, 0.005),
    ),
    600,
)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A store holding one finished PBT search with history."""
    path = tmp_path / "results.db"
    store = SQLiteStore(path)
    search = load_spec(EXAMPLES / "digits-pbt.yaml")
    store.create_search(search)
    store.set_phase(search.name, "Running")
    store.append_history(
        search.name,
        [
            HistoryPoint(m, s, 0.05, 2.0 / (1 + s / 100) + m / 10, 1.9 / (1 + s / 100) + m / 10)
            for m in range(4)
            for s in range(0, 601, 100)
        ],
    )
    store.finish(search.name, schedule=FOUND, objective=0.3, member=0, member_steps=2400)
    return path


# --- validate -----------------------------------------------------------------------------------


def test_validate_accepts_the_examples() -> None:
    code, output = invoke("validate", *map(str, sorted(EXAMPLES.glob("*.yaml"))))
    assert code == 0, output
    assert "digits-pbt.yaml: ok (digits-pbt)" in output


def expected_lines(path: Path) -> list[str]:
    return [
        line.removeprefix("# expect: ").strip()
        for line in path.read_text().splitlines()
        if line.startswith("# expect: ")
    ]


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_validate_reports_each_bad_example_with_its_field_path(path: Path) -> None:
    expected = expected_lines(path)
    assert expected, f"{path.name} has no '# expect:' line"
    code, output = invoke("validate", str(path))
    assert code == 1
    for line in expected:
        assert f"{path}: {line}" in output, output


def test_validate_checks_every_file_and_fails_if_any_is_bad(tmp_path: Path) -> None:
    code, output = invoke("validate", str(EXAMPLES / "digits-pbt.yaml"), str(BAD[0]))
    assert code == 1
    assert "digits-pbt.yaml: ok" in output and BAD[0].name in output
    assert invoke("validate", str(tmp_path / "missing.yaml"))[0] == 1
    assert invoke("validate")[0] == 2  # usage: no file given


# --- reading results ----------------------------------------------------------------------------


def test_list_table_and_json(store_path: Path) -> None:
    code, output = invoke("list", "--store", str(store_path))
    assert code == 0
    header, row = output.splitlines()[:2]
    assert header.split() == ["NAME", "STRATEGY", "WORKLOAD", "PHASE", "BEST", "COST", "AGE"]
    assert row.split()[:6] == ["digits-pbt", "pbt", "digits-cnn", "Succeeded", "0.3", "2400"]
    code, output = invoke("list", "--store", str(store_path), "-o", "json")
    items = json.loads(output)["items"]
    assert [i["metadata"]["name"] for i in items] == ["digits-pbt"]
    assert items[0]["status"]["best"]["schedule"] == "digits-pbt-best"


def test_a_missing_default_store_lists_nothing_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("SCHEDSEARCH_STORE", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    code, output = invoke("list")
    assert code == 0 and "No searches" in output
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("command", ["list", "get", "best", "export", "delete"])
def test_a_store_the_user_named_must_exist(tmp_path: Path, command: str) -> None:
    """A mistyped --store is an error naming the path, not an empty list (exit 0)."""
    path = tmp_path / "nonexistent9" / "x.db"
    args = [command] + ([] if command == "list" else ["s"]) + ["--store", str(path)]
    code, output = invoke(*args)
    assert code == 1, output
    assert f"no results store at {path}" in output
    assert not path.parent.exists()
    result = CliRunner().invoke(cli, ["list"], env={"SCHEDSEARCH_STORE": str(path)})
    assert result.exit_code == 1 and "SCHEDSEARCH_STORE" in result.output


def test_store_from_environment(store_path: Path) -> None:
    result = CliRunner().invoke(cli, ["list"], env={"SCHEDSEARCH_STORE": str(store_path)})
    assert "digits-pbt" in result.output


def _kubeconfig(path: Path, *, namespace: str | None = None) -> Path:
    context: dict[str, str] = {"cluster": "c", "user": "u"}
    if namespace is not None:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "here", "context": context}],
        "current-context": "here",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("store_given", "local_file", "cluster_flags", "kube_context", "source"),
    [
        (True, False, False, True, "local"),  # --store always means the local store
        (False, False, True, False, "cluster"),  # -n/--context/--kubeconfig mean the cluster
        (False, True, False, True, "local"),  # a local store is what plain commands read
        (False, False, False, True, "cluster"),  # no local store: the current kube context
        (False, False, False, False, "local"),  # neither: the (empty) local store
    ],
)
def test_results_source(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    store_given: bool,
    local_file: bool,
    cluster_flags: bool,
    kube_context: bool,
    source: str,
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    kubeconfig = tmp_path / "kubeconfig"
    if kube_context:
        _kubeconfig(kubeconfig)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    if local_file:
        SQLiteStore(cli_main.default_store_path())
    results = cli_main.Results(
        tmp_path / "x.db" if store_given else None,
        cli_main.ClusterTarget(namespace="ns" if cluster_flags else None),
    )
    assert results.source == source


def test_cluster_namespace_comes_from_the_flag_or_the_context(tmp_path: Path) -> None:
    from schedsearch.store.kube import ClusterBackend, ClusterTarget

    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", namespace="team-a")
    assert ClusterBackend(ClusterTarget(kubeconfig)).namespace == "team-a"
    assert ClusterBackend(ClusterTarget(kubeconfig, namespace="b")).namespace == "b"
    plain = _kubeconfig(tmp_path / "plain")
    backend = ClusterBackend(ClusterTarget(plain))
    assert backend.namespace == "default"
    assert backend.where == "namespace 'default' of https://127.0.0.1:9"


def test_store_and_cluster_flags_together_are_a_usage_error(tmp_path: Path) -> None:
    code, output = invoke("list", "--store", str(tmp_path / "x.db"), "-n", "ns")
    assert code == 2 and "give one" in output


def test_get_shows_summary_and_members(store_path: Path) -> None:
    code, output = invoke("get", "digits-pbt", "--store", str(store_path))
    assert code == 0
    assert "Succeeded" in output and "2400 member-steps" in output
    assert "0.3 (member 0, step 600, schedule digits-pbt-best)" in output
    code, output = invoke("get", "digits-pbt", "--store", str(store_path), "-o", "yaml")
    document = yaml.safe_load(output)
    assert document["kind"] == "ScheduleSearch"
    members = document["status"]["members"]
    assert [m["id"] for m in members] == [0, 1, 2, 3]  # best objective first
    assert all(m["phase"] == "Succeeded" and m["step"] == 600 for m in members)


def test_unknown_search_exits_3(store_path: Path, tmp_path: Path) -> None:
    for command in ("get", "best", "export", "plot"):
        args = [command, "nope", "--store", str(store_path)]
        if command == "plot":
            args += ["-f", str(tmp_path / "x.png")]
        code, output = invoke(*args)
        assert code == 3, (command, output)
        assert "'nope' not found" in output


def test_best_prints_change_points_and_a_plot(store_path: Path) -> None:
    code, output = invoke("best", "digits-pbt", "--store", str(store_path))
    assert code == 0
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["STEP", "LR"])
    rows = [line.split() for line in lines[header + 1 : header + 1 + len(FOUND.points)]]
    assert [int(r[0]) for r in rows] == [p.step for p in FOUND.points]
    assert [r[2] for r in rows] == [p.interp for p in FOUND.points]
    assert sum(line.count(textplot.MARK) for line in lines) >= 50  # the plot
    assert "val_loss 0.3, member 0" in output


def test_best_as_yaml_is_an_lrschedule_that_replays(store_path: Path) -> None:
    code, output = invoke("best", "digits-pbt", "--store", str(store_path), "-o", "yaml")
    assert code == 0
    resource = LRSchedule.model_validate(yaml.safe_load(output))
    assert resource.metadata.name == "digits-pbt-best"
    assert resource.spec.to_schedule().lrs() == FOUND.lrs()


# --- exports ------------------------------------------------------------------------------------


def test_export_json_round_trips(store_path: Path) -> None:
    code, output = invoke("export", "digits-pbt", "--format", "json", "--store", str(store_path))
    assert code == 0
    schedule = Schedule.from_json(output)
    assert schedule.points == FOUND.points and schedule.total_steps == FOUND.total_steps
    assert schedule.provenance["search"] == "digits-pbt"


def test_export_csv_has_every_step_exactly(store_path: Path) -> None:
    code, output = invoke("export", "digits-pbt", "-o", "csv", "--store", str(store_path))
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(output)))
    assert [int(r["step"]) for r in rows] == list(range(600))
    assert [float(r["lr"]) for r in rows] == FOUND.lrs()


def test_exported_torch_scheduler_replays_the_schedule_step_for_step(
    store_path: Path, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    module_path = tmp_path / "found_schedule.py"
    code, _ = invoke(
        "export", "digits-pbt", "-o", "torch", "-f", str(module_path), "--store", str(store_path)
    )
    assert code == 0
    spec = importlib.util.spec_from_file_location("found_schedule", module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=123.0)  # the schedule sets absolute LRs
    scheduler = module.make_scheduler(optimizer)
    applied = []
    for _ in range(FOUND.total_steps):
        applied.append(optimizer.param_groups[0]["lr"])
        weight.grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
    assert applied == FOUND.lrs()


def test_export_yaml_round_trips(store_path: Path, tmp_path: Path) -> None:
    code, output = invoke("export", "digits-pbt", "-o", "yaml", "--store", str(store_path))
    assert code == 0
    schedule = Schedule.from_dict(yaml.safe_load(output))
    assert schedule.points == FOUND.points and schedule.lrs() == FOUND.lrs()
    # The format follows the file's extension when -o is not given.
    target = tmp_path / "found.yml"
    assert invoke("export", "digits-pbt", "-f", str(target), "--store", str(store_path))[0] == 0
    assert Schedule.from_dict(yaml.safe_load(target.read_text())).points == FOUND.points


def test_the_old_long_format_option_still_works(store_path: Path) -> None:
    code, output = invoke("export", "digits-pbt", "--format", "csv", "--store", str(store_path))
    assert code == 0 and output.startswith("step,lr\n")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        # -o once named the file in export and plot: now it is the format everywhere.
        (["export", "digits-pbt", "-o", "s.py"], "write to a file with -f/--file s.py"),
        (["export", "digits-pbt", "--output", "out.json"], "-f/--file out.json"),
        (["plot", "digits-pbt", "-f", "x.png", "-o", "y.png"], "-f/--file y.png"),
        # -f once was the format of export: a bare format name is not taken for a file.
        (["export", "digits-pbt", "-f", "torch"], "give the format with -o torch"),
        (["get", "digits-pbt", "-o", "x.json"], "not one of"),
    ],
)
def test_one_meaning_per_flag(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], said: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, output = invoke(*args, "--store", str(store_path))
    assert code == 2, output
    assert said in output, output
    assert list(work.iterdir()) == []  # nothing written under a wrong name


@pytest.mark.parametrize(
    "args",
    [
        ["plot", "digits-pbt", "-f", "/nonexistent/x.png"],
        ["export", "digits-pbt", "-o", "torch", "-f", "/nonexistent/s.py"],
    ],
)
def test_an_unwritable_file_is_a_message_not_a_traceback(store_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--store", str(store_path)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "cannot write /nonexistent/" in result.output
    assert "the folder /nonexistent does not exist" in result.output


def test_a_folder_is_not_an_output_file(store_path: Path, tmp_path: Path) -> None:
    code, output = invoke(
        "plot", "digits-pbt", "-f", str(tmp_path), "-o", "png", "--store", str(store_path)
    )
    assert code == 1 and "it is a folder" in output


def test_plot_writes_an_image(store_path: Path, tmp_path: Path) -> None:
    image = tmp_path / "best.png"
    code, _ = invoke("plot", "digits-pbt", "-f", str(image), "--store", str(store_path))
    assert code == 0
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "best.image"
    code, _ = invoke("plot", "digits-pbt", "-f", str(svg), "-o", "svg", "--store", str(store_path))
    assert code == 0 and b"<svg" in svg.read_bytes()[:500]
    code, output = invoke(
        "plot", "digits-pbt", "-f", str(tmp_path / "x.txt"), "--store", str(store_path)
    )
    assert code == 1 and "cannot tell the image format" in output


def test_a_loss_series_of_few_points_is_drawn_with_markers() -> None:
    """A cluster search keeps one point per member: a plain line of one point draws nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from schedsearch.cli import plotting

    one_point_each = [HistoryPoint(m, 600, 0.05, None, 0.3 + m / 10) for m in range(4)]
    dense = [HistoryPoint(0, s, 0.05, 1.0, 1.0) for s in range(plotting.MARKERS_BELOW * 2)]
    for history, marked in ((one_point_each, True), (dense, False)):
        fig, ax = plt.subplots()
        try:
            plotting._loss_panel(ax, history, best_member=0)
            markers = {line.get_marker() for line in ax.get_lines()}
        finally:
            plt.close(fig)
        assert markers == ({"o"} if marked else {"None"}), markers


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    code, output = invoke("completion", shell)
    assert code == 0 and "_SCHEDSEARCH_COMPLETE" in output
    assert invoke("completion", "tcsh")[0] == 2


# --- run and exit codes -------------------------------------------------------------------------


def test_run_without_the_engine_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "schedsearch.engine", None)  # import raises
    code, output = invoke(
        "run", str(EXAMPLES / "digits-pbt.yaml"), "--store", str(tmp_path / "r.db")
    )
    assert code == 1
    assert "local engine (schedsearch.engine) is not part of this installation" in output


def test_run_refuses_an_invalid_spec_before_starting(tmp_path: Path) -> None:
    code, output = invoke("run", str(BAD[0]), "--store", str(tmp_path / "r.db"))
    assert code == 1 and expected_lines(BAD[0])[0] in output
    code, output = invoke(
        "run",
        str(EXAMPLES / "digits-pbt.yaml"),
        "--name",
        "Bad_Name",
        "--store",
        str(tmp_path / "r"),
    )
    assert code == 1 and "--name" in output


def test_run_refuses_a_store_in_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    store = tmp_path / "nonexistent" / "dir" / "r.db"
    code, output = invoke("run", str(EXAMPLES / "digits-pbt.yaml"), "--store", str(store))
    assert code == 1, output
    assert f"the folder {store.parent} does not exist" in output
    assert not (tmp_path / "nonexistent").exists()


def exit_code_of_main(args: list[str]) -> int:
    with pytest.raises(SystemExit) as caught:
        cli_main.main(args)
    return int(caught.value.code or 0)


def test_main_exit_codes(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert exit_code_of_main(["list", "--store", str(store_path)]) == 0
    assert exit_code_of_main(["validate", str(BAD[0])]) == 1
    assert exit_code_of_main(["no-such-command"]) == 2
    assert exit_code_of_main(["get", "nope", "--store", str(store_path)]) == 3

    def interrupted(self: SQLiteStore) -> list[object]:
        raise KeyboardInterrupt

    monkeypatch.setattr(SQLiteStore, "list_searches", interrupted)
    assert exit_code_of_main(["list", "--store", str(store_path)]) == 130


# --- the terminal plot --------------------------------------------------------------------------


def test_text_plot_draws_levels_and_jumps() -> None:
    text = textplot.plot_values([1.0] * 5 + [3.0] * 5, x_range=(0, 9), height=5)
    lines = text.splitlines()
    assert lines[0] == "3 |     *****"
    assert lines[4] == "1 |*****     "
    assert all(line[8] == textplot.RISER for line in lines[1:4])  # the jump is connected
    assert lines[-1].split() == ["0", "9"]
    assert "no finite values" in textplot.plot_values([float("nan")], x_range=(0, 1))


def test_the_file_option_completes_paths() -> None:
    file_type = cli_main.OutputFile(("json",))
    items = file_type.shell_complete(click.Context(cli), click.Option(["-f"]), "out/x")
    assert [(i.value, i.type) for i in items] == [("out/x", "file")]
