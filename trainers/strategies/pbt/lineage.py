"""The schedule each PBT member actually followed: its lineage.

A member starts with its own LR. When it exploits another member at step s it inherits that
member's weights, hence that member's past: its lineage becomes the source's lineage up to s,
then its new LR. Following the best member's lineage from scratch replays the schedule that
produced it (what Ray Tune calls replay), so that lineage is PBT's found schedule.

With :class:`~schedsearch.trainers.evaluation.Phases`, every lineage starts with the linear
warm-up to the member's first LR and ends with the cooldown from its LR at the cooldown's start
to the floor, exactly as the member trained them (no exploit happens in either).
"""

from __future__ import annotations

from typing import Any

from schedsearch.trainers import schedules
from schedsearch.trainers.evaluation import Phases


class Lineage:
    """Per-member LR segments and the exploits they came through."""

    def __init__(self, phases: Phases | None = None) -> None:
        self.phases = phases
        self._builders: dict[int, schedules.ScheduleBuilder] = {}
        self._exploits: dict[int, list[dict[str, int]]] = {}

    def start(self, member: int, lr: float) -> None:
        """``member`` trains at ``lr`` from step 0 (after the warm-up, if any)."""
        builder = schedules.ScheduleBuilder()
        warmup = self.phases.warmup_steps if self.phases is not None else 0
        if warmup > 0:
            builder.set_lr(0, 0.0, "linear")
        self._builders[member] = builder.set_lr(warmup, lr)
        self._exploits[member] = []

    def set_lr(self, member: int, step: int, lr: float) -> None:
        """``member`` changed its own LR at ``step`` (no exploit)."""
        self._builder(member).set_lr(step, lr)

    def exploit(self, dst: int, src: int, step: int, lr: float) -> None:
        """``dst`` loaded ``src``'s checkpoint of ``step`` and continues at ``lr`` from there."""
        inherited = self._builder(src).copy().truncate(step)
        self._builders[dst] = inherited.set_lr(step, lr)
        past = [e for e in self._exploits[src] if e["step"] < step]
        self._exploits[dst] = [*past, {"step": step, "from": src}]

    def schedule(self, member: int, total_steps: int) -> schedules.Schedule:
        """The schedule ``member`` followed: its LR at the last point holds to the cooldown's
        start, then decays to the floor (without a cooldown: to the end)."""
        provenance = {"strategy": "pbt", "member": member, "exploits": list(self._exploits[member])}
        followed = self._builder(member).build(total_steps, provenance)
        return followed if self.phases is None else self.phases.with_cooldown(followed)

    def members(self) -> list[int]:
        return sorted(self._builders)

    def _builder(self, member: int) -> schedules.ScheduleBuilder:
        if member not in self._builders:
            raise KeyError(f"member {member} has no lineage; call start() first")
        return self._builders[member]

    def state_dict(self) -> dict[str, Any]:
        return {
            str(m): {
                "points": [p.to_dict() for p in b.points],
                "exploits": [dict(e) for e in self._exploits[m]],
            }
            for m, b in self._builders.items()
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._builders, self._exploits = {}, {}
        for key, entry in state.items():
            points = [schedules.ChangePoint.from_dict(p, i) for i, p in enumerate(entry["points"])]
            self._builders[int(key)] = schedules.ScheduleBuilder(points)
            self._exploits[int(key)] = [
                {"step": int(e["step"]), "from": int(e["from"])} for e in entry["exploits"]
            ]
