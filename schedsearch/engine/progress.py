"""What the person at the terminal sees while a search runs, and the summary at its end.

The board is a :class:`~schedsearch.trainers.strategies.base.Reporter` fed on the driver (from
trial results): one row per member with its step, loss, LR and exploits, plus an ETA. On a
terminal it is a rich ``Live`` table; elsewhere (CI, a pipe, a log file) it prints plain lines
— events at once, a status line per member at most every ``line_interval`` seconds (at each
:meth:`ProgressBoard.tick`) — so logs stay readable and short.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from schedsearch.trainers import schedules

# Events kept on screen below the table.
RECENT_EVENTS = 6
# No ETA until the rate has been measured over this long: the first results arrive in batches
# (a trial sends what it trained in the last second at once), so a rate measured over the
# first batch alone is far too high (an "ETA 0:00" at 15%).
MIN_RATE_SECONDS = 5.0


@dataclass
class MemberRow:
    """The latest that is known of one member (or replica, or the single AutoLRS trainer)."""

    member: int
    step: int = 0
    loss: float = math.nan
    lr: float = math.nan
    val_loss: float | None = None
    exploits: int = 0
    status: str = "pending"
    printed_at: float = field(default=-math.inf, repr=False)
    changed: bool = field(default=False, repr=False)


def use_live_display(console: Console) -> bool:
    """A live table only on a real terminal, never under CI."""
    return console.is_terminal and not os.environ.get("CI")


class ProgressBoard:
    """Live progress of one search; use as a context manager around the run."""

    def __init__(
        self,
        *,
        title: str,
        total_steps: int,
        members: int,
        console: Console | None = None,
        live: bool | None = None,
        line_interval: float = 10.0,
    ) -> None:
        self.title = title
        self.total_steps = max(1, total_steps)
        self.console = console or Console(stderr=True)
        self.live = use_live_display(self.console) if live is None else live
        self.line_interval = line_interval
        self.rows = {m: MemberRow(m) for m in range(members)}
        self.events: list[str] = []
        self.exploits = 0
        self._started = time.monotonic()
        # (time, fraction done) when the rate started to be measured: after the first batch.
        self._rate_since: tuple[float, float] | None = None
        self._live: Live | None = None

    # -- context --------------------------------------------------------------------------------

    def __enter__(self) -> ProgressBoard:
        self._started = time.monotonic()
        if self.live:
            self._live = Live(
                get_renderable=self.render,
                console=self.console,
                refresh_per_second=4,
                transient=False,
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    # -- Reporter -------------------------------------------------------------------------------

    def on_progress(
        self, member: int, step: int, loss: float, lr: float, val_loss: float | None = None
    ) -> None:
        row = self._row(member)
        row.step, row.lr, row.status = step, lr, "running"
        if not math.isnan(loss):
            # An evaluation report carries only val_loss; keep the last training loss.
            row.loss = loss
        if val_loss is not None:
            row.val_loss = val_loss
        row.changed = True

    def tick(self) -> None:
        """After each batch of reports: start measuring the rate after the first batch and,
        in plain mode, print the latest line of each member that moved and whose interval is
        up (so a line shows the batch's last step)."""
        now = time.monotonic()
        if self._rate_since is None and any(r.changed for r in self.rows.values()):
            self._rate_since = (now, self.fraction_done())
        if self.live:
            return
        for row in self.rows.values():
            if row.changed and now - row.printed_at >= self.line_interval:
                row.printed_at, row.changed = now, False
                self.console.print(self._line(row), markup=False, highlight=False, soft_wrap=True)

    def on_event(self, kind: str, message: str, **data: Any) -> None:
        if kind == "exploit":
            self.exploits += 1
            dst = data.get("dst")
            if isinstance(dst, int):
                self._row(dst).exploits += 1
        if kind in ("finished", "stopped", "diverged"):
            member = data.get("member")
            if isinstance(member, int):
                self._row(member).status = kind
        if kind == "waiting":
            self._mark_waiting(data.get("missing"))
        text = f"[{kind}] {message}"
        self.events = [*self.events, text][-RECENT_EVENTS:]
        if not self.live:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _mark_waiting(self, missing: Any) -> None:
        """Members that are up wait for the ``missing`` ones, which are still starting."""
        late = {m for m in missing if isinstance(m, int)} if isinstance(missing, list) else set()
        for row in self.rows.values():
            if row.status in ("pending", "waiting", "starting"):
                row.status = "starting" if row.member in late else "waiting"

    def mark(self, member: int, status: str) -> None:
        """Set a member's status from the engine's side (trial finished, failed, stopped)."""
        self._row(member).status = status

    # -- figures --------------------------------------------------------------------------------

    def fraction_done(self) -> float:
        steps = [min(r.step, self.total_steps) for r in self.rows.values()]
        return sum(steps) / (self.total_steps * max(1, len(steps)))

    def eta_seconds(self) -> float | None:
        """Remaining time from the rate since the first batch of progress (start-up excluded),
        once that rate has been measured for :data:`MIN_RATE_SECONDS`."""
        if self._rate_since is None:
            return None
        since, done_then = self._rate_since
        done = self.fraction_done()
        elapsed = time.monotonic() - since
        if done <= done_then or elapsed < MIN_RATE_SECONDS:
            return None
        rate = (done - done_then) / elapsed
        return (1.0 - done) / rate

    # -- rendering ------------------------------------------------------------------------------

    def render(self) -> Group:
        table = Table(title=self._headline(), title_justify="left", expand=False)
        for name in ("member", "step", "loss", "val_loss", "lr", "exploits", "status"):
            table.add_column(name, justify="left" if name == "status" else "right")
        for row in self.rows.values():
            table.add_row(
                str(row.member),
                f"{row.step}/{self.total_steps}",
                _fmt(row.loss),
                _fmt(row.val_loss),
                _fmt(row.lr, ".3g"),
                str(row.exploits),
                row.status,
            )
        return Group(table, *(Text(e) for e in self.events))

    def _headline(self) -> str:
        eta = self.eta_seconds()
        elapsed = time.monotonic() - self._started
        parts = [
            self.title,
            f"{100 * self.fraction_done():.0f}%",
            f"elapsed {_duration(elapsed)}",
            f"ETA {_duration(eta) if eta is not None else '?'}",
        ]
        if self.exploits:
            parts.append(f"exploits {self.exploits}")
        return "  ".join(parts)

    def _line(self, row: MemberRow) -> str:
        eta = self.eta_seconds()
        val = f" val_loss={_fmt(row.val_loss)}" if row.val_loss is not None else ""
        return (
            f"[member {row.member}] step {row.step}/{self.total_steps} loss={_fmt(row.loss)}"
            f"{val} lr={_fmt(row.lr, '.3g')} exploits={row.exploits}"
            f" ETA {_duration(eta) if eta is not None else '?'}"
        )

    def _row(self, member: int) -> MemberRow:
        if member not in self.rows:
            self.rows[member] = MemberRow(member)
        return self.rows[member]


def summary_table(
    *,
    title: str,
    rows: list[dict[str, Any]],
    best_member: int | None,
) -> Table:
    """The end-of-run table: one line per member's final figures, the best one marked."""
    table = Table(title=title, title_justify="left")
    for name in ("member", "steps", "objective", "lr", "exploits", "status"):
        table.add_column(name, justify="left" if name == "status" else "right")
    for row in rows:
        mark = " *" if row.get("member") == best_member else ""
        table.add_row(
            f"{row.get('member')}{mark}",
            str(row.get("step", "")),
            _fmt(row.get("objective")),
            _fmt(row.get("lr"), ".3g"),
            str(row.get("exploits", 0)),
            str(row.get("status", "")),
        )
    return table


def schedule_table(schedule: schedules.Schedule, *, max_rows: int = 24) -> Table:
    """The found schedule as its change points: from each step, the LR and how it moves on.

    A long schedule (HDET moves its LR at every sync) shows its first and last points; the
    whole schedule is in the store (``schedsearch best``, ``export``).
    """
    table = Table(title=f"best schedule ({schedule.total_steps} steps)", title_justify="left")
    for name in ("from step", "lr", "then"):
        table.add_column(name, justify="right")
    points = list(schedule.points)
    head, tail = points, []
    if len(points) > max_rows:
        head, tail = points[: max_rows // 2], points[-(max_rows // 2 - 1) :]
    for point in head:
        table.add_row(*_point_cells(point))
    if tail:
        table.add_row("...", f"{len(points) - len(head) - len(tail)} more", "")
        for point in tail:
            table.add_row(*_point_cells(point))
    return table


def _point_cells(point: schedules.ChangePoint) -> tuple[str, str, str]:
    then = point.interp if point.end_lr is None else f"{point.interp} to {point.end_lr:.4g}"
    return str(point.step), f"{point.lr:.4g}", then


def _fmt(value: float | None, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
