"""Configuration models of the trainers: what a spec may say about schedules and strategies.

Every model here speaks camelCase on the wire (``peakLR``, ``warmupSteps``), accepts snake_case in
Python, refuses unknown fields, and takes numbers only as numbers (``"3000"`` is refused, as the
API server refuses it), so a typo in a spec fails early with the field's name.

A check between fields is written twice, side by side: as Python in a model validator and as a
CEL rule (``x-kubernetes-validations``) in the model's JSON schema, from which the CRD is
generated. ``tests/integration/test_admission_parity.py`` runs a corpus of specs through both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

Family = Literal["linear", "cosine", "onecycle", "wsd", "rex", "sgdr", "constant", "infinite"]
FAMILIES: tuple[str, ...] = get_args(Family)
DecayShape = Literal["linear", "cosine", "sqrt"]
DECAY_SHAPES: tuple[str, ...] = get_args(DecayShape)

# The largest learning rate a spec may name. Far above what any optimizer trains with (SGD on
# large batches stays below ~100), and low enough that LR arithmetic (PBT's factors, HDET's
# spread, schedule interpolation) stays finite: lrBounds.max: 1e308 used to overflow in trainers.
MAX_LR: Final = 1e3
MAX_SGDR_T_MULT: Final = 100.0
# The longest budget, and so every length in steps. Far beyond any search, and small enough that
# step arithmetic in CEL rules (int64) cannot overflow: a huge length is refused on both paths.
MAX_STEPS: Final = 1_000_000_000
Steps = Annotated[int, Field(le=MAX_STEPS)]
MAX_SEED: Final = 2**31 - 1


def camel_alias(name: str) -> str:
    """``peak_lr`` -> ``peakLR``, ``warmup_steps`` -> ``warmupSteps``, ``t0`` -> ``t0``."""
    head, *rest = name.split("_")
    return head + "".join("LR" if part == "lr" else part.capitalize() for part in rest)


# --- problems that name their field, and their CEL twins ---------------------------------------

Loc = tuple[str | int, ...]


class FieldProblems(ValueError):
    """Problems found by a model validator, each with the path (relative to that model,
    camelCase) of the field it is about, all reported at once. ``schedsearch.api.loading`` reads
    ``problems`` to report ``spec.baseSchedule.minLR: ...``, not ``spec.baseSchedule: ...``."""

    def __init__(self, problems: Sequence[tuple[Loc, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{dotted(loc)}: {msg}" for loc, msg in self.problems))


def dotted(loc: Loc) -> str:
    """``("spec", "tolerations", 0, "key")`` -> ``spec.tolerations[0].key``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def raise_if_any(problems: Sequence[tuple[Loc, str]]) -> None:
    if problems:
        raise FieldProblems(problems)


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry; ``field_path`` is relative to the rule's object."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """A JSON-schema extra carrying CEL rules (the API server's copy of a model's checks)."""
    return {"x-kubernetes-validations": list(rules)}


class ConfigModel(BaseModel):
    """Base of every spec-facing model: camelCase aliases, snake_case names, no unknown fields,
    strict types (a number written as a string is refused, as the API server refuses it)."""

    model_config = ConfigDict(
        alias_generator=camel_alias,
        populate_by_name=True,
        extra="forbid",
        allow_inf_nan=False,
        strict=True,
    )


# Which optional fields each family reads; setting one elsewhere is refused (it would be ignored).
_FAMILY_FIELDS: dict[str, tuple[str, ...]] = {
    "decay_steps": ("wsd", "infinite"),
    "decay_shape": ("wsd", "infinite"),
    "t0": ("sgdr",),
    "t_mult": ("sgdr",),
    "cooldown_steps": ("infinite",),
    "constant_lr": ("infinite",),
}


def _family_rules() -> list[dict[str, str]]:
    rules = []
    for name, families in _FAMILY_FIELDS.items():
        field = camel_alias(name)
        allowed = ", ".join(f"'{f}'" for f in families)
        rules.append(
            cel(
                f"!has(self.{field}) || self.family in [{allowed}]",
                f"{field} applies only to family {' or '.join(families)}",
                f".{field}",
            )
        )
    return rules


