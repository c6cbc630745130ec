"""What every strategy's parameters share, validated before any training starts.

Each strategy's model lives in its folder (``autolrs/config.py``, ...); ``registry.StrategyConfig``
is the spec's ``strategy`` field that holds exactly one of them. The models are shared by the
local engine, the trainer pods and the ScheduleSearch spec (which embeds them), so field names
are the camelCase ones a user writes in YAML; Python code uses the snake_case attribute names.
Defaults are the reference values of each method's paper or, for PBT, Ray Tune's
PopulationBasedTraining.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

# Members (PBT) and replicas (HDET) are pods, and the controller keeps one record per member in
# the search's state ConfigMap, which the API server caps at 1 MiB. 256 members fill about a
# quarter of it (tests/unit/test_admission_bounds.py measures it; 1024 would not fit), leaving
# room for the spec and the population's history.
MAX_MEMBERS: Final = 256


class StrategyModel(BaseModel):
    """Base for strategy parameters: camelCase in YAML/JSON, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
    )
