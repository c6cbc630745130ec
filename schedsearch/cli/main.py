"""The ``schedsearch`` command: validate specs, run them locally, read and export results.

Results are read through a ``ResultsBackend``: the local SQLite store, or a cluster's
ScheduleSearch and LRSchedule objects (``--kubeconfig``/``--context``/``-n``), with the same
outputs. Exit codes: 0 ok, 1 invalid spec or other user error, 2 bad usage, 3 no such search or
schedule, 130 interrupted.
"""

from __future__ import annotations

import functools
import io
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from click.shell_completion import CompletionItem, get_completion_class
from pydantic import ValidationError
from rich.console import Console

from schedsearch import __version__
from schedsearch.api import SpecError, load_spec
from schedsearch.api.spec import MemberPhase, MemberSummary, ScheduleSearch
from schedsearch.cli import render, run_metrics
from schedsearch.cli.export import FORMATS, export_schedule, format_for
from schedsearch.cli.plotting import IMAGE_FORMATS
from schedsearch.cli.validation import validate_source
from schedsearch.store import (
    STORE_ENV,
    HistoryPoint,
    NotFoundError,
    ResultsBackend,
    SearchExistsError,
    SearchRecord,
    SQLiteStore,
    StoredSchedule,
    StoreError,
    default_store_path,
    member_summaries,
)
from schedsearch.store.kube import ClusterBackend, ClusterTarget, current_context_set

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INTERRUPTED = 130
COMPLETION_SHELLS = ("bash", "zsh", "fish")
PROG = "schedsearch"

F = TypeVar("F", bound=Callable[..., Any])


class UserError(click.ClickException):
    """Something the user can fix (bad spec, unusable store, missing engine): exit 1."""

    exit_code = EXIT_USER_ERROR


class NotFound(click.ClickException):
    """No such search or schedule: exit 3."""

    exit_code = EXIT_NOT_FOUND


