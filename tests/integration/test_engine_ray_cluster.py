"""`schedsearch run --ray-address` against a real multi-process Ray cluster the test starts.

The cluster is a head node and one worker node, each a `ray start --block` process with its own
CPUs, on 127.0.0.1, with a temporary --temp-dir so that it never touches the machine's default
Ray directory (nor the address file a plain `ray.init()` reads). Its processes run a Python that
has Ray and the other dependencies but not this project (a throwaway venv that sees only the
dependencies' site-packages), and the search's workload is a module only the driver can import
(through its PYTHONPATH): both must reach the workers through the runtime environment. Teardown
stops exactly the processes started here: each `ray start --block` on SIGTERM stops its node's
processes; any straggler is found by the temp dir in its command line and killed by pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
import venv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from schedsearch.store.sqlite import SQLiteStore  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _python_without_project(root: Path) -> Path:
    """A venv whose Python imports Ray, torch, ... (the dependencies' site-packages) but not
    this project: like a cluster node where only the dependencies are installed."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    python = root / "bin" / "python"
    deps = Path(ray.__file__).resolve().parents[1]
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "deps.pth").write_text(f"{deps}\n")
    return python


@dataclass
class RayCluster:
    """A head and a worker node started by this test, and how to stop only them.

    Its own authentication token, in the environment of every process that talks to it: Ray's
    default token file (~/.ray/auth_token) is shared by every Ray on the machine.
    """

    python: Path
    temp_dir: Path
    address: str = ""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for a process of (or talking to) this cluster, and no other Ray."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, **extra)
        return env

    def start(self, *, head_cpus: int, worker_cpus: int) -> None:
        port = _free_port()
        self.address = f"{HOST}:{port}"
        self._node(
            "--head",
            f"--port={port}",
            f"--num-cpus={head_cpus}",
            "--include-dashboard=false",
        )
        self._wait_for_gcs(port)
        self._node(f"--address={self.address}", f"--num-cpus={worker_cpus}")

    def _node(self, *args: str) -> None:
        command = [
            str(self.python),
            "-c",
            "from ray.scripts.scripts import main; main()",
            "start",
            "--block",
            f"--node-ip-address={HOST}",
            f"--temp-dir={self.temp_dir}",
            f"--dashboard-agent-listen-port={_free_port()}",
            "--disable-usage-stats",
            *args,
        ]
        log = open(self.temp_dir.parent / f"node-{len(self.nodes)}.log", "wb")  # noqa: SIM115
        env = self.env()
        env.pop("PYTHONPATH", None)
        self.nodes.append(
            subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.temp_dir.parent,  # not the repository: its folder is the project
                start_new_session=True,
            )
        )

    def _wait_for_gcs(self, port: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.nodes[0].poll() is None, self.logs()
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"the head's GCS did not listen within {timeout} s\n{self.logs()}")

    def wait_for_cpus(self, cpus: float, timeout: float = 120.0) -> None:
        """Until both nodes have joined (their CPUs add up), seen from a separate driver."""
        check = (
            "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(ray.cluster_resources().get('CPU', 0))"
        )
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            result = subprocess.run(
                [str(self.python), "-c", check, self.address],
                capture_output=True,
                text=True,
                timeout=60,
                env=self.env(),
            )
            seen = (
                result.stdout.strip().splitlines()[-1:] and result.stdout.strip().splitlines()[-1]
            )
            if result.returncode == 0 and float(seen or 0) >= cpus:
                return
            time.sleep(1)
        raise AssertionError(f"the cluster has {seen} CPU, expected {cpus}\n{self.logs()}")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
        for node in self.nodes:
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=10)
        for pid in self._stragglers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _stragglers(self) -> list[int]:
        """Processes still running whose command line names this cluster's temp dir (every Ray
        process of a node carries its session directory in its arguments)."""
        found = []
        marker = str(self.temp_dir).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:]
            for p in sorted(self.temp_dir.parent.glob("*.log"))
        )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RayCluster]:
    # Ray puts unix sockets under its temp dir: keep the path short (108-byte limit).
    short = Path(f"/tmp/ss-ray-{os.getpid()}")
    short.mkdir()
    running = RayCluster(_python_without_project(tmp_path / "node-venv"), short / "ray")
    try:
        running.start(head_cpus=1, worker_cpus=1)
        running.wait_for_cpus(2)
        yield running
    finally:
        running.stop()
        subprocess.run(["rm", "-rf", str(short)], check=False)
    assert not running._stragglers()


