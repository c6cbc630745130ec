"""``python -m schedsearch.trainers pod``: what a member pod runs.

The controller starts each pod with the search's spec and the member's identity in the
environment (names in ``trainers.channel``). The pod runs its role:

* ``autolrs``: the whole AutoLRS search in this pod, resuming from the last completed stage
  found in the checkpoint directory; its result goes to the controller with the final report.
* ``pbt``: member ``i`` of the population; the controller hosts the population and answers each
  checkpoint report with the member's decision. The member starts where the controller says
  (``SCHEDSEARCH_MEMBER_START``: its last checkpoint, or the one it was last told to exploit);
  if that file is gone it asks the controller's PBT coordinator for its restart point.
* ``hdet``: replica ``RANK`` of ``WORLD_SIZE``, meeting the others at ``MASTER_ADDR``; every
  replica resumes from the group's last sync checkpoint; rank 0 sends the result.
* ``control``: once the search has its result, the control run trains the found schedule and
  the base schedule (``SCHEDSEARCH_CONTROL``) from a seed no member used, and reports both
  final objectives; a replacement pod starts both over.

Exit codes: 0 done, ``channel.EXIT_CONFIG`` when this spec cannot run here (unknown workload,
bad entrypoint, an arithmetic error on its numbers; the controller fails the search instead of
retrying), anything else a crash the controller answers with a new pod.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

from schedsearch.trainers import channel, harness, report_client
from schedsearch.trainers import metrics as trainer_metrics
from schedsearch.trainers.config import BaseScheduleConfig
from schedsearch.trainers.evaluation import EvaluationConfig, control_run, search_phases
from schedsearch.trainers.schedules import Schedule
from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.pbt import coordinator as pbt_coordinator
from schedsearch.trainers.strategies.pbt.coordinator import StartPoint
from schedsearch.trainers.strategies.registry import StrategyConfig
from schedsearch.trainers.strategies.strategy import RunContext
from schedsearch.trainers.workloads import Workload, WorkloadError, get_workload

log = logging.getLogger("schedsearch.trainers.pod")
# Progress reports (not decisions, not results) give up after this long: training goes on.
PROGRESS_REPORT_SECONDS = 20.0


class PodConfigError(ValueError):
    """The pod's environment or spec cannot run; the message names the variable or field."""


# -- what the pod was given -----------------------------------------------------------------------


@dataclass(frozen=True)
class PodEnv:
    """The environment the controller set, checked."""

    search: str
    namespace: str
    role: str
    member: int
    attempt: int
    spec: dict[str, Any]
    checkpoint_dir: Path
    report_url: str
    token: str
    start: dict[str, Any] | None = None
    report_seq: int = 0
    # The control run's inputs (``channel.ENV_CONTROL``); None for the strategies' pods.
    control: Any = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> PodEnv:
        def need(name: str) -> str:
            value = environ.get(name, "")
            if not value:
                raise PodConfigError(f"{name}: required (set by the controller)")
            return value

        role = need(channel.ENV_ROLE)
        if role not in channel.ROLES:
            raise PodConfigError(
                f"{channel.ENV_ROLE}: must be one of {channel.ROLES}, got {role!r}"
            )
        return cls(
            search=need(channel.ENV_SEARCH),
            namespace=need(channel.ENV_NAMESPACE),
            role=role,
            member=_int_var(environ, channel.ENV_MEMBER, need(channel.ENV_MEMBER)),
            attempt=_int_var(environ, channel.ENV_ATTEMPT, environ.get(channel.ENV_ATTEMPT, "1")),
            spec=_json_var(channel.ENV_SPEC, need(channel.ENV_SPEC)),
            checkpoint_dir=Path(need(channel.ENV_CHECKPOINT_DIR)),
            report_url=need(channel.ENV_REPORT_URL),
            token=need(channel.ENV_REPORT_TOKEN),
            report_seq=_int_var(
                environ, channel.ENV_REPORT_SEQ, environ.get(channel.ENV_REPORT_SEQ) or "0"
            ),
            start=_json_var(
                channel.ENV_MEMBER_START, environ.get(channel.ENV_MEMBER_START) or "null"
            ),
            control=_json_var(channel.ENV_CONTROL, environ.get(channel.ENV_CONTROL) or "null"),
        )


