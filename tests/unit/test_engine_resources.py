"""How the local engine sizes its trials, gathers a population, and joins an existing Ray."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from schedsearch.engine import session, shipping
from schedsearch.engine.pbt import PBTCoordinator
from schedsearch.engine.trials import ActorCoordinator
from schedsearch.trainers.strategies.pbt.config import PBTConfig

UNITS = session.RESOURCE_UNITS
ROOT = Path(__file__).resolve().parents[2]

# Node layouts: one machine of n CPUs, and clusters of a few nodes (a 0-CPU head included).
LAYOUTS: list[tuple[float, ...]] = [
    *[(float(n),) for n in (1, 2, 3, 4, 5, 6, 8, 12, 16, 64)],
    (0.5,),
    (1.0, 1.0),
    (1.0, 2.0),
    (0.0, 4.0),
    (3.0, 1.0, 1.0),
    (2.0, 2.0, 2.0, 2.0),
    (1.5, 0.5),
]


def _fits(capacities: tuple[float, ...], trials: int, share: float) -> bool:
    """Whether ``trials`` trials of ``share`` each can be placed, each on one node, in Ray's
    fixed-point units (what Ray itself checks)."""
    share_units = round(share * UNITS)
    return sum(int(c * UNITS + 1e-6) // share_units for c in capacities) >= trials


@pytest.mark.parametrize("capacities", LAYOUTS, ids=str)
def test_every_population_fits_at_once_with_the_largest_share_that_does(
    capacities: tuple[float, ...],
) -> None:
    for trials in range(1, 41):
        share = session.fitting_share(capacities, trials)
        assert share > 0, (capacities, trials)
        assert abs(share * UNITS - round(share * UNITS)) < 1e-6  # a quantity Ray accepts
        assert _fits(capacities, trials, share), (capacities, trials, share)
        # One unit more and some trial would wait: the share is the largest that fits.
        assert not _fits(capacities, trials, share + 1 / UNITS), (capacities, trials, share)


@pytest.mark.parametrize(
    ("population", "cpus", "expected"),
    [(3, 2, 0.6666), (3, 5, 1.6666), (6, 4, 0.6666), (3, 8, 2.6666), (4, 2, 0.5), (8, 2, 0.25)],
)
def test_the_reported_stalls_now_fit(population: int, cpus: int, expected: float) -> None:
    # 3 members on 2 CPUs asked 0.667 each (rounded up): 2.001 > 2 and one never started.
    ray = session.RaySession(None, True, float(cpus), 0.0, 0.0, node_cpus=(float(cpus),))
    resources = session.trial_resources(ray, concurrent=population, cpu=None, gpu=0)
    assert resources.cpu == expected
    assert population * resources.cpu <= cpus
    # A member asking for less than its share gets what it asked for.
    assert session.trial_resources(ray, concurrent=population, cpu=0.25, gpu=0).cpu == 0.25


def test_trials_spread_over_nodes_ask_what_one_node_holds() -> None:
    # Three members on two 1-CPU nodes: 2/3 CPU fits only one per node, 1/2 fits all three.
    ray = session.RaySession("h:1", True, 2.0, 0.0, 0.0, node_cpus=(1.0, 1.0))
    assert session.trial_resources(ray, concurrent=3, cpu=1.0, gpu=0).cpu == 0.5
    # A single trial gets what it asks for, up to the largest node.
    big = session.RaySession("h:1", True, 6.0, 0.0, 0.0, node_cpus=(2.0, 4.0))
    assert session.trial_resources(big, concurrent=1, cpu=8.0, gpu=0).cpu == 4.0


def test_gpu_shares_above_one_are_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "_torch_sees_gpu", lambda: True)
    ray = session.RaySession(None, True, 8.0, 3.0, 0.0, node_cpus=(8.0,), node_gpus=(3.0,))
    assert session.trial_resources(ray, concurrent=2, cpu=None, gpu=2).gpu == 1.0
    assert session.trial_resources(ray, concurrent=4, cpu=None, gpu=1).gpu == 0.75
    for trials, gpus in itertools.product(range(1, 9), (1.0, 2.0, 3.0, 8.0)):
        share = session.fitting_share((gpus,), trials, whole_above_one=True)
        assert share <= 1 or share == int(share)
        assert _fits((gpus,), trials, share)


# -- the start barrier ---------------------------------------------------------------------------


def _coordinator(population: int = 3) -> PBTCoordinator:
    config = PBTConfig.model_validate({"population": population, "perturbationInterval": 10})
    return PBTCoordinator(config, lr_min=1e-3, lr_max=0.5, total_steps=100)


def _local(coordinator: PBTCoordinator) -> ActorCoordinator:
    return ActorCoordinator(lambda method, *args: getattr(coordinator, method)(*args))


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0  # every look at the clock is one second later
        return self.now


def test_members_wait_for_the_late_ones_and_say_whom_they_wait_for() -> None:
    coordinator = _coordinator()
    coordinator.arrive(1)
    coordinator.place(2)  # Ray gave it a CPU: it is starting, so it is worth waiting for
    waits: list[tuple[list[int], float]] = []
    late = _local(coordinator).gather(
        0,
        timeout=20,
        poll=0,
        on_wait=lambda missing, waited: waits.append((missing, waited)),
        report_every=5,
        clock=_Clock(),
    )
    # Member 2 never came: the others stop waiting after the timeout, naming it.
    assert late == [2]
    assert waits and all(missing == [2] for missing, _ in waits)
    seconds = [waited for _, waited in waits]
    assert len(seconds) == 3 and seconds[0] >= 5
    assert all(b - a == 5 for a, b in itertools.pairwise(seconds))


def test_members_stop_waiting_soon_for_members_ray_has_no_resources_for() -> None:
    coordinator = _coordinator()
    for member in (0, 1):
        coordinator.place(member)
    coordinator.arrive(1)
    clock = _Clock()
    # Member 2 has no CPU (a busy cluster): the barrier must not hold the others for long.
    late = _local(coordinator).gather(0, timeout=600, poll=0, unplaced_grace=30, clock=clock)
    assert late == [2] and clock.now < 40


def test_ray_starting_a_trial_tells_the_coordinator() -> None:
    from schedsearch.engine import tuning

    started: list[int] = []
    callback = tuning._ResultsCallback(
        reporter=None,  # type: ignore[arg-type]
        outcome=tuning.TrialOutcome(),
        after_result=lambda result: None,
        after_error=lambda index, text: None,
        after_start=started.append,
    )

    class Trial:
        config = {tuning.JOB_KEY: {tuning.TRIAL_KEY: 2}}

    callback.on_trial_start(0, [], Trial())
    assert started == [2]


def test_only_the_lowest_waiting_member_reports_the_wait() -> None:
    coordinator = _coordinator()
    coordinator.arrive(0)
    waits: list[list[int]] = []
    late = _local(coordinator).gather(
        1, timeout=3, poll=0, on_wait=lambda m, w: waits.append(m), clock=_Clock()
    )
    assert late == [2] and waits == []


def test_a_member_that_failed_for_good_is_not_waited_for() -> None:
    coordinator = _coordinator()
    coordinator.arrive(1)
    coordinator.fail(2)  # its trial failed before it came up: the barrier must not hang on it
    assert _local(coordinator).gather(0, timeout=1e9, poll=0, clock=_Clock()) == []


# -- joining an existing Ray ---------------------------------------------------------------------


def test_the_address_comes_from_the_flag_then_ray_address() -> None:
    assert session.resolve_address("h:1", {"RAY_ADDRESS": "e:2"}) == ("h:1", False)
    assert session.resolve_address(None, {"RAY_ADDRESS": "e:2"}) == ("e:2", True)
    assert session.resolve_address(None, {"RAY_ADDRESS": " "}) == (None, False)
    assert session.resolve_address(None, {}) == (None, False)


def test_a_joined_cluster_is_not_sized_and_a_local_ray_is_private() -> None:
    # Ray refuses num_cpus/num_gpus when it joins a cluster ("must not be provided").
    joined = session._init_kwargs("h:1", {"py_modules": ["x"]})
    assert joined["address"] == "h:1" and joined["runtime_env"] == {"py_modules": ["x"]}
    assert not {"num_cpus", "num_gpus", "object_store_memory"} & set(joined)
    # "local": never a `ray start` cluster or $RAY_ADDRESS by accident.
    local = session._init_kwargs(None)
    assert local["address"] == "local" and local["num_cpus"] >= 1


def test_an_address_where_nothing_listens_fails_fast() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(session.RayConnectError, match=f"127.0.0.1:{port}"):
            session._check_reachable(f"127.0.0.1:{port}", "")


def _pyproject_packages() -> list[str]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(data["tool"]["setuptools"]["packages"])


def test_the_shipped_project_holds_every_package_the_project_installs(tmp_path: Path) -> None:
    staged = shipping.stage_project(tmp_path)
    for package in _pyproject_packages():
        parts = package.split(".")[1:]
        assert (staged.joinpath(*parts) / "__init__.py").is_file(), package
    assert not list(staged.rglob("__pycache__"))


def test_the_entrypoint_module_is_shipped_unless_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "train.py").write_text("workload = None\n")
    (tmp_path / "single.py").write_text("workload = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert shipping.entrypoint_source("mypkg.train:workload") == tmp_path / "mypkg"
    assert shipping.entrypoint_source("single:workload") == tmp_path / "single.py"
    assert shipping.entrypoint_source(None) is None
    assert shipping.entrypoint_source("no_such_module_here:w") is None
    # Installed packages are the cluster's to have, like torch.
    assert shipping.entrypoint_source("pydantic.main:BaseModel") is None


def _entrypoint_search(entrypoint: str) -> Any:
    from schedsearch.api import spec as api

    return api.ScheduleSearch.model_validate(
        {
            "apiVersion": "schedsearch.io/v1alpha1",
            "kind": "ScheduleSearch",
            "metadata": {"name": "s"},
            "spec": {
                "workload": {"entrypoint": entrypoint, "image": "unused:1"},
                "budget": {"steps": 100},
                "lrBounds": {"min": 1e-3, "max": 0.5},
                "baseSchedule": {"family": "cosine", "peakLR": 0.05},
                "strategy": {"pbt": {"population": 2, "perturbationInterval": 10}},
                "checkpoints": {"persistentVolumeClaim": "ckpt"},
            },
        }
    )


def test_a_relative_file_entrypoint_is_shipped_at_its_path_in_the_workers_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.py").write_text("def make():\n    return None\n")
    monkeypatch.chdir(tmp_path)
    env = shipping.runtime_env(_entrypoint_search("models/net.py:make"), tmp_path / "stage")
    workdir = Path(env["working_dir"])
    assert (workdir / "models" / "net.py").read_text() == "def make():\n    return None\n"
    assert env["py_modules"] == [str(tmp_path / "stage" / "schedsearch")]
    # Tune would move each trial into a folder of its own, where the path means nothing.
    assert env["env_vars"] == {session.CHDIR_ENV: "0"}


def test_a_module_entrypoint_is_shipped_as_a_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "net.py").write_text("def make():\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path / "user"))
    env = shipping.runtime_env(_entrypoint_search("net:make"), tmp_path / "stage")
    assert env["py_modules"][1:] == [str(tmp_path / "user" / "net.py")]
    assert "working_dir" not in env
