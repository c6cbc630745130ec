"""``schedsearch predict``: a law search's fitted law evaluated on other schedules, no training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from schedsearch.api import load_spec
from schedsearch.cli import prediction
from schedsearch.cli.main import cli
from schedsearch.store import SQLiteStore
from schedsearch.trainers import families
from schedsearch.trainers.config import BaseScheduleConfig
from schedsearch.trainers.schedules import ChangePoint, Schedule
from schedsearch.trainers.strategies.law import laws

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "examples" / "digits-pbt.yaml"
TRUNK_LR = 0.1
WARMUP = 20
BUDGET = 400
# Parameters of the order the fit finds (LRs in units of the trunk LR).
MULTI_POWER = laws.MultiPowerLaw(
    l0=1.5, a=2.0, alpha=0.5, b=0.4, c=2.0, beta=0.6, gamma=0.6, lr_scale=TRUNK_LR
)
TISSUE = laws.TissueLaw(l0=1.5, a=2.0, alpha=0.5, c=0.002, lam=0.99, lr_scale=TRUNK_LR)
# The shape a law search finds: warm-up, a slow decline, a final decay to the floor.
SHAPE = Schedule(
    (
        ChangePoint(0, 0.0, "linear"),
        ChangePoint(WARMUP, TRUNK_LR, "linear"),
        ChangePoint(300, 0.08, "linear"),
        ChangePoint(BUDGET, 0.001),
    ),
    BUDGET,
)


def found_by(law: laws.Law) -> Schedule:
    """``SHAPE`` with the provenance ``run_law`` gives a found schedule."""
    return SHAPE.with_provenance(
        strategy="law",
        workload="digits-cnn",
        law=law.to_dict(),
        lawWarmup=WARMUP,
        fitError=0.012,
        heldOutError=0.031,
        predictedFinal=laws.final_loss(law, SHAPE.lrs(), warmup=WARMUP),
        verified=True,
        trunkLR=TRUNK_LR,
    )


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """A law search's best schedule as ``schedsearch export`` writes it."""
    path = tmp_path / "found.json"
    path.write_text(found_by(MULTI_POWER).to_json(indent=2))
    return path


def store_with(path: Path, schedule: Schedule) -> Path:
    store = SQLiteStore(path)
    search = load_spec(SPEC)
    store.create_search(search)
    store.set_phase(search.name, "Running")
    store.finish(search.name, schedule=schedule, objective=1.3, member=0, member_steps=1200)
    return path


def multi_power_by_hand(law: laws.MultiPowerLaw, lrs: list[float], n: int, warmup: int) -> float:
    """Luo et al.'s formula written out term by term, with LRs in units of the trunk LR."""
    eta = [lr / law.lr_scale for lr in lrs]
    area = sum(eta[:n])
    annealing = 0.0
    for k in range(warmup + 1, n):
        span = sum(eta[k:n])
        g = 1.0 - (law.c * max(eta[k], laws.MIN_SCALED_LR) ** -law.gamma * span + 1.0) ** -law.beta
        annealing += (eta[k - 1] - eta[k]) * g
    return law.l0 + law.a * area**-law.alpha - law.b * annealing


def tissue_by_hand(law: laws.TissueLaw, lrs: list[float], n: int, warmup: int) -> float:
    """Tissue et al.'s formula: the annealing area is a sum of drops with momentum."""
    eta = [lr / law.lr_scale for lr in lrs]
    momentum = s2 = 0.0
    for k in range(n):
        drop = eta[k - 1] - eta[k] if k > warmup else 0.0
        momentum = law.lam * momentum + drop
        s2 += momentum
    return law.l0 + law.a * sum(eta[:n]) ** -law.alpha - law.c * s2


