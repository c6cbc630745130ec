"""``schedsearch predict``: a finished ``law`` search's fitted law, asked about other schedules.

A ``law`` search keeps its fitted law in the found schedule's provenance: ``law`` (the law's
parameters; its ``lr_scale`` is the probes' trunk LR), ``lawWarmup`` (the steps the law treats as
warm-up), ``fitError`` and ``heldOutError`` (how far its predictions were from the probe points it
was fitted on, and from the trunk's tail when that was left out), ``predictedFinal`` (its
prediction for the found schedule). Any schedule over the same budget can then be compared with
the found one for the cost of evaluating the law, without training.

Every prediction here goes through the law's own ``predict``, with the stored warm-up: the found
schedule's predicted final loss is then exactly the stored ``predictedFinal``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError
from rich.table import Table

from schedsearch.api.loading import validation_problems
from schedsearch.cli.render import number
from schedsearch.trainers import families
from schedsearch.trainers.config import BaseScheduleConfig, camel_alias
from schedsearch.trainers.schedules import Schedule
from schedsearch.trainers.strategies.law import laws

FOUND = "found"
# Points of each predicted curve (the plot and ``-o json``); the table shows a few of them.
CURVE_POINTS = 200
# Where the table shows the predicted loss, as shares of the budget (the final loss is added).
TABLE_SHARES = (0.25, 0.5, 0.75)
# Bounds the memory of one evaluation: the law's design holds a (points x annealing steps) matrix.
MAX_DESIGN_CELLS = 4_000_000
# Short names for the baseSchedule fields a ``--schedule family=...`` most often sets; the
# fields' own names (peakLR, warmupSteps, decaySteps, ...) are accepted too.
SHORT_KEYS = {
    "peak": "peakLR",
    "min": "minLR",
    "warmup": "warmupSteps",
    "decay": "decaySteps",
    "cooldown": "cooldownSteps",
}
# Fields whose values are words, not numbers.
WORD_FIELDS = ("family", "decayShape")
_INTEGER = re.compile(r"^[+-]?\d+$")


class PredictError(ValueError):
    """Something the user can fix: not a law search, a schedule that cannot be read or built."""


# --- the fitted law -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FittedLaw:
    """A law search's fitted law and how far to trust it, read from its found schedule."""

    search: str
    found: Schedule
    law: laws.Law
    warmup: int
    fit_error: float | None
    held_out_error: float | None
    predicted_final: float | None
    trunk_lr: float | None

    @classmethod
    def of(cls, found: Schedule, *, search: str) -> FittedLaw:
        """The law stored in ``found``'s provenance; ``PredictError`` when it holds none (the
        search was not a ``law`` search) or holds a broken one."""
        provenance = found.provenance
        if "law" not in provenance:
            strategy = provenance.get("strategy")
            came_from = f"a {strategy} search" if strategy else "a search with no fitted law"
            raise PredictError(
                f"{search}: its best schedule came from {came_from}; only law searches can "
                "predict (their schedule's provenance holds the fitted law)"
            )
        law_data = provenance["law"]
        if not isinstance(law_data, Mapping):
            raise PredictError(f"{search}: provenance.law: expected a mapping, got {law_data!r}")
        trunk_lr = _optional_number(provenance, "trunkLR", search)
        if "lr_scale" not in law_data and trunk_lr is not None:
            law_data = {**law_data, "lr_scale": trunk_lr}  # the law's LR unit is the trunk LR
        try:
            law = laws.law_from_dict(law_data)
        except ValueError as err:
            raise PredictError(f"{search}: provenance.{err}") from None
        warmup = provenance.get("lawWarmup")
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
            raise PredictError(
                f"{search}: provenance.lawWarmup: expected the law's warm-up steps (an integer "
                f">= 0), got {warmup!r}"
            )
        return cls(
            search=search,
            found=found,
            law=law,
            warmup=warmup,
            fit_error=_optional_number(provenance, "fitError", search),
            held_out_error=_optional_number(provenance, "heldOutError", search),
            predicted_final=_optional_number(provenance, "predictedFinal", search),
            trunk_lr=trunk_lr,
        )

    @property
    def budget(self) -> int:
        """The search's budget in steps: the length of the schedule it found."""
        return self.found.total_steps

    def trust_lines(self) -> list[str]:
        """What the law is and how well it fitted, for the user to judge its predictions."""
        scale = f"trunk LR {self.trunk_lr:.4g}, " if self.trunk_lr is not None else ""
        lines = [
            f"law {self.law.name} fitted by search {self.search} ({scale}warm-up {self.warmup} "
            f"steps, budget {self.budget} steps)",
            f"fit error {_percent(self.fit_error)} (mean relative error on the probe points), "
            f"held-out error {_percent(self.held_out_error)} (on the trunk's tail, predicted by "
            "a fit without it): expect predictions to be off by about this much",
        ]
        stalled = self.found.provenance.get("stalled")
        if isinstance(stalled, str):
            lines.append(f"warning: {stalled}")
        objective = self.found.provenance.get("objective")
        if isinstance(objective, Mapping) and isinstance(objective.get("value"), (int, float)):
            lines.append(
                f"found schedule: predicted {number(self.predicted_final)}, measured "
                f"{objective.get('metric', 'objective')} {number(float(objective['value']))}"
            )
        return lines


