"""What one HDET replica set is asked to do, as JSON: written by the runner, read by every worker.

The same file serves a local run (the runner writes it into the output directory) and a cluster
run (the pod's entrypoint builds it from the spec), so a worker needs nothing else but the
torch.distributed environment variables.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schedsearch.trainers.config import BaseScheduleConfig
from schedsearch.trainers.evaluation import Phases
from schedsearch.trainers.strategies.hdet.config import HDETConfig

JOB_FORMAT = "schedsearch.io/hdet-job-v1"
JOB_FILE = "hdet-job.json"
RESULT_FILE = "result.json"
CHECKPOINT_FILE = "hdet-checkpoint.pt"
# Rank 0 prints its reports on stdout as JSON lines starting with this tag; other lines are logs.
REPORT_TAG = "@hdet "


@dataclass(frozen=True)
class ReplicaJob:
    """One HDET run: the strategy's parameters, the workload and budget, where files go."""

    config: HDETConfig
    workload: str
    total_steps: int
    lr_bounds: tuple[float, float]
    out_dir: str
    base: BaseScheduleConfig | None = None
    seed: int = 0
    checkpoint_dir: str | None = None
    progress_every: int = 50
    # The search's cooldown and annealed-evaluation settings (None: no cooldown, raw scores).
    phases: Phases | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.total_steps, int) or self.total_steps < 1:
            raise ValueError(f"steps: must be an integer >= 1, got {self.total_steps!r}")
        low, high = self.lr_bounds
        if not 0 < low < high:
            raise ValueError(f"lrBounds: must satisfy 0 < min < max, got {self.lr_bounds}")
        if self.progress_every < 1:
            raise ValueError(f"progressEvery: must be >= 1, got {self.progress_every}")

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.checkpoint_dir or self.out_dir) / CHECKPOINT_FILE

    @property
    def result_path(self) -> Path:
        return Path(self.out_dir) / RESULT_FILE

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": JOB_FORMAT,
            "hdet": self.config.model_dump(by_alias=True),
            "workload": self.workload,
            "totalSteps": self.total_steps,
            "lrBounds": list(self.lr_bounds),
            "outDir": self.out_dir,
            "base": self.base.model_dump(by_alias=True, exclude_none=True) if self.base else None,
            "seed": self.seed,
            "checkpointDir": self.checkpoint_dir,
            "progressEvery": self.progress_every,
            "phases": self.phases.to_dict() if self.phases is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReplicaJob:
        if data.get("format") != JOB_FORMAT:
            raise ValueError(f"format: expected {JOB_FORMAT!r}, got {data.get('format')!r}")
        low, high = data["lrBounds"]
        return cls(
            config=HDETConfig.model_validate(data["hdet"]),
            workload=str(data["workload"]),
            total_steps=int(data["totalSteps"]),
            lr_bounds=(float(low), float(high)),
            out_dir=str(data["outDir"]),
            base=BaseScheduleConfig.model_validate(data["base"]) if data.get("base") else None,
            seed=int(data.get("seed", 0)),
            checkpoint_dir=data.get("checkpointDir"),
            progress_every=int(data.get("progressEvery", 50)),
            phases=Phases.from_dict(data["phases"]) if data.get("phases") else None,
        )

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def read(cls, path: Path) -> ReplicaJob:
        return cls.from_dict(json.loads(path.read_text()))