WORKLOAD = """\
from schedsearch.trainers.workloads.registry import get_workload


def make_workload():
    # A workload module of the user's: importable only where this folder is on sys.path.
    return get_workload("regression")
"""


def _spec(
    path: Path,
    name: str,
    *,
    entrypoint: str = "tiny_user_model:make_workload",
    population: int = 3,
    steps: int = 200,
) -> Path:
    path.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: schedsearch.io/v1alpha1
            kind: ScheduleSearch
            metadata: {{name: {name}}}
            spec:
              workload: {{entrypoint: "{entrypoint}", image: "unused:1"}}
              objective: {{metric: val_loss, mode: min}}
              budget: {{steps: {steps}}}
              lrBounds: {{min: 1.0e-3, max: 0.5}}
              baseSchedule: {{family: cosine, peakLR: 0.05, warmupSteps: 10}}
              strategy:
                pbt: {{population: {population}, perturbationInterval: 50, seed: 3}}
              resources: {{cpu: "1", memory: 1Gi}}
              checkpoints: {{persistentVolumeClaim: ckpt}}
            """
        )
    )
    return path


def test_a_search_runs_on_an_existing_multi_node_cluster(
    cluster: RayCluster, tmp_path: Path
) -> None:
    node_python = cluster.python
    probe = [str(node_python), "-c", "import schedsearch"]
    missing = subprocess.run(probe, capture_output=True, cwd=tmp_path)
    assert missing.returncode != 0, "the nodes' Python must not have the project installed"
    user = tmp_path / "user"
    user.mkdir()
    (user / "tiny_user_model.py").write_text(WORKLOAD)
    spec = _spec(tmp_path / "search.yaml", "on-cluster")
    store = tmp_path / "results.db"
    env = cluster.env(CI="1", PYTHONPATH=str(user), RAY_ADDRESS=cluster.address)
    started = time.monotonic()
    # $RAY_ADDRESS alone (no flag) joins the cluster: Ray must not be given a size.
    result = subprocess.run(
        [sys.executable, "-m", "schedsearch.cli.main", "run", str(spec), "--store", str(store)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output + cluster.logs()
    assert f"joined {cluster.address} ($RAY_ADDRESS)" in output
    # Two 1-CPU nodes hold three members at 0.5 CPU (2/3 would fit one per node).
    assert "3 trials at once on 2 CPU, 0.5 CPU each" in output
    record = SQLiteStore(store).get_search("on-cluster")
    assert record.phase == "Succeeded" and record.best_objective is not None
    assert {p.member for p in SQLiteStore(store).history("on-cluster")} == {0, 1, 2}
    assert time.monotonic() - started < 240

    # The same workload named by its file path, relative to where `run` starts (the flag this
    # time): the file is shipped at that path in the workers' working directory.
    by_path = _spec(
        tmp_path / "by-path.yaml",
        "by-path",
        entrypoint="user/tiny_user_model.py:make_workload",
        population=2,
        steps=100,
    )
    command = [sys.executable, "-m", "schedsearch.cli.main", "run", str(by_path)]
    result = subprocess.run(
        [*command, "--store", str(store), "--ray-address", cluster.address],
        env=cluster.env(CI="1"),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output + cluster.logs()
    assert SQLiteStore(store).get_search("by-path").phase == "Succeeded"


def test_a_cluster_that_is_not_there_leaves_the_name_free(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "search.yaml", "nowhere")
    store = tmp_path / "results.db"
    command = [
        sys.executable,
        "-m",
        "schedsearch.cli.main",
        "run",
        str(spec),
        "--store",
        str(store),
    ]
    dead = f"{HOST}:{_free_port()}"
    for _ in range(2):
        result = subprocess.run(
            [*command, "--ray-address", dead], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 1 and "nothing answers there" in result.stderr
        assert "Traceback" not in result.stderr
    assert not store.exists() or SQLiteStore(store).list_searches() == []