def _optional_number(provenance: Mapping[str, Any], key: str, search: str) -> float | None:
    value = provenance.get(key)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise PredictError(f"{search}: provenance.{key}: expected a number, got {value!r}")
    return float(value)


def _percent(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2%}"


# --- where the found schedule comes from ---------------------------------------------------------


def found_schedule(reference: str, lookup: Callable[[str], Schedule]) -> tuple[str, Schedule]:
    """The search's name and its found schedule. ``reference`` is a spec file (its search's best
    schedule is looked up), a schedule file (``export`` JSON/YAML, or ``best -o json|yaml``) or
    a search name; ``lookup`` reads a search's best schedule from the results backend."""
    path = Path(reference).expanduser()
    if not path.is_file():
        return reference, lookup(reference)
    documents = _read_documents(path)
    first = documents[0]
    if isinstance(first, Mapping) and first.get("kind") == "ScheduleSearch":
        name = _search_name(path, documents)
        return name, lookup(name)
    schedule = _schedule_of(first, str(path))
    return str(schedule.provenance.get("search") or path.name), schedule


def _read_documents(path: Path) -> list[Any]:
    """The documents of a JSON or YAML file. JSON is read as JSON: YAML 1.1 takes a number
    such as ``1e-05`` (how JSON writes small floats) for a string."""
    try:
        text = path.read_text(encoding="utf-8")
        try:
            documents = [json.loads(text)]
        except json.JSONDecodeError:
            documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise PredictError(f"{path}: cannot read: {err}") from None
    if not documents:
        raise PredictError(f"{path}: empty; expected a ScheduleSearch spec or a schedule")
    return documents