def _translating_errors(command: F) -> F:
    """Turn the library's errors into the CLI's messages and exit codes."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except NotFoundError as err:
            raise NotFound(str(err)) from None
        except SpecError as err:
            raise UserError("invalid spec\n" + "\n".join(err.lines())) from None
        except (StoreError, SearchExistsError) as err:
            raise UserError(str(err)) from None

    return cast(F, wrapper)


# --- shared options -----------------------------------------------------------------------------


def _store_path(value: Path | None) -> Path:
    return value if value is not None else default_store_path()


def _complete_search_names(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    params = ctx.params
    results = Results(
        params.get("store_path"),
        ClusterTarget(params.get("kubeconfig"), params.get("context"), params.get("namespace")),
    )
    try:
        if results.source == "local" and not _store_path(results.store_path).is_file():
            return []
        names = [record.name for record in results.backend.list_searches()]
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


DEFAULT_STORE_HELP = "Default: $XDG_DATA_HOME/schedsearch/results.db"


def _store_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--store",
        "store_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=STORE_ENV,
        show_envvar=True,
        default=None,
        help=help_text,
    )


store_option = _store_option(f"Results store (SQLite file). {DEFAULT_STORE_HELP}.")


class FormatChoice(click.Choice):  # type: ignore[type-arg]
    """``-o/--output``: the output format, in every command (as in kubectl).

    In ``export`` and ``plot`` ``-o`` once named the file to write; a value that is not a format
    is answered with where the file goes now instead of a bare "not one of".
    """

    def __init__(self, choices: Sequence[str], *, file_hint: bool = False) -> None:
        super().__init__(choices)
        self.file_hint = file_hint

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            if not self.file_hint:
                raise
            self.fail(
                f"{value!r} is not a format ({', '.join(map(str, self.choices))}): -o/--output "
                f"is the output format; write to a file with -f/--file {value}",
                param,
                ctx,
            )


class OutputFile(click.ParamType):
    """``-f/--file``: the file a command writes. A bare format name is refused: it is what
    ``export -f`` meant before, and writing a file called ``torch`` would hide the mistake."""

    name = "file"

    def __init__(self, formats: Sequence[str]) -> None:
        self.formats = tuple(formats)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Path):
            return value
        if value in self.formats:
            self.fail(
                f"{value!r} is a format, not a file: give the format with -o {value} "
                f"(to write a file named {value}, say ./{value})",
                param,
                ctx,
            )
        return Path(value).expanduser()

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        return [CompletionItem(incomplete, type="file")]  # the shell completes paths


output_option = click.option(
    "-o",
    "--output",
    type=FormatChoice(render.OUTPUT_FORMATS),
    default="table",
    show_default=True,
    help="Output format.",
)
name_argument = click.argument("name", shell_complete=_complete_search_names)


def results_options(command: F) -> F:
    """Where results are read from: ``--store`` (the local SQLite file) or a cluster
    (``--kubeconfig``/``--context``/``-n``); the command receives them as one ``results``."""

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        store_path: Path | None,
        kubeconfig: Path | None,
        context: str | None,
        namespace: str | None,
        **kwargs: Any,
    ) -> Any:
        results = Results(store_path, ClusterTarget(kubeconfig, context, namespace))
        return command(*args, results=results, **kwargs)

    options = [
        _store_option(
            f"Read the local results store (SQLite file). {DEFAULT_STORE_HELP}; when that file "
            "does not exist and a kube context is current, the cluster is read instead."
        ),
        click.option(
            "--kubeconfig",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Read from the cluster of this kubeconfig (default $KUBECONFIG, ~/.kube/config).",
        ),
        click.option("--context", default=None, help="Read from this kubeconfig context."),
        click.option(
            "-n",
            "--namespace",
            default=None,
            help="Read from this namespace of the cluster (default: the context's, or default).",
        ),
    ]
    decorated: Any = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return cast(F, decorated)


@dataclass
class Results:
    """The results a command reads. The cluster is read when ``--kubeconfig``, ``--context`` or
    ``-n`` is given, or when there is no local store and a current kube context is set; the
    local store otherwise (always when ``--store``/``$SCHEDSEARCH_STORE`` names one)."""

    store_path: Path | None
    target: ClusterTarget

    @functools.cached_property
    def source(self) -> str:
        if self.store_path is not None and self.target.explicit:
            raise click.UsageError(
                "--store (or $SCHEDSEARCH_STORE) and --kubeconfig/--context/-n name two places "
                "to read results from; give one"
            )
        if self.store_path is not None:
            return "local"
        if self.target.explicit:
            return "cluster"
        if not default_store_path().is_file() and current_context_set():
            return "cluster"
        return "local"

    @functools.cached_property
    def backend(self) -> ResultsBackend:
        """The backend to read. Reading never creates a store: a missing default store means no
        searches yet; a missing store the user named (``--store``, ``$SCHEDSEARCH_STORE``) is an
        error, most likely a typo."""
        if self.source == "cluster":
            return ClusterBackend(self.target)
        path = _store_path(self.store_path)
        if path.is_file():
            return SQLiteStore(path)
        if self.store_path is not None:
            raise StoreError(
                f"no results store at {path} (from --store or ${STORE_ENV}): check the path; "
                "`schedsearch run --store PATH` creates one"
            )
        return _EmptyBackend(path)

    @property
    def where(self) -> str:
        backend = self.backend
        if isinstance(backend, ClusterBackend):
            return backend.where
        return str(_store_path(self.store_path))


@dataclass(frozen=True)
class _EmptyBackend:
    """The results of a store that does not exist yet."""

    path: Path

    def list_searches(self) -> list[SearchRecord]:
        return []

    def get_search(self, name: str) -> SearchRecord:
        raise self._missing(name)

    def best_schedule(self, name: str) -> StoredSchedule:
        raise self._missing(name)

    def history(self, name: str) -> list[HistoryPoint]:
        raise self._missing(name)

    def list_schedules(self) -> list[StoredSchedule]:
        return []

    def _missing(self, name: str) -> NotFoundError:
        return NotFoundError("search", name, f"the store {self.path} does not exist yet")


def _write_file(path: Path, write: Callable[[Path], object]) -> None:
    """Run ``write(path)``; a folder that does not exist or cannot be written is a user error
    that names the path, not a traceback."""
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder; give a file name")
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: the folder {path.parent} does not exist")
    try:
        write(path)
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    click.echo(f"wrote {path}", err=True)


def _echo_table(*renderables: Any) -> None:
    """Print rich tables as plain text (no colour, no trailing blanks) so the output is the same
    on a terminal, in a pipe and in a test."""
    width = shutil.get_terminal_size(fallback=(120, 24)).columns
    buffer = io.StringIO()
    console = Console(file=buffer, width=max(width, 80), highlight=False, color_system=None)
    for index, renderable in enumerate(renderables):
        if index:
            console.print()
        console.print(renderable)
    click.echo("\n".join(line.rstrip() for line in buffer.getvalue().splitlines()))


# --- commands -----------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """Search learning-rate schedules while models train; keep and export the best ones."""


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--local",
    is_flag=True,
    help="Check for a local run (schedsearch run): no image or shared claim needed, the "
    "entrypoint must import here. Default: the cluster's checks, as the API server's.",
)
@click.pass_context
def validate(ctx: click.Context, files: Sequence[Path], local: bool) -> None:
    """Check ScheduleSearch spec files (- reads standard input); print every problem with its
    field path, and import and check a user entrypoint."""
    failed = False
    for path in files:
        report = validate_source(path, "local" if local else "cluster")
        for line in report.lines:
            click.echo(line)
        failed = failed or not report.ok
    ctx.exit(EXIT_USER_ERROR if failed else EXIT_OK)


@cli.command("list")
@results_options
@output_option
@_translating_errors
def list_searches(results: Results, output: str) -> None:
    """List the searches in the store (or the cluster's namespace)."""
    records = results.backend.list_searches()
    if output != "table":
        items = [render.search_resource(record) for record in records]
        click.echo(
            render.dump({"apiVersion": "v1", "kind": "List", "items": items}, output), nl=False
        )
    elif not records:
        click.echo(f"No searches in {results.where}.")
    else:
        _echo_table(render.searches_table(records))


@cli.command()
@name_argument
@results_options
@output_option
@_translating_errors
def get(name: str, results: Results, output: str) -> None:
    """Show one search: phase, best result, cost and its members."""
    backend = results.backend
    record = backend.get_search(name)
    members: Sequence[MemberSummary]
    if record.members is not None:  # the cluster keeps each member's own phase
        members = record.members
    else:
        mode = str(record.spec.get("spec", {}).get("objective", {}).get("mode", "min"))
        # Member phases are not stored locally; the search's phase says where they all are.
        member_phase: MemberPhase = "Pending" if record.phase == "Interrupted" else record.phase
        members = member_summaries(
            backend.history(name), record.objective_metric, mode=mode, phase=member_phase
        )
    if output != "table":
        click.echo(render.dump(render.search_resource(record, members), output), nl=False)
        return
    if members:
        _echo_table(render.search_summary(record), render.members_table(members))
    else:
        _echo_table(render.search_summary(record))


@cli.command()
@name_argument
@results_options
@output_option
@_translating_errors
def best(name: str, results: Results, output: str) -> None:
    """The best schedule of a search: change points, provenance and a plot."""
    stored = results.backend.best_schedule(name)
    if output != "table":
        click.echo(render.dump(stored.to_resource().to_wire(), output), nl=False)
        return
    for line in render.provenance_lines(stored):
        click.echo(line)
    click.echo()
    _echo_table(render.change_points_table(stored.schedule))
    click.echo()
    click.echo(render.schedule_plot(stored.schedule))


@cli.command()
@name_argument
@click.option(
    "-o",
    "--output",
    "--format",
    "fmt",
    type=FormatChoice(FORMATS, file_hint=True),
    default=None,
    help="json or yaml: change points (Schedule.from_json / Schedule.from_dict read them); "
    "csv: step,lr per step; torch: a standalone LRScheduler module. "
    "Default: from the file's extension (.json, .yaml, .yml, .csv, .py), else json.",
)
@click.option(
    "-f",
    "--file",
    "output_file",
    type=OutputFile(FORMATS),
    default=None,
    help="Write to this file instead of standard output.",
)
@results_options
@_translating_errors
def export(name: str, fmt: str | None, output_file: Path | None, results: Results) -> None:
    """Export the best schedule of a search."""
    stored = results.backend.best_schedule(name)
    try:
        module = output_file.stem if output_file is not None else "schedule"
        text = export_schedule(stored.schedule, format_for(output_file, fmt), module_name=module)
    except ValueError as err:
        raise UserError(str(err)) from None
    if output_file is None:
        click.echo(text, nl=False)
        return
    _write_file(output_file, lambda path: path.write_text(text, encoding="utf-8"))


@cli.command()
@name_argument
@click.option(
    "-f",
    "--file",
    "output_file",
    type=OutputFile(IMAGE_FORMATS),
    required=True,
    help="Image file to write (.png, .svg, .pdf).",
)
@click.option(
    "-o",
    "--output",
    "image_format",
    type=FormatChoice(IMAGE_FORMATS, file_hint=True),
    default=None,
    help="Image format. Default: from the file's extension.",
)
@results_options
@_translating_errors
def plot(name: str, output_file: Path, image_format: str | None, results: Results) -> None:
    """Plot the best schedule against the base schedule, and the members' losses (from a
    cluster: each member's latest point only)."""
    from schedsearch.cli.plotting import plot_search

    image_format = image_format or output_file.suffix.lower().removeprefix(".")
    if image_format not in IMAGE_FORMATS:
        raise UserError(
            f"cannot tell the image format of {output_file}: name a .png, .svg or .pdf file, "
            "or give -o png|svg|pdf"
        )
    backend = results.backend
    record = backend.get_search(name)
    stored = backend.best_schedule(name)
    try:
        base = record.parsed().spec.base_schedule_for_budget()
    except (ValidationError, ValueError):
        base = None  # a spec that no longer validates still has a best schedule to show
    history = backend.history(name)
    _write_file(
        output_file,
        lambda path: plot_search(
            path,
            title=f"{name} ({record.strategy}, {record.workload})",
            best=stored.schedule,
            base=base,
            history=history,
            best_member=record.best_member,
            image_format=image_format,
        ),
    )


@cli.command()
@click.argument("reference", metavar="SEARCH", shell_complete=_complete_search_names)
@click.option(
    "-s",
    "--schedule",
    "schedules",
    multiple=True,
    metavar="FILE|family=NAME,peak=LR[,...]",
    help="A schedule to predict beside the found one (repeat to compare several): a file "
    "`export` writes, or a baseSchedule family over the search's budget, e.g. "
    "family=wsd,peak=0.1,decay=400 (keys: peak, min, warmup, decay, cooldown or the "
    "baseSchedule's field names; warmup defaults to the law's).",
)
@click.option(
    "-f",
    "--file",
    "output_file",
    type=OutputFile(IMAGE_FORMATS),
    default=None,
    help="Also plot the predicted losses and the LRs to this image (.png, .svg, .pdf).",
)
@results_options
@output_option
@_translating_errors
def predict(
    reference: str,
    schedules: Sequence[str],
    output_file: Path | None,
    results: Results,
    output: str,
) -> None:
    """Predict the final loss of schedules with the law a finished `law` search fitted.

    SEARCH is the search's name, its spec file, or its exported schedule (JSON/YAML)."""
    from schedsearch.cli import prediction  # the law needs scipy: imported when used

    image_format = None
    if output_file is not None:
        image_format = output_file.suffix.lower().removeprefix(".")
        if image_format not in IMAGE_FORMATS:
            raise UserError(
                f"cannot tell the image format of {output_file}: name a .png, .svg or .pdf file"
            )
    try:
        search, found = prediction.found_schedule(
            reference, lambda name: results.backend.best_schedule(name).schedule
        )
        report = prediction.report(prediction.FittedLaw.of(found, search=search), schedules)
    except prediction.PredictError as err:
        raise UserError(str(err)) from None
    if output != "table":
        click.echo(render.dump(report.document(), output), nl=False)
    else:
        for line in report.lines():
            click.echo(line)
        click.echo()
        _echo_table(report.table())
    if output_file is not None:
        _write_file(
            output_file,
            lambda path: prediction.plot_report(path, report, image_format=str(image_format)),
        )


@cli.command()
@name_argument
@click.option(
    "--with-schedule",
    is_flag=True,
    help="Delete its best schedule (NAME-best) too. Kept by default: a stored schedule outlives "
    "its search, and `best`/`export NAME` still read it.",
)
@results_options
@_translating_errors
def delete(name: str, with_schedule: bool, results: Results) -> None:
    """Delete a search: its record, history and checkpoints (local store), or its ScheduleSearch
    (cluster: the controller stops its pods)."""
    from schedsearch.cli import deletion

    for line in deletion.delete_search(
        results.backend, name, where=results.where, with_schedule=with_schedule
    ):
        click.echo(line)


@cli.command()
@results_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. The default lets only this machine connect; 0.0.0.0 lets "
    "every machine that reaches this one read the results.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on (0: any free port; the URL printed on start has it).",
)
@_translating_errors
def ui(results: Results, host: str, port: int) -> None:
    """Serve a read-only web page over the results: searches, their members' curves and
    strategy decisions, and the stored schedules with downloads."""
    from schedsearch.ui import server

    backend = results.backend  # an unusable store or cluster fails here, before listening
    try:
        server.serve(backend, where=results.where, host=host, port=port, announce=click.echo)
    except OSError as err:
        raise UserError(
            f"cannot listen on {host}:{port}: {err.strerror or err} "
            "(choose another --port, or --host)"
        ) from None
    except KeyboardInterrupt:
        click.echo("stopped", err=True)


