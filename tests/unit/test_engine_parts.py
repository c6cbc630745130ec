"""The engine's pieces that need no Ray: messages, engine state, run directory, progress, Ctrl-C."""

from __future__ import annotations

import io
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from schedsearch.engine import messages, progress, session, state
from schedsearch.engine.interrupt import Interrupt
from schedsearch.store.base import StoreError


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_progress(
        self, member: int, step: int, loss: float, lr: float, val_loss: float | None = None
    ) -> None:
        self.calls.append(("progress", member, step, loss, lr, val_loss))

    def on_event(self, kind: str, message: str, **data: Any) -> None:
        self.calls.append(("event", kind, message, data))


def test_trial_reports_reach_the_driver_reporters_unchanged() -> None:
    sent: list[dict[str, Any]] = []
    reporter = messages.TrialReporter(sent.append)
    reporter.on_progress(2, 10, 0.5, 0.1)
    reporter.on_progress(2, 20, math.inf, 0.1, val_loss=0.25)
    reporter.on_event("exploit", "2 copies 1", src=1, dst=2, newLR=0.12)
    assert sent == []  # buffered until flushed
    reporter.flush()
    reporter.flush()  # nothing new: nothing sent
    assert len(sent) == 1
    recorder = Recorder()
    messages.replay(sent[0], recorder)
    assert recorder.calls == [
        ("progress", 2, 10, 0.5, 0.1, None),
        ("progress", 2, 20, math.inf, 0.1, 0.25),
        ("event", "exploit", "2 copies 1", {"src": 1, "dst": 2, "newLR": 0.12}),
    ]


def test_attached_values_travel_with_the_next_result() -> None:
    sent: list[dict[str, Any]] = []
    reporter = messages.TrialReporter(sent.append)
    reporter.attach("searchResult", {"bestMember": 0})
    reporter.flush()
    assert sent == [{"progress": [], "events": [], "searchResult": {"bestMember": 0}}]


def test_pump_flushes_while_work_runs_and_returns_its_value() -> None:
    sent: list[dict[str, Any]] = []
    reporter = messages.TrialReporter(sent.append)

    def work() -> str:
        for step in range(5):
            reporter.on_progress(0, step, 1.0, 0.1)
            time.sleep(0.02)
        return "done"

    assert messages.pump(work, reporter, interval=0.01) == "done"
    steps = [p[1] for result in sent for p in result["progress"]]
    assert steps == [0, 1, 2, 3, 4] and len(sent) > 1


def test_pump_raises_the_work_error_after_sending_what_was_reported() -> None:
    sent: list[dict[str, Any]] = []
    reporter = messages.TrialReporter(sent.append)

    def work() -> None:
        reporter.on_event("diverged", "loss is NaN", member=0)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        messages.pump(work, reporter, interval=0.01)
    assert sent and sent[-1]["events"][0]["kind"] == "diverged"


def test_pump_ticks_before_starting_and_before_each_flush() -> None:
    events: list[str] = []
    reporter = messages.TrialReporter(lambda result: events.append("flush"))
    release = threading.Event()

    def work() -> None:
        reporter.on_progress(0, 1, 1.0, 0.1)
        release.wait(timeout=5)

    def tick() -> None:
        events.append("tick")
        if events.count("tick") == 3:
            release.set()

    messages.pump(work, reporter, interval=0.01, tick=tick)
    assert events[0] == "tick" and events.count("tick") >= 3
    assert events.index("flush") > events.index("tick", 1)  # a tick precedes each flush


def test_engine_state_round_trips_and_refuses_foreign_data(tmp_path: Path) -> None:
    saved = state.EngineState("pbt", tmp_path / "runs" / "x", {"a": [1, 2]})
    assert state.EngineState.from_bytes(saved.to_bytes()) == saved
    with pytest.raises(ValueError, match="format"):
        state.EngineState.from_bytes(b'{"format": "other"}')
    with pytest.raises(ValueError, match="not readable JSON"):
        state.EngineState.from_bytes(b"\x00garbage")


def test_run_dir_sits_beside_the_store_unless_overridden(tmp_path: Path) -> None:
    store = tmp_path / "data" / "results.db"
    assert state.default_run_dir(store, "s1", env={}) == tmp_path / "data" / "runs" / "s1"
    env = {state.RUNS_DIR_ENV: str(tmp_path / "elsewhere")}
    assert state.default_run_dir(store, "s1", env=env) == tmp_path / "elsewhere" / "s1"


def test_a_run_directory_is_held_by_one_process(tmp_path: Path) -> None:
    held = tmp_path / "r"
    with state.run_lock(held), pytest.raises(StoreError, match="in use"), state.run_lock(held):
        pass
    with state.run_lock(tmp_path / "r"):  # released: usable again
        pass


