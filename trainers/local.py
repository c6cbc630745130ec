"""The trainer-side command: run one search strategy in this process, print what it found.

    python -m schedsearch.trainers search --strategy autolrs --workload digits-cnn --steps 600

No Ray, no cluster, no store: the strategy's runner trains here (HDET starts one local process
per replica) and the found schedule is printed as change points, followed by the search's
summary. Bad arguments are refused before anything trains, naming the field (exit code 2).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import pydantic

from schedsearch.trainers import harness
from schedsearch.trainers.config import BaseScheduleConfig
from schedsearch.trainers.strategies import base, registry
from schedsearch.trainers.strategies.config import StrategyModel
from schedsearch.trainers.strategies.registry import StrategyConfig
from schedsearch.trainers.strategies.strategy import RunContext
from schedsearch.trainers.workloads import BUILTIN_WORKLOADS, WorkloadError, get_workload

EXIT_USAGE = 2


class UsageError(ValueError):
    """An argument that cannot run; the message starts with the field's name."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m schedsearch.trainers",
        description="Run a schedule search in this process (no cluster, no Ray).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", help="search an LR schedule and print it")
    search.add_argument("--strategy", required=True, choices=registry.NAMES)
    search.add_argument(
        "--workload",
        required=True,
        help=f"built-in ({', '.join(BUILTIN_WORKLOADS)}) or an entrypoint module:function",
    )
    search.add_argument("--steps", required=True, type=int, help="training steps of the schedule")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--lr-min", type=float, default=1e-4)
    search.add_argument("--lr-max", type=float, default=1.0)
    search.add_argument(
        "--set",
        dest="params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a strategy parameter, e.g. --set tauPrime=20 --set perturbationFactors=[1.2,0.8]",
    )
    search.add_argument(
        "--base",
        dest="base_params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the base schedule (its warm-up and floor; HDET follows it, law scales its peak), "
        "e.g. --base family=cosine --base peakLR=0.05",
    )
    search.add_argument(
        "--out",
        type=Path,
        help="checkpoints and state (a later run with the same folder resumes)",
    )
    search.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    search.add_argument("--json", action="store_true", help="print the result as JSON only")
    search.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        request = SearchRequest.from_args(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    reporter: base.Reporter = (
        base.NullReporter() if args.quiet or args.json else base.TextReporter(sys.stderr)
    )
    result = request.run(reporter)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2), file=out)
    else:
        print(format_result(result), file=out)
    return 0


class SearchRequest:
    """Validated arguments of ``search``: everything is checked before any training."""

    def __init__(
        self,
        *,
        strategy: str,
        config: StrategyModel,
        workload: str,
        steps: int,
        seed: int,
        lr_bounds: tuple[float, float],
        out: Path | None,
        device: str,
        base_schedule: BaseScheduleConfig | None,
    ) -> None:
        self.strategy = strategy
        self.config = config
        self.workload = workload
        self.steps = steps
        self.seed = seed
        self.lr_bounds = lr_bounds
        self.out = out
        self.device = device
        self.base_schedule = base_schedule

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SearchRequest:
        if args.steps < 1:
            raise UsageError(f"steps: must be an integer >= 1, got {args.steps}")
        if not (0.0 < args.lr_min < args.lr_max and math.isfinite(args.lr_max)):
            raise UsageError(
                f"lrBounds: need 0 < lr-min < lr-max, got lr-min={args.lr_min} lr-max={args.lr_max}"
            )
        try:
            get_workload(args.workload)
            harness.select_device(args.device)
        except (WorkloadError, harness.DeviceError) as error:
            raise UsageError(str(error)) from error
        params = parse_pairs(args.params, "set")
        if "seed" in registry.get(args.strategy).config_type.model_fields:
            params.setdefault("seed", args.seed)  # the strategy's own draws
        base_schedule = None
        if args.base_params:
            base_schedule = _validate(
                BaseScheduleConfig, parse_pairs(args.base_params, "base"), "base"
            )
        chosen = _validate(StrategyConfig, {args.strategy: params}, "strategy")
        config = chosen.config
        return cls(
            strategy=args.strategy,
            config=config,
            workload=args.workload,
            steps=args.steps,
            seed=args.seed,
            lr_bounds=(args.lr_min, args.lr_max),
            out=args.out,
            device=args.device,
            base_schedule=base_schedule,
        )

    def run(self, reporter: base.Reporter) -> base.SearchResult:
        strategy = registry.get(self.strategy)
        # The spec's defaults: annealed evaluation, a cooldown, the base schedule's warm-up and
        # floor, laid out by the strategy.
        phases = strategy.phases(self.config, self.steps, base_schedule=self.base_schedule)
        context = RunContext(
            workload=self.workload,
            total_steps=self.steps,
            lr_bounds=self.lr_bounds,
            seed=self.seed,
            out_dir=self.out,
            reporter=reporter,
            device=self.device,
            phases=phases,
            base=self.base_schedule,
        )
        return strategy.run(self.config, context)


def parse_pairs(pairs: Sequence[str], option: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict; values are JSON when they parse (numbers, lists,
    booleans), else strings."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{option}: expected KEY=VALUE, got {pair!r}")
        try:
            parsed[key] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key] = raw
    return parsed


def _validate(model: type[pydantic.BaseModel], data: dict[str, Any], where: str) -> Any:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as error:
        problems = []
        for item in error.errors():
            field = ".".join(str(part) for part in (where, *item["loc"]))
            allowed = _allowed_fields(model, item)
            problems.append(f"{field}: {item['msg']}{allowed}")
        raise UsageError("; ".join(problems)) from error


def _allowed_fields(model: type[pydantic.BaseModel], item: Any) -> str:
    """For an unknown field, the names that are allowed where it was found."""
    if item.get("type") != "extra_forbidden":
        return ""
    target: Any = model
    for part in item["loc"][:-1]:
        field = target.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        target = next(
            (arg for arg in getattr(annotation, "__args__", ()) if hasattr(arg, "model_fields")),
            None,
        )
        if target is None:
            return ""
    names = [f.alias or name for name, f in target.model_fields.items()]
    return f" (allowed: {', '.join(names)})"


def format_result(result: base.SearchResult) -> str:
    """The found schedule as a table of change points, then the search's summary."""
    schedule = result.best_schedule
    lines = [f"{'step':>8}  {'lr':>12}  interp"]
    for point in schedule.points:
        lines.append(f"{point.step:>8}  {point.lr:>12.6g}  {point.interp}")
    lines += [
        "",
        f"strategy       {result.strategy}",
        f"workload       {result.workload}",
        f"steps          {schedule.total_steps}",
        f"best objective {result.best_objective:.6g}",
        f"best member    {result.best_member}",
        f"member steps   {result.member_steps}",
        f"wall time      {result.wall_seconds:.1f}s",
    ]
    return "\n".join(lines)
