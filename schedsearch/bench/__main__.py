"""``python -m schedsearch.bench --profile quick|full --out DIR``: plan, run (resumably), report.

Prints the plan and its estimated time first (``--plan-only`` stops there), then progress on
stderr; writes ``DIR/report.json``, ``DIR/report.md`` and ``DIR/*.png``. Finished runs are cached
in ``DIR/runs``: run the same command again to resume after an interruption.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from schedsearch.bench import planning, plots, profiles, report, summary, tasks
from schedsearch.bench.cache import RunCache
from schedsearch.bench.executor import Executor, Progress
from schedsearch.bench.followups import FollowUps
from schedsearch.trainers import harness

EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m schedsearch.bench",
        description="Search quality against tuned baselines, and trainer overhead, in one report.",
    )
    parser.add_argument("--profile", required=True, choices=sorted(profiles.PROFILES))
    parser.add_argument("--out", type=Path, help="output folder (default: benchmarks/<profile>)")
    parser.add_argument(
        "--jobs", type=int, help="runs in parallel (default: the CPUs this process may use)"
    )
    parser.add_argument(
        "--plan-only", action="store_true", help="print the plan and its estimate, run nothing"
    )
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs: must be an integer >= 1, got {args.jobs}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out: {args.out} exists and is not a folder")
    return args


def _run_commits(results: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How many of the report's runs each code version produced (cached runs may be older)."""
    counts: dict[str, int] = {}
    for result in results.values():
        version = str(result.get("commit") or "unknown")
        counts[version] = counts.get(version, 0) + 1
    return counts


def _load() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


class Session:
    """One invocation: the profile, where it writes, and how it runs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.profile = profiles.get_profile(args.profile)
        self.out: Path = args.out or Path("benchmarks") / self.profile.name
        self.jobs: int = args.jobs or harness.cpu_limit()
        self.threads = max(1, harness.cpu_limit() // self.jobs)
        self.cache = RunCache(self.out / "runs")
        self.followups = FollowUps(self.profile)


def run(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    session = Session(args)
    harness.configure_threads(session.threads)
    bench = planning.build_plan(session.profile, session.cache)
    print(f"measuring each workload's speed ({session.threads} thread(s) per job)", file=sys.stderr)
    speeds = {w: planning.measure_speed(w, session.threads) for w in planning.workloads_of(bench)}
    rates = planning.Rates(speeds, planning.previous_searches(session.out / "report.json"))
    estimate = planning.estimate(bench, rates, session.jobs)
    print(planning.describe(bench, estimate, rates, session.jobs), file=sys.stderr, flush=True)
    if args.plan_only:
        return 0
    started, load_start = time.monotonic(), _load()
    try:
        executor = _execute(session, bench, rates)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished runs are kept in {session.cache.root}; "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    meta = {
        "createdAt": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": tasks.code_version(),
        "runCommits": _run_commits(executor.results),
        "command": shlex.join(["python", "-m", "schedsearch.bench", *(argv or sys.argv[1:])]),
        "machine": {
            "cpus": harness.cpu_limit(),
            "jobs": session.jobs,
            "threadsPerJob": session.threads,
            "torch": torch.__version__,
            "device": str(harness.select_device("auto")),
            "loadStart": load_start,
            "loadEnd": _load(),
        },
        "plan": {
            "estimate": f"{planning.format_duration(estimate.wall_seconds)} at the speed "
            f"measured then, {planning.format_duration(estimate.cpu_seconds)} on an idle machine",
            "elapsed": planning.format_duration(time.monotonic() - started),
            "profileRunTime": planning.format_duration(estimate.profile_cpu_seconds),
            "searchesEstimate": planning.searches_note(rates),
            "profileByKind": {
                group: {**row, "time": planning.format_duration(row["cpu"])}
                for group, row in estimate.by_group.items()
            },
            "runs": estimate.runs_total,
            "cachedAtStart": estimate.runs_cached,
            "failed": len(executor.errors),
            "runSeconds": planning.format_duration(
                sum(float(r.get("seconds") or 0.0) for r in executor.results.values())
            ),
        },
    }
    _write_report(session, executor.results, meta)
    return 1 if executor.errors else 0


def _execute(session: Session, bench: planning.BenchPlan, rates: planning.Rates) -> Executor:
    progress = Progress(len(bench.all_tasks), rates.seconds, session.jobs)
    for task in bench.all_tasks:
        progress.expect(task)
    executor = Executor(
        session.cache,
        session.out / "work",
        progress,
        jobs=session.jobs,
        threads=session.threads,
        followups=session.followups.after,
        planned_followups=session.followups.planned_after,
    )
    for task in bench.parallel:
        executor.add(task)
    executor.run_parallel()
    # Timing runs last and alone: nothing else competes for the CPUs while they measure.
    for task in bench.exclusive:
        executor.add(task)
    executor.run_inline()
    return executor


def _write_report(
    session: Session, results: dict[str, dict[str, Any]], meta: dict[str, Any]
) -> None:
    session.out.mkdir(parents=True, exist_ok=True)
    data = summary.build_report(session.profile, results, meta)
    for section in data["quality"]:
        section["plots"] = plots.plot_workload(section, session.out)
    json_path, md_path = report.write(data, session.out)
    work = session.out / "work"
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


def main() -> int:
    return run()


if __name__ == "__main__":
    sys.exit(main())
