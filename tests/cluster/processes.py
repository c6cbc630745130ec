"""Child processes of the test cluster: started in their own process group, logged to a file,
stopped as a group (SIGTERM, then SIGKILL after a grace period)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# If the test process is killed outright (no fixture teardown), the kernel sends SIGKILL to children
# started through `setpriv --pdeathsig` instead of leaving them orphaned. setpriv execs the command,
# so the pid stays the command's; a preexec_fn could do the same but is unsafe once threads run.
_SETPRIV = shutil.which("setpriv")


class ManagedProcess:
    """A child process that leads its own process group, with its output in ``log_path``."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the whole group: the command and anything it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; return the exit code."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait()
        # Children that outlived the leader still belong to the group.
        self.signal_group(signal.SIGKILL)
        return self.popen.returncode

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
) -> ManagedProcess:
    """Start ``argv`` in a new session with stdout and stderr appended to ``log_path``.

    With ``die_with_parent`` the child is killed when the thread that started it ends.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = list(argv)
    if die_with_parent and _SETPRIV:
        command = [_SETPRIV, "--pdeathsig", "KILL", "--", *command]
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    return ManagedProcess(name, popen, log_path)


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until(condition: Callable[[], object], *, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``condition`` until it returns something true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
