"""The ScheduleSearch and LRSchedule resources as pydantic models: the one definition of the spec.

The CLI, the local engine and the controller parse specs through these models, and the CRDs in
``operator/crds`` are generated from them (``python -m schedsearch.api.crd``). Each cross-field
check below has a CEL twin in the model's JSON schema (``x-kubernetes-validations``), kept next to
it, so the API server and ``schedsearch validate`` refuse the same specs. Field names are camelCase
on the wire, snake_case in Python, and unknown fields are refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails

from schedsearch.api.fields import DNSLabel, DNSSubdomain, LabelValue, Quantity
from schedsearch.trainers import families, schedules
from schedsearch.trainers.config import (
    MAX_LR,
    MAX_SEED,
    MAX_STEPS,
    BaseScheduleConfig,
    FieldProblems,
    Loc,
    camel_alias,
    cel,
    raise_if_any,
    validations,
)
from schedsearch.trainers.evaluation import EvaluationConfig
from schedsearch.trainers.strategies import registry
from schedsearch.trainers.strategies.config import MAX_MEMBERS
from schedsearch.trainers.strategies.registry import StrategyConfig, StrategyName
from schedsearch.trainers.strategies.strategy import SpecView

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations are not evaluated at run time

API_GROUP: Final = "schedsearch.io"
API_VERSION_NAME: Final = "v1alpha1"
API_VERSION: Final = "schedsearch.io/v1alpha1"
SEARCH_KIND: Final = "ScheduleSearch"
SCHEDULE_KIND: Final = "LRSchedule"

# Bounds that keep objects small in etcd and CEL cost estimates finite.
MAX_STATUS_MEMBERS = 64
MAX_CONDITIONS = 16
MAX_TOLERATIONS = 32
MAX_MAP_ENTRIES = 64
MAX_SCHEDULE_POINTS = 10_000
MAX_BUDGET_STEPS = MAX_STEPS

Phase = Literal["Pending", "Running", "Succeeded", "Failed"]
MemberPhase = Literal["Pending", "Running", "Restarting", "Succeeded", "Failed"]
# The engines optimise validation loss; a metric joins this list when they can read it.
Metric = Literal["val_loss"]


# Where a spec runs. The cluster needs what a pod needs (a container image for an entrypoint, a
# shared claim for PBT's checkpoints); the local engine needs neither. Models check the cluster's
# requirements only when the validation context says {"target": "cluster"} (``schedsearch
# validate`` by default); the API server always checks them (their CEL rules are in the CRD).
Target = Literal["cluster", "local"]


def on_cluster(info: ValidationInfo) -> bool:
    """Whether this validation is for the cluster (``context={"target": "cluster"}``)."""
    return isinstance(info.context, Mapping) and info.context.get("target") == "cluster"


class ApiModel(BaseModel):
    """Base of the resource models: camelCase on the wire, no unknown fields, finite numbers."""

    model_config = ConfigDict(
        alias_generator=camel_alias, populate_by_name=True, extra="forbid", allow_inf_nan=False
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict as Kubernetes and YAML files see it (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @model_validator(mode="before")
    @classmethod
    def _ignore_derived(cls, data: Any) -> Any:
        # Computed fields (for kubectl's columns) are written with the object and come back
        # when it is read: they are derived, so they are dropped rather than refused as unknown.
        derived = {n for name in cls.model_computed_fields for n in (name, camel_alias(name))}
        if derived and isinstance(data, Mapping) and derived & data.keys():
            return {key: value for key, value in data.items() if key not in derived}
        return data


class SpecModel(ApiModel):
    """Base of the spec's models: types are strict (``steps: "3000"`` is refused, as the API
    server refuses it), while status and stored schedules, written by programs, stay lax."""

    model_config = ConfigDict(strict=True)


# --- metadata -----------------------------------------------------------------------------------

LabelKey = str  # the API server checks qualified names; keys here only need bounded length


class ObjectMeta(SpecModel):
    """The part of Kubernetes metadata a spec file may set."""

    name: DNSLabel = Field(
        description="Search name; also used as a label value on its pods, hence at most 63 chars."
    )
    namespace: DNSLabel | None = Field(default=None, description="Namespace of the search.")
    labels: dict[LabelKey, LabelValue] | None = Field(
        default=None, max_length=MAX_MAP_ENTRIES, description="Labels of the object."
    )
    annotations: dict[str, str] | None = Field(
        default=None, max_length=MAX_MAP_ENTRIES, description="Annotations of the object."
    )
    generation: int | None = Field(default=None, ge=0, description="Set by the API server.")


class ScheduleMeta(ObjectMeta):
    """Metadata of a stored schedule: a DNS subdomain name (``<search>-best`` fits)."""

    name: DNSSubdomain  # type: ignore[assignment]


# --- spec ---------------------------------------------------------------------------------------


_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
ENTRYPOINT_PATTERN = (
    rf"^({_IDENTIFIER}(\.{_IDENTIFIER})*|[^:\s]+\.py):{_IDENTIFIER}(\.{_IDENTIFIER})*$"
)


def builtin_workload_names() -> list[str]:
    """Names of the built-in workloads (from the trainers' catalog, which does not import torch)."""
    from schedsearch.trainers.catalog import BUILTIN_WORKLOAD_NAMES

    return sorted(BUILTIN_WORKLOAD_NAMES)


def _builtin_enum(schema: dict[str, Any]) -> None:
    # Resolved when the schema is generated, so importing the spec does not load every workload.
    schema["enum"] = builtin_workload_names()


class WorkloadSpec(SpecModel):
    """What is trained: a built-in workload, or a user entrypoint (on the cluster, packaged in a
    container image; locally, importable from PYTHONPATH or a .py path)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.builtin) != has(self.entrypoint)",
                "set exactly one of workload.builtin and workload.entrypoint",
            ),
        )
    )

    builtin: str | None = Field(
        default=None,
        max_length=63,
        description="A built-in workload.",
        json_schema_extra=_builtin_enum,
    )
    entrypoint: str | None = Field(
        default=None,
        max_length=253,
        pattern=ENTRYPOINT_PATTERN,
        description="module:function of a user workload: a dotted module or a .py file path, "
        "then a (dotted) attribute.",
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Trainer container image holding the entrypoint; required on the cluster "
        "with an entrypoint, unused by a local run.",
    )

    @field_validator("builtin")
    @classmethod
    def _known_builtin(cls, value: str | None) -> str | None:
        if value is not None:
            allowed = builtin_workload_names()
            if value not in allowed:
                raise ValueError(
                    f"unknown built-in workload {value!r}; allowed: {', '.join(allowed)}"
                )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> WorkloadSpec:
        if (self.builtin is None) == (self.entrypoint is None):
            raise ValueError("set exactly one of builtin (a built-in workload) and entrypoint")
        return self

    @property
    def ref(self) -> str:
        """The workload reference the trainers resolve (built-in name or entrypoint)."""
        return self.builtin if self.builtin is not None else str(self.entrypoint)


class ObjectiveSpec(SpecModel):
    """The metric the search optimises, measured on the members' evaluations."""

    metric: Metric = Field(default="val_loss", description="Metric name (val_loss).")
    mode: Literal["min", "max"] = Field(default="min", description="min or max.")


class BudgetSpec(SpecModel):
    """Training length of the found schedule (each member trains this many steps)."""

    steps: int = Field(
        gt=0, le=MAX_BUDGET_STEPS, description="Training steps of the schedule (an integer)."
    )


class LRBounds(SpecModel):
    """The range every LR the search tries stays in."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("self.max > self.min", "lrBounds.max must be greater than lrBounds.min", ".max")
        )
    )

    min: float = Field(gt=0, le=MAX_LR, description="Lowest LR tried (a number > 0).")
    max: float = Field(
        gt=0,
        le=MAX_LR,
        description=f"Highest LR tried, at most {MAX_LR:g} (larger LRs overflow in training).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> LRBounds:
        if self.max <= self.min:
            raise FieldProblems(
                [(("max",), f"must be greater than min ({self.max:g} <= {self.min:g})")]
            )
        return self


class Resources(SpecModel):
    """Per-member resources: on the cluster each member pod's requests and limits; locally the
    share of this machine each member may use."""

    cpu: Quantity = Field(
        default="1",
        description='CPU per member (a quantity > 0: 2, 500m, "0.5"). A local run gives '
        "members at most this, and less when more members run than the machine has CPUs.",
    )
    memory: Quantity = Field(default="2Gi", description="Memory per member (a quantity > 0).")
    gpu: int = Field(default=0, ge=0, le=64, description="GPUs per member.")


class EmptyDirCheckpoints(SpecModel):
    """Pod-local checkpoints: lost with the pod, not shared between pods."""

    size_limit: Quantity | None = Field(
        default=None, description="Size limit of the emptyDir (a quantity > 0)."
    )


def _one_checkpoint_source_rule() -> dict[str, str]:
    return cel(
        "has(self.persistentVolumeClaim) != has(self.emptyDir)",
        "set exactly one of checkpoints.persistentVolumeClaim and checkpoints.emptyDir",
    )


class CheckpointsSpec(SpecModel):
    """Where members keep checkpoints: a shared PersistentVolumeClaim or a pod-local emptyDir."""

    model_config = ConfigDict(json_schema_extra=validations(_one_checkpoint_source_rule()))

    persistent_volume_claim: DNSSubdomain | None = Field(
        default=None, description="Name of a ReadWriteMany claim shared by all members."
    )
    empty_dir: EmptyDirCheckpoints | None = Field(
        default=None, description="A pod-local volume (single-pod strategies only)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> CheckpointsSpec:
        if (self.persistent_volume_claim is None) == (self.empty_dir is None):
            raise ValueError("set exactly one of persistentVolumeClaim and emptyDir")
        return self


class Toleration(SpecModel):
    """A pod toleration, as in the core API."""

    key: str | None = Field(default=None, max_length=317, description="Taint key to tolerate.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="Taint value (Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate (all when empty)."
    )
    toleration_seconds: int | None = Field(
        default=None, description="NoExecute: how long the pod stays after the taint appears."
    )


class SchedulingSpec(SpecModel):
    """Where member pods may run."""

    node_selector: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_MAP_ENTRIES, description="Node labels to match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=MAX_TOLERATIONS, description="Pod tolerations."
    )
    service_account_name: DNSSubdomain | None = Field(
        default=None, description="Service account of the member pods."
    )


class FailurePolicy(SpecModel):
    """How much member failure a search absorbs before it fails."""

    max_member_restarts: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Pod failures of one member it survives, each by a new pod resuming from "
        "its checkpoint; a pod Kubernetes disrupts (eviction, preemption, drain) or that is "
        "deleted is replaced without counting.",
    )
    max_failed_members: int | None = Field(
        default=None,
        ge=0,
        le=MAX_MEMBERS,
        description="Members that may fail for good; by default all but one (the search fails "
        "when none is left).",
    )


# CEL twins of the base schedule's checks against the budget (``_base_schedule_problems``, which
# lets ``families.build_schedule`` find them). The API server defaults warmupSteps to 0 first.
_STEPS, _WARMUP = "self.budget.steps", "self.baseSchedule.warmupSteps"


def _cel_phase_steps(field: str) -> str:
    """CEL for ``families._phase_steps``: the field if set, else max(1, round(20% of the steps
    after warm-up)); round(x/5) is (2x + 5) / 10 in integers, since x/5 is never a half."""
    rest = f"({_STEPS} - {_WARMUP})"
    fifth = f"((2 * {rest} + 5) / 10)"
    default = f"({fifth} > 1 ? {fifth} : 1)"
    return f"(has(self.baseSchedule.{field}) ? self.baseSchedule.{field} : {default})"


def _base_schedule_rules() -> list[dict[str, str]]:
    family = "self.baseSchedule.family"
    return [
        cel(
            "self.baseSchedule.peakLR >= self.lrBounds.min && "
            "self.baseSchedule.peakLR <= self.lrBounds.max",
            "baseSchedule.peakLR must lie within lrBounds",
            ".baseSchedule.peakLR",
        ),
        cel(
            f"{_WARMUP} < {_STEPS}",
            "baseSchedule.warmupSteps must be smaller than budget.steps",
            ".baseSchedule.warmupSteps",
        ),
        cel(
            f"{family} != 'onecycle' || {_STEPS} >= 2",
            "family onecycle needs budget.steps >= 2 (a rise and an anneal)",
            ".budget.steps",
        ),
        cel(
            f"{family} != 'wsd' || {_WARMUP} + {_cel_phase_steps('decaySteps')} <= {_STEPS}",
            "baseSchedule.warmupSteps + decaySteps must not exceed budget.steps",
            ".baseSchedule.decaySteps",
        ),
        cel(
            f"{family} != 'infinite' || {_WARMUP} + {_cel_phase_steps('cooldownSteps')} + "
            f"{_cel_phase_steps('decaySteps')} <= {_STEPS}",
            "baseSchedule.warmupSteps + cooldownSteps + decaySteps must not exceed budget.steps",
            ".baseSchedule.cooldownSteps",
        ),
        cel(
            f"{family} != 'sgdr' || !has(self.baseSchedule.t0) || "
            f"{_STEPS} - {_WARMUP} <= {families.MAX_SGDR_CYCLES} * self.baseSchedule.t0",
            f"baseSchedule.t0 must be at least 1/{families.MAX_SGDR_CYCLES} of the steps after "
            "warm-up",
            ".baseSchedule.t0",
        ),
    ]


_SPEC_RULES = validations(
    *_base_schedule_rules(),
    # What only the cluster needs (``_cluster_problems``).
    cel(
        "!has(self.workload.entrypoint) || has(self.workload.image)",
        "workload.entrypoint needs workload.image on the cluster (the container that holds it)",
        ".workload.image",
    ),
    # Each strategy's own (``Strategy.rules``).
    *(cel(rule.expression, rule.message, rule.field) for rule in registry.spec_rules()),
)

# The trainers' strategy models cannot carry our CEL rules, so the embedding field does; the
# rules of each strategy's own fields are the spec's (``registry.spec_rules``).
_STRATEGY_RULES = validations(
    cel(
        registry.exactly_one_rule(),
        f"set exactly one of {', '.join(f'strategy.{name}' for name in registry.NAMES)}",
    ),
)


class ScheduleSearchSpec(SpecModel):
    """A search for the LR schedule of one workload, with one strategy, within a step budget."""

    model_config = ConfigDict(json_schema_extra=_SPEC_RULES)

    workload: WorkloadSpec
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    budget: BudgetSpec
    lr_bounds: LRBounds
    base_schedule: BaseScheduleConfig = Field(
        description="The baseline schedule the search starts from and is compared with."
    )
    strategy: StrategyConfig = Field(
        description=f"Exactly one of {', '.join(registry.NAMES)}.",
        json_schema_extra=_STRATEGY_RULES,
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=MAX_SEED,
        description="Seed of every member's initialisation, data order and the strategy's draws; "
        "the same spec and seed repeat the same search.",
    )
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig,
        description=(
            "How the search judges LRs (annealed evaluation), the cooldown every found schedule "
            "ends with, and the control run that checks whether the search paid off."
        ),
    )
    resources: Resources = Field(default_factory=Resources)
    checkpoints: CheckpointsSpec = Field(
        default_factory=lambda: CheckpointsSpec(empty_dir=EmptyDirCheckpoints()),
        description="Default: an emptyDir (single-pod strategies only).",
    )
    scheduling: SchedulingSpec | None = None
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy)

    @model_validator(mode="after")
    def _cross_field(self, info: ValidationInfo) -> ScheduleSearchSpec:
        raise_if_any(_cross_field_problems(_Parts.of_spec(self), cluster=on_cluster(info)))
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(
        cls,
        data: Any,
        handler: ModelWrapValidatorHandler[Self],
        info: ValidationInfo[Any],
    ) -> Self:
        # Pydantic skips the cross-field checks when any field is invalid. Run those whose fields
        # are all valid anyway, so one pass reports every problem (duplicates are dropped by
        # schedsearch.api.loading).
        try:
            return handler(data)
        except ValidationError as err:
            if not isinstance(data, Mapping):
                raise
            parts = _Parts.of_raw(data, info.context)
            problems = _cross_field_problems(parts, cluster=on_cluster(info))
            if not problems:
                raise
            extra: InitErrorDetails = {
                "type": "value_error",
                "loc": (),
                "input": data,
                "ctx": {"error": FieldProblems(problems)},
            }
            details = [_init_details(detail) for detail in err.errors(include_url=False)]
            raise ValidationError.from_exception_data(err.title, [*details, extra]) from None

    @property
    def strategy_name(self) -> StrategyName:
        return self.strategy.name

    def base_schedule_for_budget(self) -> schedules.Schedule:
        """The base schedule laid out over ``budget.steps`` (exact change points)."""
        return families.build_schedule(self.base_schedule, self.budget.steps)


def _init_details(detail: ErrorDetails) -> InitErrorDetails:
    out: InitErrorDetails = {"type": detail["type"], "loc": detail["loc"], "input": detail["input"]}
    if "ctx" in detail:
        out["ctx"] = detail["ctx"]
    return out


@dataclass(frozen=True)
class _Parts:
    """The parts of a spec the cross-field checks read; ``None`` for a part that is invalid."""

    workload: WorkloadSpec | None
    steps: int | None
    lr_bounds: LRBounds | None
    base_schedule: BaseScheduleConfig | None
    strategy: StrategyConfig | None
    checkpoints: CheckpointsSpec | None
    failure_policy: FailurePolicy | None

    @classmethod
    def of_spec(cls, spec: ScheduleSearchSpec) -> _Parts:
        return cls(
            spec.workload,
            spec.budget.steps,
            spec.lr_bounds,
            spec.base_schedule,
            spec.strategy,
            spec.checkpoints,
            spec.failure_policy,
        )

    @classmethod
    def of_raw(cls, data: Mapping[str, Any], context: Any) -> _Parts:
        """Each part validated on its own from the raw spec (its default when absent)."""
        budget = _raw_part(data, "budget", context)
        return cls(
            _raw_part(data, "workload", context),
            budget.steps if isinstance(budget, BudgetSpec) else None,
            _raw_part(data, "lr_bounds", context),
            _raw_part(data, "base_schedule", context),
            _raw_part(data, "strategy", context),
            _raw_part(data, "checkpoints", context),
            _raw_part(data, "failure_policy", context),
        )


def _raw_part(data: Mapping[str, Any], name: str, context: Any) -> Any:
    info = ScheduleSearchSpec.model_fields[name]
    model = info.annotation
    assert isinstance(model, type) and issubclass(model, BaseModel)
    key = info.alias or name
    if key not in data and name not in data:
        default = info.get_default(call_default_factory=True)
        return default if isinstance(default, model) else None
    try:
        return model.model_validate(data.get(key, data.get(name)), context=context)
    except ValidationError:
        return None


def _cross_field_problems(parts: _Parts, *, cluster: bool) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    if parts.steps is not None and parts.base_schedule is not None:
        problems += _base_schedule_problems(parts.base_schedule, parts.lr_bounds, parts.steps)
    chosen = parts.strategy
    if chosen is not None and parts.steps is not None:
        problems += chosen.strategy.problems(chosen.config, _spec_view(parts, parts.steps))
    if cluster:
        problems += _cluster_problems(parts.workload)
        if chosen is not None:
            view = _spec_view(parts, parts.steps or 0)
            problems += chosen.strategy.cluster_problems(chosen.config, view)
    return problems


def _base_schedule_problems(
    base: BaseScheduleConfig, bounds: LRBounds | None, steps: int
) -> list[tuple[Loc, str]]:
    peak = base.peak_lr
    if bounds is not None and not bounds.min <= peak <= bounds.max:
        return [
            (
                ("baseSchedule", "peakLR"),
                f"{peak:g} is outside lrBounds [{bounds.min:g}, {bounds.max:g}]",
            )
        ]
    after_warmup = steps - base.warmup_steps
    # Stricter than the builder's own limit for tMult > 1, so the API server can check it.
    if base.t0 is not None and after_warmup > families.MAX_SGDR_CYCLES * base.t0:
        return [
            (
                ("baseSchedule", "t0"),
                f"must be at least 1/{families.MAX_SGDR_CYCLES} of the steps after warm-up "
                f"({base.t0} * {families.MAX_SGDR_CYCLES} < {after_warmup})",
            )
        ]
    try:
        families.build_schedule(base, steps)
    except ValueError as err:
        # The family builder names the field first ("warmupSteps: ..."); keep its words.
        field, _, message = str(err).partition(": ")
        if message and field.isidentifier():
            return [(("baseSchedule", field), message)]
        return [(("baseSchedule",), str(err))]
    return []


def _spec_view(parts: _Parts, steps: int) -> SpecView:
    base = parts.base_schedule
    failure = parts.failure_policy
    return SpecView(
        steps=steps,
        warmup=0 if base is None or base.family == "onecycle" else base.warmup_steps,
        max_failed_members=failure.max_failed_members if failure is not None else None,
        checkpoint_claim=None
        if parts.checkpoints is None
        else parts.checkpoints.persistent_volume_claim is not None,
    )


def _cluster_problems(workload: WorkloadSpec | None) -> list[tuple[Loc, str]]:
    """What only the cluster needs of the spec's common fields (the CRD's rules check it at
    admission; a strategy's own are ``Strategy.cluster_problems``); reported together with the
    spec's other cross-field problems."""
    problems: list[tuple[Loc, str]] = []
    if workload is not None and workload.entrypoint is not None and workload.image is None:
        problems.append(
            (
                ("workload", "image"),
                "required with entrypoint on the cluster (the image that holds it); a local run "
                "needs none (schedsearch validate --local)",
            )
        )
    return problems


# --- status -------------------------------------------------------------------------------------


def _list_map(key: str) -> dict[str, Any]:
    # Entries keyed by ``key``: server-side apply merges them instead of replacing the list.
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


class Condition(ApiModel):
    """A condition as in metav1.Condition (Ready, Progressing, Degraded, ...)."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9.-]+/)?[A-Za-z][A-Za-z0-9_]*$",
        description="Condition type: Running, Succeeded, Failed or Degraded.",
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Why, in one CamelCase word (e.g. InvalidSpec, ScheduleStored).",
    )
    message: str = Field(default="", max_length=32768, description="Why, for humans.")
    last_transition_time: datetime = Field(description="When the status last changed.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The spec generation the condition was set for."
    )


class MemberSummary(ApiModel):
    """One member (PBT member, AutoLRS trainer, HDET replica group) in a few fields."""

    id: int = Field(ge=0, description="Member index, from 0.")
    phase: MemberPhase = Field(
        default="Pending",
        description="Pending, Running, Restarting, Succeeded or Failed.",
    )
    step: int = Field(default=0, ge=0, description="Training steps the member has done.")
    lr: float | None = Field(default=None, ge=0, description="Its current learning rate.")
    objective: float | None = Field(default=None, description="Its last objective value.")
    restarts: int = Field(default=0, ge=0, description="Times its pod was restarted.")


# Significant digits of the objective in kubectl's BEST column.
OBJECTIVE_DIGITS = 4


class BestResult(ApiModel):
    """The best objective seen so far and the stored schedule that reached it."""

    objective: float = Field(description="The best objective value (full precision).")
    member: int = Field(ge=0, description="The member that reached it.")
    step: int = Field(ge=0, description="The step at which it was measured.")
    schedule: DNSSubdomain | None = Field(
        default=None,
        description="Name of the LRSchedule holding the schedule, once it is stored (never "
        "before: a running or failed search names none).",
    )

    @computed_field(  # type: ignore[prop-decorator]
        description=f"The objective to {OBJECTIVE_DIGITS} significant digits (kubectl's BEST)."
    )
    @property
    def objective_rounded(self) -> str:
        return f"{self.objective:.{OBJECTIVE_DIGITS}g}"


class ControlStatus(ApiModel):
    """The control run: the found and the base schedule trained from one fresh seed."""

    seed: int = Field(ge=0, description="The seed both schedules trained from (no member's).")
    metric: Metric = Field(description="The metric compared (val_loss).")
    mode: Literal["min", "max"] = Field(description="Whether lower or higher is better.")
    found: float | None = Field(
        default=None, description="The found schedule's final objective (absent: it diverged)."
    )
    base: float | None = Field(
        default=None, description="The base schedule's final objective (absent: it diverged)."
    )
    steps: int = Field(ge=0, description="Steps each schedule trained (the budget).")
    summary: str = Field(
        max_length=1024,
        description="The comparison in words, e.g. found 0.0081 vs base 0.0112 val_loss on a "
        "fresh seed (1000003), -28%.",
    )


class ScheduleSearchStatus(ApiModel):
    """What the controller (or the local engine) observed; written via the status subresource."""

    phase: Phase = Field(default="Pending", description="Pending, Running, Succeeded or Failed.")
    message: str | None = Field(
        default=None, max_length=4096, description="What the search is doing or why it ended."
    )
    strategy: StrategyName | None = Field(
        default=None, description="The spec's strategy, for printing."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description="Running, Succeeded, Failed and Degraded, as in metav1.Condition.",
        json_schema_extra=_list_map("type"),
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The spec generation this status describes."
    )
    members: list[MemberSummary] = Field(
        default_factory=list,
        max_length=MAX_STATUS_MEMBERS,
        description=f"At most {MAX_STATUS_MEMBERS} members; larger populations list the best.",
        json_schema_extra=_list_map("id"),
    )
    best: BestResult | None = Field(
        default=None, description="The best objective so far and where its schedule is stored."
    )
    member_steps: int | None = Field(
        default=None,
        ge=0,
        description="The search's cost: steps summed over all members and probes.",
    )
    control: ControlStatus | None = Field(
        default=None,
        description="The control run's comparison, when evaluation.control.enabled asked for "
        "one and it finished.",
    )
    start_time: datetime | None = Field(default=None, description="When members started.")
    completion_time: datetime | None = Field(default=None, description="When the search ended.")

    @computed_field(  # type: ignore[prop-decorator]
        description="Steps done by the slowest listed member (kubectl's STEPS, next to BUDGET)."
    )
    @property
    def steps_done(self) -> int | None:
        return min((member.step for member in self.members), default=None)


# --- the resources ------------------------------------------------------------------------------

_META_KEYS = frozenset(ObjectMeta.model_fields.keys())


def _spec_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata fields the models know, out of a full API-server object's metadata."""
    by_alias = {camel_alias(key): key for key in _META_KEYS}
    return {k: v for k, v in metadata.items() if k in by_alias and v is not None}


class ScheduleSearch(ApiModel):
    """A search for a learning-rate schedule (the ScheduleSearch custom resource)."""

    api_version: Literal["schedsearch.io/v1alpha1"] = API_VERSION
    kind: Literal["ScheduleSearch"] = SEARCH_KIND
    metadata: ObjectMeta
    spec: ScheduleSearchSpec
    status: ScheduleSearchStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ScheduleSearch:
        """Parse an object read from the API server, ignoring server-managed metadata."""
        data = dict(obj)
        data["metadata"] = _spec_metadata(obj.get("metadata") or {})
        return cls.model_validate(data)


class ObjectiveValue(ApiModel):
    """An objective value and the metric it is of."""

    metric: Metric = Field(description="Metric name (val_loss).")
    value: float = Field(description="Its value.")


class Provenance(ApiModel):
    """Where a stored schedule came from. Further keys (strategy-specific) are kept as given."""

    model_config = ConfigDict(extra="allow")

    search: str | None = Field(
        default=None, max_length=253, description="The search that found it."
    )
    namespace: str | None = Field(
        default=None, max_length=63, description="Namespace of that search."
    )
    strategy: StrategyName | None = Field(default=None, description=", ".join(registry.NAMES) + ".")
    workload: str | None = Field(
        default=None, max_length=253, description="Built-in name or entrypoint trained."
    )
    objective: ObjectiveValue | None = Field(
        default=None, description="The objective the schedule reached."
    )
    member: int | None = Field(default=None, ge=0, description="The member that followed it.")
    created_at: datetime | None = Field(default=None, description="When it was stored.")


class SchedulePoint(ApiModel):
    """A change point: from step on the LR moves from lr by interp towards the next point's LR
    (or endLR, reached after span steps); the last point holds."""

    step: int = Field(ge=0, description="Step at which this point starts.")
    lr: float = Field(ge=0, description="LR at that step.")
    interp: schedules.Interp = Field(
        default="constant", description="How the LR moves on until the next point."
    )
    end_lr: float | None = Field(
        default=None, ge=0, description="LR reached after span steps (instead of the next LR)."
    )
    span: int | None = Field(default=None, ge=1, description="Steps to reach endLR.")


class LRScheduleSpec(ApiModel):
    """A schedule as data: change points over totalSteps steps, plus its provenance."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("self.points[0].step == 0", "the first change point must be at step 0", ".points"),
            cel(
                "self.points[size(self.points) - 1].step <= self.totalSteps",
                "the last change point must not lie past totalSteps",
                ".points",
            ),
        )
    )

    total_steps: int = Field(
        gt=0, le=MAX_BUDGET_STEPS, description="Training steps the schedule spans."
    )
    points: list[SchedulePoint] = Field(
        min_length=1,
        max_length=MAX_SCHEDULE_POINTS,
        description="Change points in increasing step order, the first at step 0.",
    )
    provenance: Provenance = Field(
        default_factory=Provenance, description="Where the schedule came from."
    )

    @model_validator(mode="after")
    def _replays(self) -> LRScheduleSpec:
        # The trainers' Schedule checks ordering and segment shapes; one set of rules.
        self.to_schedule()
        return self

    def to_schedule(self) -> schedules.Schedule:
        return schedules.Schedule.from_dict(self.to_wire())

    @classmethod
    def from_schedule(
        cls, schedule: schedules.Schedule, provenance: Provenance | None = None
    ) -> LRScheduleSpec:
        """Wrap a trainers ``Schedule``; ``provenance`` fields win over the schedule's own keys."""
        data = schedule.to_dict()
        data.pop("format", None)
        merged = dict(schedule.provenance)
        if provenance is not None:
            merged.update(provenance.to_wire())
        data["provenance"] = merged
        return cls.model_validate(data)


class LRSchedule(ApiModel):
    """A stored schedule (the LRSchedule custom resource): replays exactly, exports anywhere."""

    api_version: Literal["schedsearch.io/v1alpha1"] = API_VERSION
    kind: Literal["LRSchedule"] = SCHEDULE_KIND
    metadata: ScheduleMeta
    spec: LRScheduleSpec

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> LRSchedule:
        data = dict(obj)
        data["metadata"] = _spec_metadata(obj.get("metadata") or {})
        return cls.model_validate(data)


def best_schedule_name(search: str) -> str:
    """Name of the LRSchedule holding a search's best schedule."""
    return f"{search}-best"


def finite_or_none(value: float | None) -> float | None:
    """Status and provenance carry JSON numbers: NaN or infinity becomes absent."""
    return value if value is not None and math.isfinite(value) else None
