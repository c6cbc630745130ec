"""The exported torch scheduler: same LRs as the schedule, JSON state, exact resume, standalone
module."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from schedsearch.trainers.config import BaseScheduleConfig
from schedsearch.trainers.export_torch import ScheduleLR, render_torch_module
from schedsearch.trainers.families import build_schedule
from schedsearch.trainers.schedules import Schedule, ScheduleBuilder

TOTAL = 300


def sgdr() -> Schedule:
    cfg = BaseScheduleConfig(family="sgdr", peak_lr=0.3, min_lr=1e-3, warmup_steps=20, t0=70)
    return build_schedule(cfg, TOTAL)


def lineage() -> Schedule:
    cosine = build_schedule(BaseScheduleConfig(family="cosine", peak_lr=0.2), 500)
    builder = ScheduleBuilder().set_lr(0, 0.05).append_segment(60, cosine).set_lr(200, 0.01)
    return builder.build(TOTAL, {"strategy": "pbt", "member": 2, "search": 'x"""y'})


def optimizer(groups: int = 1) -> torch.optim.Optimizer:
    params = [{"params": [torch.nn.Parameter(torch.zeros(2))]} for _ in range(groups)]
    return torch.optim.SGD(params, lr=123.0)


def run(scheduler: ScheduleLR, opt: torch.optim.Optimizer, steps: int) -> list[list[float]]:
    """The LR of each param group at each optimizer step."""
    seen = []
    for _ in range(steps):
        seen.append([float(group["lr"]) for group in opt.param_groups])
        opt.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize("make", [sgdr, lineage])
def test_scheduler_follows_the_schedule_step_for_step(make: object) -> None:
    schedule = make()  # type: ignore[operator]
    opt = optimizer()
    seen = run(ScheduleLR(opt, schedule), opt, TOTAL + 3)
    assert [lrs[0] for lrs in seen] == schedule.lrs(TOTAL + 3)


def test_group_scales_are_data() -> None:
    schedule = sgdr()
    opt = optimizer(groups=2)
    scheduler = ScheduleLR(opt, schedule, group_scales=[1.0, 0.1])
    seen = run(scheduler, opt, 50)
    assert [lrs[1] for lrs in seen] == [lr * 0.1 for lr in schedule.lrs(50)]
    assert scheduler.state_dict()["group_scales"] == [1.0, 0.1]
    with pytest.raises(ValueError, match=r"group_scales: expected one scale per param group \(2\)"):
        ScheduleLR(optimizer(groups=2), schedule, group_scales=[1.0])


def test_state_dict_is_json_and_resume_continues_the_sequence() -> None:
    schedule = lineage()
    opt = optimizer()
    scheduler = ScheduleLR(opt, schedule)
    run(scheduler, opt, 137)
    state = json.loads(json.dumps(scheduler.state_dict()))
    rest = run(scheduler, opt, 100)

    # a fresh optimizer and scheduler, resumed from the JSON state only
    opt2 = optimizer()
    resumed = ScheduleLR(opt2, Schedule.constant(9.0, 10))
    resumed.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == schedule.lr_at(137)  # applied at once, not a step late
    assert run(resumed, opt2, 100) == rest
    assert resumed.state_dict() == scheduler.state_dict()


def test_load_refuses_a_foreign_state() -> None:
    opt = optimizer()
    with pytest.raises(ValueError, match="format: expected"):
        ScheduleLR(opt, sgdr()).load_state_dict({"last_epoch": 3})


def import_file(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


@pytest.mark.parametrize("make", [sgdr, lineage])
def test_rendered_module_is_standalone_and_exact(tmp_path: Path, make: object) -> None:
    schedule = make()  # type: ignore[operator]
    source = render_torch_module(schedule, module_name="best_schedule")
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert imported <= {"__future__", "bisect", "json", "math", "collections", "typing", "torch"}

    path = tmp_path / "best_schedule.py"
    path.write_text(source)
    module = import_file(path, "best_schedule_under_test")
    assert schedule.to_dict() == module.SCHEDULE
    assert [module.lr_at(k) for k in range(TOTAL + 3)] == schedule.lrs(TOTAL + 3)

    opt = optimizer()
    scheduler = module.make_scheduler(opt)
    seen = run(scheduler, opt, TOTAL + 3)
    assert [lrs[0] for lrs in seen] == schedule.lrs(TOTAL + 3)
    # the exported scheduler's state loads into ours and vice versa
    ours = ScheduleLR(optimizer(), schedule)
    ours.load_state_dict(json.loads(json.dumps(scheduler.state_dict())))
    assert ours.last_epoch == scheduler.last_epoch
