"""``schedsearch validate``: standard input, cluster or local checks, user entrypoints (imported,
checked against the workload protocol, plain generators made resumable), and the local CPU share.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from click.testing import CliRunner

from schedsearch.api.loading import parse_spec
from schedsearch.cli.main import cli
from schedsearch.cli.validation import cpu_share_warning, validate_source
from schedsearch.trainers import harness
from schedsearch.trainers.workloads.base import DEFAULT_LR, ReplayBatchStream
from schedsearch.trainers.workloads.registry import EntrypointWorkload, get_workload

REPO = Path(__file__).resolve().parents[2]
CUSTOM = f"{REPO / 'examples' / 'custom_workload.py'}:make_workload"

# A workload as a new user writes it: no default_lr, default_steps, batch_size or name, and a
# plain generator for its batches.
GENERATOR_WORKLOAD = """
import torch
from torch import nn


class Tiny:
    def build_model(self, seed):
        torch.manual_seed(seed)
        return nn.Linear(2, 1)

    def make_optimizer(self, params, lr):
        return torch.optim.SGD(params, lr=lr)

    def train_batches(self, seed):
        generator = torch.Generator().manual_seed(seed)
        for _ in range(7):  # a finite iterable: one "epoch" of 7 batches
            x = torch.randn(4, 2, generator=generator)
            yield x, x.sum(dim=1, keepdim=True)

    def loss(self, model, batch):
        x, y = batch
        return nn.functional.mse_loss(model(x), y)

    def evaluate(self, model):
        x = torch.ones(3, 2)
        with torch.no_grad():
            return {"val_loss": float(nn.functional.mse_loss(model(x), x.sum(1, keepdim=True)))}


def make():
    return Tiny()