def _int_var(environ: Mapping[str, str], name: str, raw: str) -> int:
    if not raw.isdigit():
        raise PodConfigError(f"{name}: must be an integer >= 0, got {raw!r}")
    return int(raw)


def _json_var(name: str, raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise PodConfigError(f"{name}: not JSON ({err})") from None


class _SpecPart(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")


class _Workload(_SpecPart):
    builtin: str | None = None
    entrypoint: str | None = None


class _Objective(_SpecPart):
    metric: str = "val_loss"
    mode: str = "min"


class _Budget(_SpecPart):
    steps: int = pydantic.Field(gt=0)


class _Bounds(_SpecPart):
    min: float = pydantic.Field(gt=0)
    max: float = pydantic.Field(gt=0)


class PodSpec(_SpecPart):
    """The part of a ScheduleSearch spec a trainer pod reads (the rest is the controller's)."""

    workload: _Workload
    objective: _Objective = pydantic.Field(default_factory=_Objective)
    budget: _Budget
    lr_bounds: _Bounds = pydantic.Field(alias="lrBounds")
    base_schedule: BaseScheduleConfig | None = pydantic.Field(None, alias="baseSchedule")
    strategy: StrategyConfig
    seed: int = 0
    evaluation: EvaluationConfig = pydantic.Field(default_factory=EvaluationConfig)

    @classmethod
    def parse(cls, data: Any) -> PodSpec:
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in ("spec", *first["loc"]))
            raise PodConfigError(f"{where}: {first['msg']}") from None

    @property
    def workload_ref(self) -> str:
        ref = self.workload.builtin or self.workload.entrypoint
        if not ref:
            raise PodConfigError("spec.workload: set builtin or entrypoint")
        return ref

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.lr_bounds.min, self.lr_bounds.max)


# -- reporting ------------------------------------------------------------------------------------


class Tee:
    """A Reporter that forwards to several."""

    def __init__(self, *reporters: base.Reporter | None) -> None:
        self.reporters = [r for r in reporters if r is not None]

    def on_progress(
        self, member: int, step: int, loss: float, lr: float, val_loss: float | None = None
    ) -> None:
        for reporter in self.reporters:
            reporter.on_progress(member, step, loss, lr, val_loss)

    def on_event(self, kind: str, message: str, **data: Any) -> None:
        for reporter in self.reporters:
            reporter.on_event(kind, message, **data)


class ChannelReporter:
    """Sends progress to the controller at the moments that matter: each evaluation (HDET's
    syncs) and each AutoLRS stage. Best effort: a controller that is down delays nothing."""

    def __init__(self, client: report_client.ReportClient, member: int) -> None:
        self.client = client
        self.member = member
        self.step = 0
        self.lr: float | None = None

    def on_progress(
        self, member: int, step: int, loss: float, lr: float, val_loss: float | None = None
    ) -> None:
        self.step, self.lr = step, lr
        if val_loss is not None:
            self._send(val_loss)

    def on_event(self, kind: str, message: str, **data: Any) -> None:
        if kind == "stage" and "decision" not in data:  # AutoLRS stage boundaries
            self._send(None)

    def _send(self, objective: float | None) -> None:
        config = {"lr": self.lr} if self.lr is not None and math.isfinite(self.lr) else None
        report = channel.Report(
            member=self.member,
            kind="checkpoint",
            step=self.step,
            objective=objective,
            config=config,
        )
        try:
            self.client.send(report, max_elapsed=PROGRESS_REPORT_SECONDS)
        except (report_client.ChannelUnavailable, report_client.ReportRejected) as err:
            log.warning("progress report skipped: %s", err)


# -- the roles ------------------------------------------------------------------------------------


@dataclass
class Pod:
    env: PodEnv
    spec: PodSpec
    workload: Workload
    client: report_client.ReportClient
    reporter: base.Reporter

    def final(self, step: int, result: base.SearchResult | None, member_steps: int) -> None:
        objective = None if result is None else result.best_objective
        report = channel.Report(
            member=self.env.member,
            kind="final",
            step=step,
            objective=objective,
            member_steps=member_steps,
            result=None if result is None else result.to_dict(),
        )
        self.client.send(report)


