"""Baseline schedule families (cosine, WSD, OneCycle, ...) generated as exact ``Schedule`` data.

Every family is written with the interpolation kinds of ``schedules`` (no dense sampling), so a
baseline replays exactly and can be exported like any found schedule. ``p`` below is the progress
in [0, 1] within a phase; the optional warm-up is ``lr = peak * t / W``.
"""

from __future__ import annotations

from collections.abc import Callable

from schedsearch.trainers.config import BaseScheduleConfig
from schedsearch.trainers.schedules import ChangePoint, Schedule, ScheduleBuilder, shape_value

# OneCycle as torch.optim.lr_scheduler.OneCycleLR defaults it.
ONECYCLE_DIV_FACTOR = 25.0
ONECYCLE_FINAL_DIV_FACTOR = 1e4
ONECYCLE_PCT_START = 0.3
# Share of the post-warm-up steps given to WSD's decay and to the infinite schedule's phases.
DEFAULT_PHASE_FRACTION = 0.2
MAX_SGDR_CYCLES = 1000

Points = list[ChangePoint]


def build_schedule(cfg: BaseScheduleConfig, total_steps: int) -> Schedule:
    """The family ``cfg.family`` over ``total_steps`` steps, reaching its final LR at
    ``total_steps`` (which then holds). Raises ``ValueError`` naming the offending field."""
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"totalSteps: must be an integer >= 1, got {total_steps!r}")
    if cfg.family != "onecycle" and cfg.warmup_steps >= total_steps:
        raise ValueError(
            f"warmupSteps: {cfg.warmup_steps} leaves no steps after warm-up "
            f"(total steps {total_steps})"
        )
    points = _warmup(cfg) + _BUILDERS[cfg.family](cfg, total_steps)
    provenance = {
        "source": "family",
        "family": cfg.family,
        "config": cfg.model_dump(by_alias=True, exclude_none=True),
    }
    # The builder drops a zero-length phase (a later point at the same step wins).
    return ScheduleBuilder(points).build(total_steps, provenance)


def _warmup(cfg: BaseScheduleConfig) -> Points:
    if cfg.family == "onecycle" or cfg.warmup_steps == 0:
        return []
    return [ChangePoint(0, 0.0, "linear")]


def _linear(cfg: BaseScheduleConfig, total: int) -> Points:
    return [ChangePoint(cfg.warmup_steps, cfg.peak_lr, "linear"), ChangePoint(total, cfg.min_lr)]


def _cosine(cfg: BaseScheduleConfig, total: int) -> Points:
    return [ChangePoint(cfg.warmup_steps, cfg.peak_lr, "cosine"), ChangePoint(total, cfg.min_lr)]


def _rex(cfg: BaseScheduleConfig, total: int) -> Points:
    return [ChangePoint(cfg.warmup_steps, cfg.peak_lr, "rex"), ChangePoint(total, cfg.min_lr)]


def _constant(cfg: BaseScheduleConfig, total: int) -> Points:
    return [ChangePoint(cfg.warmup_steps, cfg.peak_lr)]


def _onecycle(cfg: BaseScheduleConfig, total: int) -> Points:
    # torch reaches the peak at step 0.3*T - 1 and the end at T - 1; here the phases end on whole
    # steps, at round(0.3*T) and T, like every other family.
    rise = cfg.warmup_steps or max(1, round(ONECYCLE_PCT_START * total))
    if rise >= total:
        raise ValueError(
            f"warmupSteps: onecycle's rise of {rise} steps leaves no steps to anneal "
            f"(total steps {total})"
        )
    start = cfg.peak_lr / ONECYCLE_DIV_FACTOR
    final = cfg.min_lr if cfg.min_lr > 0 else start / ONECYCLE_FINAL_DIV_FACTOR
    return [
        ChangePoint(0, start, "cosine"),
        ChangePoint(rise, cfg.peak_lr, "cosine"),
        ChangePoint(total, final),
    ]


def _phase_steps(value: int | None, cfg: BaseScheduleConfig, total: int) -> int:
    if value is not None:
        return value
    return max(1, round(DEFAULT_PHASE_FRACTION * (total - cfg.warmup_steps)))


def _wsd(cfg: BaseScheduleConfig, total: int) -> Points:
    decay = _phase_steps(cfg.decay_steps, cfg, total)
    if cfg.warmup_steps + decay > total:
        raise ValueError(
            f"decaySteps: warm-up {cfg.warmup_steps} + decay {decay} exceed total steps {total}"
        )
    return [
        ChangePoint(cfg.warmup_steps, cfg.peak_lr),
        ChangePoint(total - decay, cfg.peak_lr, cfg.decay_shape or "linear"),
        ChangePoint(total, cfg.min_lr),
    ]


def _infinite(cfg: BaseScheduleConfig, total: int) -> Points:
    cooldown = _phase_steps(cfg.cooldown_steps, cfg, total)
    decay = _phase_steps(cfg.decay_steps, cfg, total)
    if cfg.warmup_steps + cooldown + decay > total:
        raise ValueError(
            f"cooldownSteps: warm-up {cfg.warmup_steps} + cool-down {cooldown} + decay {decay} "
            f"exceed total steps {total}"
        )
    level = cfg.constant_lr if cfg.constant_lr is not None else (cfg.peak_lr + cfg.min_lr) / 2
    return [
        ChangePoint(cfg.warmup_steps, cfg.peak_lr, "cosine"),
        ChangePoint(cfg.warmup_steps + cooldown, level),
        ChangePoint(total - decay, level, cfg.decay_shape or "linear"),
        ChangePoint(total, cfg.min_lr),
    ]


def _sgdr(cfg: BaseScheduleConfig, total: int) -> Points:
    assert cfg.t0 is not None  # the config refuses sgdr without t0
    t_mult = cfg.t_mult or 1.0
    points: Points = []
    start, cycle = cfg.warmup_steps, 0
    while start < total:
        length = max(1, round(cfg.t0 * t_mult**cycle))
        # Each cycle heads for min_lr over its own length, then jumps back to the peak.
        points.append(ChangePoint(start, cfg.peak_lr, "cosine", cfg.min_lr, length))
        if len(points) > MAX_SGDR_CYCLES:
            raise ValueError(
                f"t0: more than {MAX_SGDR_CYCLES} restarts within {total} steps; use a longer t0"
            )
        start, cycle = start + length, cycle + 1
    last = points[-1]
    assert last.span is not None and last.end_lr is not None
    # A cycle cut by the budget keeps its shape; the LR it reached at the end then holds.
    end_lr = shape_value("cosine", last.lr, last.end_lr, (total - last.step) / last.span)
    return [*points, ChangePoint(total, end_lr)]


_BUILDERS: dict[str, Callable[[BaseScheduleConfig, int], Points]] = {
    "linear": _linear,
    "cosine": _cosine,
    "onecycle": _onecycle,
    "wsd": _wsd,
    "rex": _rex,
    "sgdr": _sgdr,
    "constant": _constant,
    "infinite": _infinite,
}
