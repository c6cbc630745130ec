"""The ``law`` search's saved state: plain JSON, written atomically after every probe.

It holds what the search was asked for (a resumed search must be the same search), the probe
plan, the candidates' outcomes, the chosen trunk LR, every completed probe curve (its schedule and
its ``[step, val_loss]`` points), the branches done, the trunk's checkpoint file and the steps
spent. Checkpoints it names are written before it, so a kill at any point leaves a state whose
files exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schedsearch.trainers.strategies import base
from schedsearch.trainers.strategies.law.config import LawConfig
from schedsearch.trainers.strategies.law.probe import ProbePlan

STATE_FILE = "law-state.json"
STATE_FORMAT = "schedsearch.io/law-state-v1"
# What a resumed search must share with the saved one.
IDENTITY_KEYS = ("config", "workload", "totalSteps", "lrBounds", "seed", "plan")

State = dict[str, Any]


def fresh(
    config: LawConfig,
    *,
    workload: str,
    total_steps: int,
    lr_bounds: tuple[float, float],
    seed: int,
    plan: ProbePlan,
) -> State:
    """The state of a search that has trained nothing yet."""
    return {
        "format": STATE_FORMAT,
        "config": config.model_dump(mode="json", by_alias=True),
        "workload": workload,
        "totalSteps": total_steps,
        "lrBounds": list(lr_bounds),
        "seed": seed,
        "plan": plan.to_dict(),
        "candidates": [],
        "peak": None,
        "trunk": None,
        "curves": [],
        "doneBranches": [],
        "memberSteps": 0,
        "evaluationSteps": 0,
    }


def save(out: Path, state: State) -> None:
    """Write ``state`` to ``out`` atomically (a reader sees the old file or the new one)."""
    base.write_state(out / STATE_FILE, state)


def resume(out: Path, state: State) -> bool:
    """Replace ``state`` by the one saved in ``out`` (False: nothing saved there yet). A saved
    search that is not this one is refused, naming what differs."""
    saved = base.read_state(out / STATE_FILE, STATE_FORMAT, "a law search")
    if saved is None:
        return False
    base.check_same_search(saved, {key: state[key] for key in IDENTITY_KEYS}, out, "a law search")
    state.clear()
    state.update(saved)
    return True