def _search_name(path: Path, documents: Sequence[Any]) -> str:
    """The name of the one search a spec file defines (the spec is not validated again: a search
    that ran keeps its results even when its spec no longer validates)."""
    searches = [
        d for d in documents if isinstance(d, Mapping) and d.get("kind") == "ScheduleSearch"
    ]
    if len(searches) != 1:
        raise PredictError(
            f"{path}: holds {len(searches)} ScheduleSearch documents; name the search instead"
        )
    name = (searches[0].get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise PredictError(f"{path}: metadata.name: the search's name is missing")
    return name


def _schedule_of(document: Any, source: str) -> Schedule:
    """A schedule document: ``Schedule.to_dict`` (what ``export`` writes) or an LRSchedule."""
    if isinstance(document, Mapping) and document.get("kind") == "LRSchedule":
        document = document.get("spec")
    try:
        return Schedule.from_dict(document)
    except (ValueError, TypeError) as err:
        raise PredictError(f"{source}: not a schedule: {err}") from None


# --- the schedules to predict ---------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A schedule to predict, with the label it is shown under. ``warmup``: its own warm-up in
    steps when it is known (a family's), else None (the law's warm-up is used)."""

    label: str
    schedule: Schedule
    warmup: int | None = None
    note: str | None = None


def candidate(value: str, fitted: FittedLaw) -> Candidate:
    """One ``--schedule``: a schedule file, or ``family=NAME,peak=LR[,key=value...]`` built over
    the search's budget (``warmup`` defaults to the law's)."""
    path = Path(value).expanduser()
    if "=" not in value or path.is_file():
        return Candidate(path.name, _schedule_file(path))
    config = family_config(value, default_warmup=fitted.warmup)
    try:
        schedule = families.build_schedule(config, fitted.budget)
    except ValueError as err:
        raise PredictError(_located(value, str(err), _given_keys(value))) from None
    # Its warm-up ends where it first reaches its peak (onecycle: the end of its rise). The law
    # is told so: a rise is not annealing, and read as one it would be a large loss.
    warmup = next((p.step for p in schedule.points if p.lr == config.peak_lr), None)
    note = None
    if warmup is not None and warmup != fitted.warmup:
        note = (
            f"{value}: a warm-up of {warmup} steps, the law's runs had {fitted.warmup}: its "
            "prediction leaves what the law was fitted on"
        )
    return Candidate(value, schedule, warmup, note)


def _schedule_file(path: Path) -> Schedule:
    if not path.is_file():
        raise PredictError(
            f"--schedule {path}: no such file (a built schedule is given as "
            "family=NAME,peak=LR[,warmup=STEPS,...])"
        )
    return _schedule_of(_read_documents(path)[0], f"--schedule {path}")


def family_config(text: str, *, default_warmup: int = 0) -> BaseScheduleConfig:
    """``family=cosine,peak=0.1,warmup=200`` as the baseSchedule it describes; ``PredictError``
    names the key at fault."""
    given = _given_keys(text)
    data: dict[str, Any] = {}
    for key, raw in given.items():
        field = _field_of(key, text)
        data[field] = raw if field in WORD_FIELDS else _number(key, raw, text)
    # onecycle's warmupSteps is the length of its rise, which has a default of its own.
    if data.get("family") != "onecycle":
        data.setdefault("warmupSteps", default_warmup)
    try:
        return BaseScheduleConfig.model_validate(data)
    except ValidationError as err:
        problems = validation_problems(err, BaseScheduleConfig)
        raise PredictError("\n".join(_located(text, str(p), given) for p in problems)) from None


def _given_keys(text: str) -> dict[str, str]:
    """The ``key=value`` pairs of a ``--schedule``, in order, each key once."""
    given: dict[str, str] = {}
    for item in text.split(","):
        key, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or not key or not raw:
            raise PredictError(f"--schedule {text}: {item.strip()!r} is not key=value")
        if key in given:
            raise PredictError(f"--schedule {text}: {key} is given twice")
        given[key] = raw
    return given


def _field_of(key: str, text: str) -> str:
    if key in SHORT_KEYS:
        return SHORT_KEYS[key]
    fields = [
        info.alias or camel_alias(name) for name, info in BaseScheduleConfig.model_fields.items()
    ]
    if key in fields:
        return key
    allowed = ", ".join(["family", *SHORT_KEYS, *(f for f in fields if f not in ("family",))])
    raise PredictError(f"--schedule {text}: unknown key {key!r}; allowed: {allowed}")


def _number(key: str, raw: str, text: str) -> int | float:
    try:
        return int(raw) if _INTEGER.match(raw) else float(raw)
    except ValueError:
        raise PredictError(f"--schedule {text}: {key}: {raw!r} is not a number") from None


def _located(text: str, message: str, given: Mapping[str, str]) -> str:
    """A config message (``peakLR: ...``) under the key the user wrote (``peak: ...``)."""
    field, sep, rest = message.partition(": ")
    if sep:
        short = {v: k for k, v in SHORT_KEYS.items()}.get(field)
        if short is not None and short in given:
            message = f"{short}: {rest}"
    return f"--schedule {text}: {message}"


# --- predictions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """The law's predicted loss after each of ``steps`` steps of ``candidate.schedule``."""

    candidate: Candidate
    steps: tuple[int, ...]
    losses: tuple[float, ...]

    @property
    def final(self) -> float:
        return self.losses[-1]

    def loss_at(self, step: int) -> float | None:
        if step not in self.steps:
            return None
        return self.losses[self.steps.index(step)]


def predict(fitted: FittedLaw, chosen: Candidate, at: Sequence[int] = ()) -> Prediction:
    """The law's curve for ``chosen``: from the end of the warm-up to the schedule's last step,
    plus the steps ``at`` that lie in it."""
    schedule = chosen.schedule
    warmup = fitted.warmup if chosen.warmup is None else chosen.warmup
    # Before the law's warm-up ends there is nothing it was fitted on.
    first = max(warmup, fitted.warmup) + 1
    if schedule.total_steps < first:
        raise PredictError(
            f"{chosen.label}: its {schedule.total_steps} steps end inside the warm-up "
            f"({first - 1} steps)"
        )
    grid = np.linspace(first, schedule.total_steps, min(CURVE_POINTS, schedule.total_steps))
    extra = [s for s in at if first <= s <= schedule.total_steps]
    steps = sorted({int(s) for s in np.rint(grid)} | set(extra))
    losses = _evaluate(fitted.law, schedule.lrs(), steps, warmup=warmup)
    return Prediction(chosen, tuple(steps), tuple(float(v) for v in losses))