@cli.command()
@click.argument("shell", type=click.Choice(COMPLETION_SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script, e.g. eval "$(schedsearch completion bash)"."""
    complete_var = f"_{PROG.upper()}_COMPLETE"
    completer = get_completion_class(shell)
    if completer is None:  # pragma: no cover - click ships all three
        raise UserError(f"no completion support for {shell}")
    click.echo(completer(cli, {}, PROG, complete_var).source())


# --- run (the local engine) ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    """Everything ``schedsearch run`` was asked, handed to the engine as one value."""

    spec_path: Path
    store_path: Path
    ray_address: str | None
    resume: bool
    name: str | None


@cli.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@store_option
@click.option(
    "--ray-address",
    default=None,
    help="Join this Ray cluster (HOST:PORT of `ray start --head`) instead of starting one "
    "locally; $RAY_ADDRESS does the same. The project and the entrypoint's module are shipped "
    "to its workers.",
)
@click.option("--resume", is_flag=True, help="Continue a search of the same name from its state.")
@click.option("--name", default=None, help="Run under this name instead of metadata.name.")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve the members' metrics (loss, LR, steps) for Prometheus at "
    "http://0.0.0.0:PORT/metrics while the search runs.",
)
@_translating_errors
def run(
    spec_path: Path,
    store_path: Path | None,
    ray_address: str | None,
    resume: bool,
    name: str | None,
    metrics_port: int | None,
) -> None:
    """Run a search on this machine (the embedded engine) and store its results."""
    options = RunOptions(spec_path, _store_path(store_path), ray_address, resume, name)
    search = _named(load_spec(options.spec_path), options.name)
    try:
        # Imported here: the CLI works without the engine's dependencies (Ray) until `run`.
        from schedsearch.engine import run as engine
    except ModuleNotFoundError as err:
        raise _engine_missing(err) from None
    try:
        with run_metrics.serving(search, metrics_port) as reporters:
            engine.run_search(
                search, options=options, store=SQLiteStore(options.store_path), reporters=reporters
            )
    except engine.SearchFailed as err:
        raise UserError(f"search {search.name!r} failed: {err}") from None
    except engine.RayConnectError as err:
        raise UserError(str(err)) from None
    except engine.SearchInterrupted as stop:
        click.echo(f"Interrupted ({stop}). Continue with: {_resume_command(options)}", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


def _resume_command(options: RunOptions) -> str:
    """The command that continues this run: its own spec file, name, store and Ray."""
    words = ["schedsearch", "run", str(options.spec_path), "--resume"]
    if options.name is not None:
        words += ["--name", options.name]
    if options.store_path != default_store_path():
        words += ["--store", str(options.store_path)]
    if options.ray_address is not None:
        words += ["--ray-address", options.ray_address]
    return shlex.join(words)


def _named(search: ScheduleSearch, name: str | None) -> ScheduleSearch:
    if name is None:
        return search
    data = search.to_wire()
    data["metadata"]["name"] = name
    try:
        return ScheduleSearch.model_validate(data)
    except ValidationError as err:
        raise UserError(f"--name: {err.errors()[0]['msg']}") from None


def _engine_missing(err: ModuleNotFoundError) -> UserError:
    """What to tell a user whose installation cannot import the local engine."""
    if err.name is not None and (err.name + ".").startswith("schedsearch.engine."):
        return UserError(
            "the local engine (schedsearch.engine) is not part of this installation; "
            "schedsearch run needs it"
        )
    return UserError(
        f"the local engine needs the Python package {err.name!r}, which is not installed"
    )


# --- entry point --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Console script: run the CLI and exit with its documented codes."""
    try:
        code = cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":
    main()