# The API server defaults minLR to 0 before these rules run, so they may read it directly.
_BASE_SCHEDULE_RULES = validations(
    *_family_rules(),
    cel(
        "self.family == 'constant' ? self.minLR == 0.0 : self.minLR < self.peakLR",
        "minLR must be below peakLR (and is not set for family constant)",
        ".minLR",
    ),
    cel("self.family != 'sgdr' || has(self.t0)", "family sgdr needs t0", ".t0"),
    cel(
        "!has(self.constantLR) || "
        "(self.minLR <= self.constantLR && self.constantLR <= self.peakLR)",
        "constantLR must lie between minLR and peakLR",
        ".constantLR",
    ),
)


class BaseScheduleConfig(ConfigModel):
    """A baseline schedule family with its parameters (see ``families.build_schedule``).

    ``warmup_steps`` is a linear warm-up from 0 to ``peak_lr``; for ``onecycle`` it is the length of
    the rise from ``peak_lr/25`` (default 30% of the steps). Defaults that depend on the budget:
    ``decay_steps`` and ``cooldown_steps`` are 20% of the steps after warm-up, ``constant_lr`` is
    the midpoint of ``min_lr`` and ``peak_lr``, ``decay_shape`` is linear, ``t_mult`` is 1.
    """

    model_config = ConfigDict(json_schema_extra=_BASE_SCHEDULE_RULES)

    family: Family = Field(
        description="Shape: linear, cosine, onecycle, wsd (warm-up/stable/decay), rex, sgdr "
        "(cosine with restarts), constant or infinite (cool-down, constant, final decay)."
    )
    peak_lr: float = Field(gt=0, le=MAX_LR, description=f"Highest LR, in (0, {MAX_LR:g}].")
    min_lr: float = Field(
        0.0, ge=0, le=MAX_LR, description="LR at the end (below peakLR; 0 for constant)."
    )
    warmup_steps: Steps = Field(
        0, ge=0, description="Linear warm-up from 0 to peakLR; for onecycle the rise's length."
    )
    decay_steps: Steps | None = Field(
        None, ge=1, description="wsd/infinite: length of the final decay (default 20%)."
    )
    decay_shape: DecayShape | None = Field(
        None, description="wsd/infinite: shape of the final decay (default linear)."
    )
    t0: Steps | None = Field(None, ge=1, description="sgdr (required): first cycle's length.")
    t_mult: float | None = Field(
        None,
        ge=1,
        le=MAX_SGDR_T_MULT,
        description=f"sgdr: each cycle is this much longer (default 1, at most "
        f"{MAX_SGDR_T_MULT:g}).",
    )
    cooldown_steps: Steps | None = Field(
        None, ge=1, description="infinite: length of the cosine cool-down (default 20%)."
    )
    constant_lr: float | None = Field(
        None,
        gt=0,
        le=MAX_LR,
        description="infinite: the constant LR after the cool-down (default mid-way).",
    )

    @model_validator(mode="after")
    def _check_family_fields(self) -> BaseScheduleConfig:
        raise_if_any(self._family_field_problems() + self._lr_problems())
        return self

    def _family_field_problems(self) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        for name, families in _FAMILY_FIELDS.items():
            if getattr(self, name) is not None and self.family not in families:
                problems.append(
                    (
                        (camel_alias(name),),
                        f"applies only to family {' or '.join(families)} (family is {self.family})",
                    )
                )
        if self.family == "sgdr" and self.t0 is None:
            problems.append((("t0",), "family sgdr needs the length of its first cycle"))
        return problems

    def _lr_problems(self) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        if self.family == "constant":
            if self.min_lr > 0:
                problems.append((("minLR",), "does not apply to family constant"))
        elif self.min_lr >= self.peak_lr:
            problems.append(
                (("minLR",), f"must be below peakLR ({self.min_lr:g} >= {self.peak_lr:g})")
            )
        if self.constant_lr is not None and not self.min_lr <= self.constant_lr <= self.peak_lr:
            problems.append(
                (
                    ("constantLR",),
                    f"must lie between minLR ({self.min_lr:g}) and peakLR ({self.peak_lr:g}), "
                    f"got {self.constant_lr:g}",
                )
            )
        return problems
