"""The ScheduleSearch and LRSchedule resources: models, YAML loading, CRD generation."""

from schedsearch.api.loading import (
    Problem,
    SpecError,
    format_validation_error,
    load_spec,
    load_specs,
    parse_spec,
    validation_problems,
)
from schedsearch.api.spec import (
    API_GROUP,
    API_VERSION,
    LRSchedule,
    LRScheduleSpec,
    Provenance,
    ScheduleSearch,
    ScheduleSearchSpec,
    ScheduleSearchStatus,
    best_schedule_name,
)

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "LRSchedule",
    "LRScheduleSpec",
    "Problem",
    "Provenance",
    "ScheduleSearch",
    "ScheduleSearchSpec",
    "ScheduleSearchStatus",
    "SpecError",
    "best_schedule_name",
    "format_validation_error",
    "load_spec",
    "load_specs",
    "parse_spec",
    "validation_problems",
]