def _evaluate(
    law: laws.Law, lrs: Sequence[float], steps: Sequence[int], *, warmup: int
) -> np.ndarray:
    """``law.predict`` in chunks of steps, so a long budget does not build a huge design."""
    chunk = max(1, MAX_DESIGN_CELLS // max(len(lrs), 1))
    parts = [
        law.predict(lrs, steps[i : i + chunk], warmup=warmup) for i in range(0, len(steps), chunk)
    ]
    return np.concatenate(parts)


@dataclass(frozen=True)
class Report:
    """Every prediction of one ``predict`` command, the found schedule's first."""

    fitted: FittedLaw
    predictions: tuple[Prediction, ...]

    @property
    def table_steps(self) -> list[int]:
        budget = self.fitted.budget
        steps = {max(1, round(share * budget)) for share in TABLE_SHARES}
        return sorted(s for s in steps if self.fitted.warmup < s < budget)

    def notes(self) -> list[str]:
        """Where a prediction leaves what the law was fitted on."""
        notes = [p.candidate.note for p in self.predictions if p.candidate.note]
        trunk = self.fitted.trunk_lr
        for prediction in self.predictions:
            peak = prediction.candidate.schedule.peak_lr
            if trunk is not None and peak > trunk * (1 + 1e-9):
                notes.append(
                    f"{prediction.candidate.label}: peak LR {peak:.4g} is above the trunk LR "
                    f"{trunk:.4g}, the highest the law was fitted on; its prediction is an "
                    "extrapolation"
                )
        return notes

    def lines(self) -> list[str]:
        return [*self.fitted.trust_lines(), *(f"note: {note}" for note in self.notes())]

    def table(self) -> Table:
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("SCHEDULE", no_wrap=True)
        for column in ("STEPS", "PEAK LR", *(f"LOSS@{s}" for s in self.table_steps)):
            table.add_column(column, no_wrap=True, justify="right")
        table.add_column("FINAL", no_wrap=True, justify="right")
        table.add_column("VS FOUND", no_wrap=True, justify="right")
        found = self.predictions[0].final
        for prediction in self.predictions:
            schedule = prediction.candidate.schedule
            versus = (
                "-" if prediction is self.predictions[0] else f"{prediction.final - found:+.4g}"
            )
            table.add_row(
                prediction.candidate.label,
                str(schedule.total_steps),
                number(schedule.peak_lr),
                *(number(prediction.loss_at(s)) for s in self.table_steps),
                number(prediction.final),
                versus,
            )
        return table

    def document(self) -> dict[str, Any]:
        """The machine-readable form (``-o json|yaml``)."""
        fitted = self.fitted
        return {
            "search": fitted.search,
            "law": fitted.law.to_dict(),
            "lawWarmup": fitted.warmup,
            "trunkLR": fitted.trunk_lr,
            "fitError": fitted.fit_error,
            "heldOutError": fitted.held_out_error,
            "storedPredictedFinal": fitted.predicted_final,
            "notes": self.notes(),
            "schedules": [
                {
                    "label": p.candidate.label,
                    "totalSteps": p.candidate.schedule.total_steps,
                    "peakLR": p.candidate.schedule.peak_lr,
                    "predictedFinal": p.final,
                    "steps": list(p.steps),
                    "loss": list(p.losses),
                    "schedule": p.candidate.schedule.to_dict(),
                }
                for p in self.predictions
            ],
        }


def report(fitted: FittedLaw, schedules: Sequence[str]) -> Report:
    """The found schedule's prediction, then one per ``--schedule`` value, in order."""
    candidates = [Candidate(FOUND, fitted.found), *(candidate(v, fitted) for v in schedules)]
    budget = fitted.budget
    at = [max(1, round(share * budget)) for share in TABLE_SHARES]
    return Report(fitted, tuple(predict(fitted, c, at) for c in candidates))


# --- the plot -----------------------------------------------------------------------------------


def plot_report(path: Path, result: Report, *, image_format: str = "png") -> None:
    """Two panels sharing the step axis: each schedule's predicted loss, and its LR."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    fig, (loss_ax, lr_ax) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    try:
        for index, prediction in enumerate(result.predictions):
            # The found schedule stands out; the others take the colour cycle.
            style: dict[str, Any] = (
                {"linewidth": 2.0, "color": "black"} if index == 0 else {"linewidth": 1.2}
            )
            label = f"{prediction.candidate.label} ({number(prediction.final)})"
            loss_ax.plot(prediction.steps, prediction.losses, label=label, **style)
            steps, lrs = zip(*prediction.candidate.schedule.sample(800), strict=True)
            lr_ax.plot(steps, lrs, label=prediction.candidate.label, **style)
        fitted = result.fitted
        loss_ax.set_ylabel("predicted loss")
        loss_ax.legend(loc="best")
        loss_ax.grid(alpha=0.3)
        lr_ax.set_xlabel("step")
        lr_ax.set_ylabel("learning rate")
        lr_ax.grid(alpha=0.3)
        fig.suptitle(
            f"{fitted.search}: law {fitted.law.name} (fit error {_percent(fitted.fit_error)}, "
            f"held-out {_percent(fitted.held_out_error)})"
        )
        fig.tight_layout()
        fig.savefig(path, dpi=120, format=image_format)
    finally:
        plt.close(fig)