# --- the law's prediction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("law", "by_hand"), [(MULTI_POWER, multi_power_by_hand), (TISSUE, tissue_by_hand)]
)
def test_a_prediction_is_the_laws_closed_form(law: laws.Law, by_hand: object) -> None:
    fitted = prediction.FittedLaw.of(found_by(law), search="s")
    chosen = prediction.candidate("family=cosine,peak=0.1,min=0.002", fitted)
    predicted = prediction.predict(fitted, chosen, at=[100, 250])
    lrs = chosen.schedule.lrs()
    for step in (100, 250, BUDGET):
        expected = by_hand(law, lrs, step, WARMUP)  # type: ignore[operator]
        assert predicted.loss_at(step) == pytest.approx(expected, rel=1e-10)
    assert predicted.steps[0] == WARMUP + 1 and predicted.steps[-1] == BUDGET


@pytest.mark.parametrize("law", [MULTI_POWER, TISSUE])
def test_the_found_schedule_reproduces_the_stored_prediction(law: laws.Law) -> None:
    found = Schedule.from_json(found_by(law).to_json())  # as read back from a store or a file
    fitted = prediction.FittedLaw.of(found, search="s")
    result = prediction.report(fitted, [])
    assert result.predictions[0].candidate.label == prediction.FOUND
    assert result.predictions[0].final == found.provenance["predictedFinal"]


def test_an_exported_json_file_is_read_as_json(tmp_path: Path) -> None:
    # JSON writes 1e-05 with no dot, which YAML 1.1 would read as a string.
    law = laws.MultiPowerLaw(
        l0=1e-05, a=2.0, alpha=0.5, b=0.4, c=2.0, beta=0.6, gamma=0.6, lr_scale=TRUNK_LR
    )
    path = tmp_path / "found.json"
    path.write_text(found_by(law).to_json())
    assert '"l0": 1e-05' in path.read_text()
    code, output = invoke("predict", str(path), "-o", "json")
    assert code == 0, output
    assert json.loads(output)["law"]["l0"] == 1e-05


def test_the_law_is_read_in_its_trunk_lr_units() -> None:
    # An older provenance without lr_scale in the law: the trunk LR is its unit.
    data = MULTI_POWER.to_dict()
    del data["lr_scale"]
    found = found_by(MULTI_POWER).with_provenance(law=data)
    fitted = prediction.FittedLaw.of(found, search="s")
    assert fitted.law == MULTI_POWER
    assert prediction.report(fitted, []).predictions[0].final == found.provenance["predictedFinal"]


def test_a_family_is_built_by_the_base_schedule_builder() -> None:
    fitted = prediction.FittedLaw.of(found_by(MULTI_POWER), search="s")
    chosen = prediction.candidate("family=wsd,peak=0.08,decay=100", fitted)
    config = BaseScheduleConfig(family="wsd", peak_lr=0.08, decay_steps=100, warmup_steps=WARMUP)
    assert chosen.schedule == families.build_schedule(config, BUDGET)
    assert chosen.warmup == WARMUP and chosen.note is None
    onecycle = prediction.candidate("family=onecycle,peakLR=0.1", fitted)
    assert onecycle.warmup == 120  # its rise, 30% of the budget, is not annealing
    assert onecycle.note is not None and "warm-up of 120 steps" in onecycle.note


# --- the command ----------------------------------------------------------------------------------


def test_table_names_the_errors_and_compares_the_schedules(exported: Path) -> None:
    code, output = invoke(
        "predict", str(exported), "-s", "family=cosine,peak=0.1", "-s", "family=wsd,peak=0.12"
    )
    assert code == 0, output
    assert "fit error 1.20%" in output and "held-out error 3.10%" in output
    assert "peak LR 0.12 is above the trunk LR 0.1" in output
    rows = {line.split()[0]: line.split() for line in output.splitlines() if line}
    assert rows["SCHEDULE"] == [
        *("SCHEDULE", "STEPS", "PEAK", "LR", "LOSS@100", "LOSS@200", "LOSS@300", "FINAL"),
        *("VS", "FOUND"),
    ]
    stored = found_by(MULTI_POWER).provenance["predictedFinal"]
    assert rows["found"][-2:] == [f"{stored:.4g}", "-"]
    assert {"family=cosine,peak=0.1", "family=wsd,peak=0.12"} <= rows.keys()


