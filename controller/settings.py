"""The controller's settings: what its flags say about the pods it builds, when to look again."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_REPORT_PORT = 8081
CHECKPOINT_MOUNT = "/var/lib/schedsearch/checkpoints"


@dataclass(frozen=True)
class Settings:
    """Everything ``plan`` and the pod builders need besides the search and what was observed."""

    # Trainer image for built-in workloads (a spec with an entrypoint names its own image).
    image: str | None = None
    # Where trainer pods reach the report channel (the controller's Service).
    report_url: str = f"http://schedsearch.schedsearch-system.svc:{DEFAULT_REPORT_PORT}"
    # Trainer pods serve Prometheus metrics on this port when set.
    trainer_metrics_port: int | None = None
    # An image that cannot be pulled for this long fails the search (registries do hiccup).
    image_pull_grace_seconds: float = 60.0
    # How soon to look again after creating or deleting something. While members train, nothing
    # is timed: their reports and their pods' changes wake the reconciler.
    requeue_soon_seconds: float = 0.5
    checkpoint_mount: str = CHECKPOINT_MOUNT
    termination_grace_seconds: int = 30