"""


def spec(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "schedsearch.io/v1alpha1",
        "kind": "ScheduleSearch",
        "metadata": {"name": "mine"},
        "spec": {
            "workload": {"entrypoint": CUSTOM},
            "budget": {"steps": 600},
            "lrBounds": {"min": 1e-3, "max": 1.0},
            "baseSchedule": {"family": "cosine", "peakLR": 0.1},
            "strategy": {"pbt": {"population": 4, "perturbationInterval": 100}},
        },
    }
    doc["spec"].update(changes)
    return doc


def write(tmp_path: Path, doc: dict[str, Any], name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def generator_module(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "tinyworkload.py").write_text(GENERATOR_WORKLOAD)
    sys.path.insert(0, str(tmp_path))
    try:
        yield "tinyworkload:make"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("tinyworkload", None)


def test_validate_reads_standard_input() -> None:
    text = (REPO / "examples" / "digits-pbt.yaml").read_text()
    assert invoke("validate", "-", input=text) == (0, "<stdin>: ok (digits-pbt)\n")
    code, output = invoke("validate", "-", input="spec: [unclosed\n")
    assert code == 1 and output.startswith("<stdin>: not valid YAML")


def test_image_and_claim_are_asked_for_on_the_cluster_only_and_together(tmp_path: Path) -> None:
    path = write(tmp_path, spec())
    code, output = invoke("validate", str(path))
    assert code == 1
    assert f"{path}: spec.workload.image: required with entrypoint on the cluster" in output
    assert f"{path}: spec.checkpoints: PBT runs one pod per member (4)" in output
    code, output = invoke("validate", "--local", str(path))
    assert code == 0, output
    assert output.endswith(f"{path}: ok (mine)\n")


def test_an_entrypoint_that_does_not_import_is_named_with_a_pythonpath_hint(
    tmp_path: Path,
) -> None:
    doc = spec(workload={"entrypoint": "no_such_pkg_here.train:make", "image": "me/t:1"})
    path = write(tmp_path, doc)
    code, output = invoke("validate", "--local", str(path))
    assert code == 1
    assert (
        f"{path}: spec.workload.entrypoint: cannot import 'no_such_pkg_here.train': "
        "No module named 'no_such_pkg_here'; put the folder that holds 'no_such_pkg_here' on "
        "PYTHONPATH"
    ) in output
    # On the cluster the module lives in the image: not importable here is only a note.
    doc["spec"]["checkpoints"] = {"persistentVolumeClaim": "ckpt"}
    code, output = invoke("validate", str(write(tmp_path, doc)))
    assert code == 0, output
    assert "spec.workload.entrypoint: note: not checked here (cannot import" in output


def test_spec_and_entrypoint_problems_are_reported_in_one_pass(tmp_path: Path) -> None:
    doc = spec(workload={"entrypoint": "no_such_pkg_here:make"})
    doc["spec"]["strategy"]["pbt"]["population"] = 1
    code, output = invoke("validate", "--local", str(write(tmp_path, doc)))
    assert code == 1
    assert "spec.strategy.pbt.population: Input should be greater than or equal to 2" in output
    assert "spec.workload.entrypoint: cannot import 'no_such_pkg_here'" in output


def test_a_workload_missing_methods_is_refused_with_all_of_them(tmp_path: Path) -> None:
    module = tmp_path / "halfdone.py"
    module.write_text("class Half:\n    def loss(self, model, batch): ...\n")
    path = write(tmp_path, spec(workload={"entrypoint": f"{module}:Half"}))
    code, output = invoke("validate", "--local", str(path))
    assert code == 1
    assert "no build_model; no make_optimizer; no train_batches; no evaluate" in output


def test_a_workload_that_does_not_report_the_objective_is_refused(
    tmp_path: Path, generator_module: str
) -> None:
    module = tmp_path / "noobjective.py"
    module.write_text(
        "from tinyworkload import Tiny\n\n"
        "class NoObjective(Tiny):\n"
        "    def evaluate(self, model):\n"
        "        return {'accuracy': 1.0}\n"
    )
    path = write(tmp_path, spec(workload={"entrypoint": f"{module}:NoObjective"}))
    code, output = invoke("validate", "--local", str(path))
    assert code == 1
    assert "evaluate must return a dict with 'val_loss' as a finite number" in output


def test_a_generator_workload_validates_with_a_note_and_has_defaults(
    tmp_path: Path, generator_module: str
) -> None:
    path = write(tmp_path, spec(workload={"entrypoint": generator_module}))
    code, output = invoke("validate", "--local", str(path))
    assert code == 0, output
    assert "note: default_lr not set" in output
    assert "note: train_batches returns a plain iterable" in output
    workload = get_workload(generator_module)
    assert isinstance(workload, EntrypointWorkload)
    assert (workload.name, workload.default_lr) == (generator_module, DEFAULT_LR)


def test_a_plain_generator_resumes_by_replaying(generator_module: str) -> None:
    workload = get_workload(generator_module)
    stream = workload.train_batches(3)
    assert isinstance(stream, ReplayBatchStream)
    batches = [next(stream) for _ in range(10)]  # crosses the end of the 7-batch iterable
    for taken in (4, 9):
        resumed = workload.train_batches(3)
        resumed.load_state_dict({"seed": 3, "taken": taken})
        assert resumed.state_dict() == {"seed": 3, "taken": taken}
        assert all(torch.equal(a, b) for a, b in zip(next(resumed), batches[taken], strict=True))


def test_a_generator_workload_trains_through_a_checkpoint(generator_module: str) -> None:
    first = harness.Trainer(get_workload(generator_module), seed=0)
    first.train(5, lambda _: 0.05)
    saved = first.state_dict()  # used to fail: a generator has no state_dict
    first.train(4, lambda _: 0.05)
    second = harness.Trainer(get_workload(generator_module), seed=0)
    second.load_state_dict(saved)
    second.train(4, lambda _: 0.05)
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_members_sharing_a_small_machine_are_warned_about() -> None:
    search = parse_spec(spec(resources={"cpu": "1"}))
    warning = cpu_share_warning(search, cpus=2)
    assert warning is not None
    assert warning.startswith("spec.resources.cpu: 4 members share this machine's 2 CPU(s)")
    assert "each gets about 0.50 CPU, not the 1 the spec asks" in warning
    assert cpu_share_warning(search, cpus=4) is None


def test_the_local_cpu_warning_is_printed_by_validate_local(tmp_path: Path) -> None:
    path = write(tmp_path, spec(resources={"cpu": "64"}))
    report = validate_source(path, "local", cpus=2)
    assert report.ok
    assert any("warning: spec.resources.cpu: 4 members share" in line for line in report.lines)
    cluster = validate_source(path, "cluster", cpus=2).lines
    assert not any(": warning: " in line for line in cluster)


def test_the_custom_workload_example_passes_the_protocol_check(tmp_path: Path) -> None:
    path = write(tmp_path, spec(checkpoints={"persistentVolumeClaim": "c"}))
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["workload"]["image"] = "me/t:1"
    code, output = invoke("validate", str(write(tmp_path, doc)))
    assert (code, output.splitlines()[-1]) == (0, f"{tmp_path / 's.yaml'}: ok (mine)")
    assert "note" not in output, textwrap.shorten(output, 300)