def test_plain_progress_prints_events_and_throttled_member_lines() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200)
    board = progress.ProgressBoard(
        title="t", total_steps=100, members=2, console=console, live=False, line_interval=60
    )
    with board:
        board.on_progress(0, 10, 0.5, 0.1)
        board.on_progress(0, 20, 0.4, 0.1)
        board.tick()  # the batch's last step
        board.on_progress(0, 30, 0.3, 0.1)
        board.tick()  # within the interval: not printed
        board.on_event("exploit", "member 1 copies member 0", src=0, dst=1)
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("[member 0] step 20/100 loss=0.4000 lr=0.1 exploits=0 ETA")
    assert lines[1:] == ["[exploit] member 1 copies member 0"]
    assert board.rows[1].exploits == 1 and board.exploits == 1
    assert board.fraction_done() == pytest.approx(30 / 200)


def test_eta_follows_the_rate_measured_after_the_first_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    board = progress.ProgressBoard(title="t", total_steps=100, members=1, live=False)
    board.on_progress(0, 10, 1.0, 0.1)
    board.on_progress(0, 25, 1.0, 0.1)  # one batch: what the trial trained in its last second
    board.tick()
    assert board.eta_seconds() is None  # no rate yet (it once said "ETA 0:00" here)
    now[0] += 1
    board.on_progress(0, 26, 1.0, 0.1)
    board.tick()
    assert board.eta_seconds() is None  # measured for too short a time
    now[0] += 9
    board.on_progress(0, 50, 1.0, 0.1)
    board.tick()
    # 25 steps in 10 s since the first batch: 50 steps to go take 20 s.
    assert board.eta_seconds() == pytest.approx(20.0)


def test_waiting_members_and_the_late_ones_show_on_the_board() -> None:
    buffer = io.StringIO()
    board = progress.ProgressBoard(
        title="t", total_steps=10, members=3, console=Console(file=buffer, width=200), live=False
    )
    board.on_event("waiting", "waiting for member(s) 2 to start (5s)", member=0, missing=[2])
    assert [row.status for row in board.rows.values()] == ["waiting", "waiting", "starting"]
    assert "[waiting] waiting for member(s) 2 to start (5s)" in buffer.getvalue()
    board.on_progress(0, 1, 1.0, 0.1)
    assert board.rows[0].status == "running"


def test_live_table_lists_every_member() -> None:
    board = progress.ProgressBoard(title="t", total_steps=10, members=3, live=False)
    buffer = io.StringIO()
    Console(file=buffer, width=120).print(board.render())
    assert buffer.getvalue().count("pending") == 3


def test_first_ctrl_c_requests_a_stop_and_the_second_aborts() -> None:
    calls: list[int] = []
    with Interrupt(on_request=lambda: calls.append(1)) as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.requested and calls == [1]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupt_outside_the_main_thread_installs_nothing() -> None:
    seen: list[bool] = []

    def body() -> None:
        with Interrupt() as interrupt:
            seen.append(interrupt.requested)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [False]


def test_a_long_schedule_table_shows_its_ends() -> None:
    from schedsearch.trainers.schedules import ScheduleBuilder

    builder = ScheduleBuilder()
    for index in range(40):
        builder.set_lr(index * 10, 0.1 / (index + 1))
    table = progress.schedule_table(builder.build(400), max_rows=10)
    buffer = io.StringIO()
    Console(file=buffer, width=80).print(table)
    text = buffer.getvalue()
    assert "31 more" in text and " 390 " in text and " 0 " in text
    assert table.row_count == 10


def _session(cpus: float, gpus: float = 0.0) -> session.RaySession:
    return session.RaySession(None, True, cpus, gpus, 0.0)


def test_the_whole_population_fits_on_the_machine_at_once() -> None:
    resources = session.trial_resources(_session(2), concurrent=4, cpu=1.0, gpu=0)
    assert resources == session.TrialResources(cpu=0.5, gpu=0.0)
    # A single trial gets what it asked for, within the machine.
    assert session.trial_resources(_session(8), concurrent=1, cpu=2.0, gpu=0).cpu == 2.0
    assert session.trial_resources(_session(2), concurrent=1, cpu=4.0, gpu=0).cpu == 2.0


def test_gpus_are_asked_for_only_when_ray_and_torch_see_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(session, "_torch_sees_gpu", lambda: True)
    assert session.trial_resources(_session(2, 0), concurrent=2, cpu=1, gpu=1).gpu == 0.0
    assert session.trial_resources(_session(2, 1), concurrent=2, cpu=1, gpu=1).gpu == 0.5
    assert session.trial_resources(_session(2, 4), concurrent=2, cpu=1, gpu=1).gpu == 1.0
    monkeypatch.setattr(session, "_torch_sees_gpu", lambda: False)
    assert session.trial_resources(_session(2, 4), concurrent=2, cpu=1, gpu=1).gpu == 0.0