def test_json_has_steps_and_losses_per_schedule(exported: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(SHAPE.scaled(0.5).to_json())
    code, output = invoke("predict", str(exported), "-s", str(other), "-o", "json")
    assert code == 0, output
    document = json.loads(output)
    assert document["law"] == MULTI_POWER.to_dict()
    assert (document["fitError"], document["heldOutError"]) == (0.012, 0.031)
    assert [s["label"] for s in document["schedules"]] == ["found", "other.json"]
    for entry in document["schedules"]:
        assert len(entry["steps"]) == len(entry["loss"]) > 100
        assert entry["steps"][-1] == BUDGET and entry["loss"][-1] == entry["predictedFinal"]
        assert all(math.isfinite(v) for v in entry["loss"])
    assert document["schedules"][0]["predictedFinal"] == document["storedPredictedFinal"]


def test_the_search_is_found_by_name_or_spec_file(tmp_path: Path) -> None:
    store = store_with(tmp_path / "results.db", found_by(MULTI_POWER))
    by_name = invoke("predict", "digits-pbt", "--store", str(store), "-o", "json")
    by_spec = invoke("predict", str(SPEC), "--store", str(store), "-o", "json")
    assert by_name[0] == by_spec[0] == 0, by_name[1] + by_spec[1]
    assert json.loads(by_name[1]) == json.loads(by_spec[1])
    assert json.loads(by_name[1])["search"] == "digits-pbt"


def test_a_search_of_another_strategy_cannot_predict(tmp_path: Path) -> None:
    pbt_schedule = SHAPE.with_provenance(strategy="pbt")
    store = store_with(tmp_path / "results.db", pbt_schedule)
    code, output = invoke("predict", "digits-pbt", "--store", str(store))
    assert code == 1
    assert "digits-pbt: its best schedule came from a pbt search" in output
    assert "only law searches can predict" in output
    assert invoke("predict", "nope", "--store", str(store))[0] == 3


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("family=cosin,peak=0.1", "--schedule family=cosin,peak=0.1: family: Input should be"),
        ("family=cosine,peek=0.1", "unknown key 'peek'; allowed: family, peak, min, warmup"),
        ("family=cosine,peak=fast", "peak: 'fast' is not a number"),
        ("family=cosine,peak=-1", "peak: Input should be greater than 0"),
        ("family=cosine,peak=0.1,warmup=400", "warmup: 400 leaves no steps after warm-up"),
        ("family=cosine,peak=0.1,warmup=2.5", "warmup: Input should be a valid integer"),
        ("family=cosine,peak", "'peak' is not key=value"),
        ("family=sgdr,peak=0.1", "t0: family sgdr needs"),
        ("missing.json", "--schedule missing.json: no such file"),
    ],
)
def test_a_bad_schedule_names_what_is_wrong(exported: Path, value: str, said: str) -> None:
    code, output = invoke("predict", str(exported), "-s", value)
    assert code == 1, output
    assert said in output, output


def test_a_broken_law_in_the_provenance_is_named(tmp_path: Path) -> None:
    path = tmp_path / "found.json"
    path.write_text(found_by(MULTI_POWER).with_provenance(law={"law": "multiPower"}).to_json())
    code, output = invoke("predict", str(path))
    assert code == 1 and "found.json: provenance.law.l0: expected a number" in output


def test_the_plot_is_written(exported: Path, tmp_path: Path) -> None:
    image = tmp_path / "predicted.png"
    code, output = invoke(
        "predict", str(exported), "-s", "family=cosine,peak=0.1", "-f", str(image)
    )
    assert code == 0, output
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, output = invoke("predict", str(exported), "-f", str(tmp_path / "predicted.txt"))
    assert code == 1 and "cannot tell the image format" in output


def test_a_stalled_annealed_loss_is_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "found.json"
    stalled = "the annealed validation loss stopped falling along the trunk (...)"
    path.write_text(found_by(MULTI_POWER).with_provenance(stalled=stalled).to_json())
    code, output = invoke("predict", str(path), "-s", "family=cosine,peak=0.1")
    assert code == 0, output
    assert f"warning: {stalled}" in output