def _context(pod: Pod, out_dir: Path) -> RunContext:
    spec = pod.spec
    return RunContext(
        workload=spec.workload_ref,
        total_steps=spec.budget.steps,
        lr_bounds=spec.bounds,
        seed=spec.seed,
        out_dir=out_dir,
        reporter=pod.reporter,
        phases=search_phases(spec),
        base=spec.base_schedule,
        metric=spec.objective.metric,
    )


def run_trainer(pod: Pod) -> None:
    """A strategy whose whole search runs in one process: this pod runs it, resuming from its
    own folder of the checkpoint volume, and reports the result."""
    chosen = pod.spec.strategy
    out = pod.env.checkpoint_dir / chosen.name
    result = chosen.strategy.run(chosen.config, _context(pod, out))
    pod.final(pod.spec.budget.steps, result, result.member_steps)


def run_pbt(pod: Pod) -> None:
    from schedsearch.trainers.strategies.pbt.runner import MemberLoop, run_member

    config, env = pod.spec.strategy.pbt, pod.env
    assert config is not None
    if env.start is None:
        raise PodConfigError(f"{channel.ENV_MEMBER_START}: required for a PBT member")
    start = _start_of(env.start)
    earlier_steps = int(env.start.get("memberSteps") or 0)
    loop: MemberLoop | None = None
    coordinator = report_client.HTTPCoordinator(
        pod.client,
        trained_steps=lambda: earlier_steps + (loop.trained_steps if loop is not None else 0),
        attempt=env.attempt,
    )
    try:
        start = resume_point(start, env.member, coordinator)
    except report_client.MemberStopped as stopped:
        pod.reporter.on_event("stopped", str(stopped))
        return
    trainer = harness.Trainer(pod.workload, seed=pod.spec.seed + env.member)
    loop = MemberLoop(
        env.member,
        trainer,
        dict(start.config),
        coordinator,
        total_steps=pod.spec.budget.steps,
        interval=config.perturbation_interval,
        checkpoint_dir=env.checkpoint_dir,
        metric=pod.spec.objective.metric,
        reporter=pod.reporter,
        phases=search_phases(pod.spec),
    )
    loop.pinned = coordinator.pinned  # the files other members' start points name
    if start.checkpoint_path is not None:
        pod.reporter.on_event(
            "start",
            f"member {env.member} resumes at step {start.step} from {start.checkpoint_path}",
        )
    loop.start_from(start.step, start.checkpoint_path, loop.config)
    run_member(loop)


def _start_of(given: Any) -> StartPoint:
    if not isinstance(given, Mapping):
        raise PodConfigError(f"{channel.ENV_MEMBER_START}: required for a PBT member")
    try:
        return StartPoint.from_dict(dict(given))
    except ValueError as err:
        raise PodConfigError(f"{channel.ENV_MEMBER_START}: {err}") from None


def resume_point(
    start: StartPoint, member: int, coordinator: report_client.HTTPCoordinator
) -> StartPoint:
    """Where a PBT member pod resumes: the controller's start point (its last checkpoint, or the
    one it was last told to copy) when that file is there, which it normally is (the source's
    rotation keeps every file a start point names); else the coordinator's restart point, which
    re-records the member's lineage to the file it loads instead, so the found schedule still
    describes how its weights were trained."""
    return pbt_coordinator.resume(start, lambda: coordinator.restart_point(member))


def run_replica(pod: Pod) -> None:
    """One replica of a replica set (its rank and world from the rendezvous environment the
    controller sets); rank 0 reports the result for the group."""
    chosen = pod.spec.strategy
    lead = pod.env.member == 0
    context = _context(pod, pod.env.checkpoint_dir)
    if not lead:
        context = dataclasses.replace(context, reporter=base.NullReporter())
    result = chosen.strategy.run_replica(chosen.config, context)
    steps = result.member_steps if result is not None else 0
    pod.final(pod.spec.budget.steps, result if lead else None, steps)


