"""Workloads: the ``Workload`` protocol, the built-ins, and lookup by name or entrypoint."""

from schedsearch.trainers.workloads.base import BatchStream, PermutationBatchStream, Workload
from schedsearch.trainers.workloads.registry import (
    BUILTIN_WORKLOADS,
    UnknownWorkloadError,
    WorkloadError,
    WorkloadLoadError,
    get_workload,
)

__all__ = [
    "BUILTIN_WORKLOADS",
    "BatchStream",
    "PermutationBatchStream",
    "UnknownWorkloadError",
    "Workload",
    "WorkloadError",
    "WorkloadLoadError",
    "get_workload",
]
