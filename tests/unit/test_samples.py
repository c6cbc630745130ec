"""Every sample under operator/samples is a valid object a user can apply as it is."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from schedsearch.api import load_specs
from schedsearch.controller import pods, settings
from schedsearch.trainers.strategies import registry

SAMPLES = Path(__file__).resolve().parents[2] / "operator" / "samples"
SEARCHES = sorted(p for p in SAMPLES.glob("*.yaml") if "ScheduleSearch" in p.read_text())


def test_there_is_one_sample_per_strategy() -> None:
    strategies = {load_specs(p)[0].spec.strategy.name for p in SEARCHES}
    assert strategies == set(registry.NAMES)


@pytest.mark.parametrize("path", SEARCHES, ids=lambda p: p.name)
def test_sample_validates_and_builds_pods(path: Path) -> None:
    (search,) = load_specs(path)
    ref = pods.SearchRef("default", search.name, "00000000-0000-0000-0000-000000000000")
    config = settings.Settings(image="schedsearch/schedsearch:dev")
    for member in range(pods.member_count(search.spec)):
        pod = pods.member_pod(ref, search.spec, member, attempt=1, config=config)
        assert pod["metadata"]["name"].startswith(search.name)


def test_the_claim_sample_is_shared() -> None:
    claim = yaml.safe_load((SAMPLES / "checkpoints-pvc.yaml").read_text())
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    shared = [load_specs(p)[0].spec.checkpoints.persistent_volume_claim for p in SEARCHES]
    assert claim["metadata"]["name"] in shared