def run_control(pod: Pod) -> None:
    found, base, seed = control_inputs(pod.env.control)

    def progress(label: str, step: int) -> None:
        pod.reporter.on_event("control", f"control run: step {step} of the {label} schedule")

    result = control_run(
        pod.workload,
        found,
        base,
        seed=seed,
        metric=pod.spec.objective.metric,
        mode=pod.spec.objective.mode,
        on_progress=progress,
    )
    log.info("control run: %s", result.summary())
    data = result.to_dict()
    for key in ("found", "base"):  # a diverged schedule has no objective; JSON has no NaN
        data[key] = data[key] if math.isfinite(data[key]) else None
    report = channel.Report(
        member=pod.env.member,
        kind="control",
        step=result.steps,
        member_steps=found.total_steps + base.total_steps,
        result=data,
    )
    pod.client.send(report)


def control_inputs(given: Any) -> tuple[Schedule, Schedule, int]:
    """The found schedule, the base schedule and the seed the control run was given."""
    if not isinstance(given, Mapping):
        raise PodConfigError(f"{channel.ENV_CONTROL}: required for the control run")
    try:
        found = Schedule.from_dict(given["found"])
        base = Schedule.from_dict(given["base"])
        seed = given["seed"]
    except (KeyError, TypeError, ValueError) as err:
        raise PodConfigError(f"{channel.ENV_CONTROL}: {err}") from None
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise PodConfigError(f"{channel.ENV_CONTROL}: seed must be an integer >= 0")
    return found, base, seed


# How a member pod runs, by its strategy's shape (``Strategy.shape``).
SHAPES = {"trainer": run_trainer, "population": run_pbt, "replicas": run_replica}


def runner_of(pod: Pod) -> Callable[[Pod], None]:
    """What this pod runs: the control run, or a member of its strategy's shape."""
    if pod.env.role == "control":
        return run_control
    return SHAPES[pod.spec.strategy.strategy.shape]


# -- entry point ----------------------------------------------------------------------------------


def main(environ: Mapping[str, str] = os.environ) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        env = PodEnv.from_environ(environ)
    except PodConfigError as err:
        log.error("cannot start: %s", err)
        return channel.EXIT_CONFIG
    client = report_client.ReportClient(
        env.report_url, env.namespace, env.search, env.token, last_seq=env.report_seq
    )
    try:
        spec = PodSpec.parse(env.spec)
        workload = get_workload(spec.workload_ref)
    except (PodConfigError, WorkloadError) as err:
        reason = "UnknownWorkload" if isinstance(err, WorkloadError) else "InvalidSpec"
        return _unrunnable(client, env, reason, str(err))
    # A population member's reports are its coordinator's; the control run reports only its
    # result; the others report progress on the side.
    quiet = env.role == "control" or spec.strategy.strategy.shape == "population"
    progress = None if quiet else ChannelReporter(client, env.member)
    reporter = Tee(
        base.TextReporter(sys.stderr),
        trainer_metrics.reporter_from_env(search=env.search, namespace=env.namespace),
        progress,
    )
    pod = Pod(env, spec, workload, client, reporter)
    log.info(
        "%s/%s: %s member %d (attempt %d)",
        env.namespace,
        env.search,
        env.role,
        env.member,
        env.attempt,
    )
    try:
        runner_of(pod)(pod)
    except PodConfigError as err:
        return _unrunnable(client, env, "InvalidSpec", str(err))
    except ArithmeticError as err:
        # Arithmetic on the spec's numbers (an LR bound near the float limit, say) fails the
        # same way in every pod: a restart would only repeat it, so the search fails instead.
        return _unrunnable(client, env, "ArithmeticError", f"{type(err).__name__}: {err}")
    return 0


def _unrunnable(client: report_client.ReportClient, env: PodEnv, reason: str, message: str) -> int:
    """Tell the controller this spec cannot run (so it fails the search), then exit."""
    log.error("cannot run: %s", message)
    report = channel.Report(member=env.member, kind="fatal", reason=reason, message=message)
    try:
        client.send(report, max_elapsed=120.0)
    except (report_client.ChannelUnavailable, report_client.ReportRejected) as err:
        log.error("could not tell the controller: %s", err)
    return channel.EXIT_CONFIG
