"""Configuration models of the trainers: what a spec may say about schedules and strategies.

Every model here speaks camelCase on the wire (``peakLR``, ``warmupSteps``), accepts snake_case in
Python, and refuses unknown fields, so a typo in a spec fails early with the field's name.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

Family = Literal["linear", "cosine", "onecycle", "wsd", "rex", "sgdr", "constant", "infinite"]
FAMILIES: tuple[str, ...] = get_args(Family)
DecayShape = Literal["linear", "cosine", "sqrt"]
DECAY_SHAPES: tuple[str, ...] = get_args(DecayShape)


def camel_alias(name: str) -> str:
    """``peak_lr`` -> ``peakLR``, ``warmup_steps`` -> ``warmupSteps``, ``t0`` -> ``t0``."""
    head, *rest = name.split("_")
    return head + "".join("LR" if part == "lr" else part.capitalize() for part in rest)


class ConfigModel(BaseModel):
    """Base of every spec-facing model: camelCase aliases, snake_case names, no unknown fields."""

    model_config = ConfigDict(
        alias_generator=camel_alias,
        populate_by_name=True,
        extra="forbid",
        allow_inf_nan=False,
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


class BaseScheduleConfig(ConfigModel):
    """A baseline schedule family with its parameters (see ``families.build_schedule``).

    ``warmup_steps`` is a linear warm-up from 0 to ``peak_lr``; for ``onecycle`` it is the length of
    the rise from ``peak_lr/25`` (default 30% of the steps). Defaults that depend on the budget:
    ``decay_steps`` and ``cooldown_steps`` are 20% of the steps after warm-up, ``constant_lr`` is
    the midpoint of ``min_lr`` and ``peak_lr``, ``decay_shape`` is linear, ``t_mult`` is 1.
    """

    family: Family
    peak_lr: float = Field(gt=0)
    min_lr: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    decay_steps: int | None = Field(None, ge=1)
    decay_shape: DecayShape | None = None
    t0: int | None = Field(None, ge=1)
    t_mult: float | None = Field(None, ge=1)
    cooldown_steps: int | None = Field(None, ge=1)
    constant_lr: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check_family_fields(self) -> BaseScheduleConfig:
        for name, families in _FAMILY_FIELDS.items():
            if getattr(self, name) is not None and self.family not in families:
                raise ValueError(
                    f"{camel_alias(name)}: applies only to family {' or '.join(families)} "
                    f"(family is {self.family})"
                )
        if self.family == "constant":
            if self.min_lr > 0:
                raise ValueError("minLR: does not apply to family constant")
        elif self.min_lr >= self.peak_lr:
            raise ValueError(f"minLR: must be below peakLR ({self.min_lr} >= {self.peak_lr})")
        if self.family == "sgdr" and self.t0 is None:
            raise ValueError("t0: family sgdr needs the length of its first cycle")
        if self.constant_lr is not None and not self.min_lr <= self.constant_lr <= self.peak_lr:
            raise ValueError(
                f"constantLR: must lie between minLR ({self.min_lr}) and peakLR ({self.peak_lr}), "
                f"got {self.constant_lr}"
            )
        return self
