"""The bounds the spec puts on sizes and values, and why each is where it is."""

from __future__ import annotations

import json
import random

from schedsearch.controller import state as state_mod
from schedsearch.trainers.strategies.config import MAX_MEMBERS
from schedsearch.trainers.strategies.pbt.config import PBTConfig
from schedsearch.trainers.strategies.pbt.coordinator import Coordinator

CONFIGMAP_LIMIT = 1024 * 1024  # the API server refuses a larger object (etcd's request limit)
LONG_PATH = "/checkpoints/" + "n" * 63 + "/" + "s" * 63 + "/member-255/step-1000000000.pt"


def full_state(members: int) -> state_mod.SearchState:
    """A PBT state as large as a long search makes it: every member mid-search with a
    checkpoint, a start point and an exploit answer, and the population's history full."""
    # model_construct: sizes beyond the bound are measured too.
    pbt = PBTConfig.model_construct(**{**PBTConfig().model_dump(), "population": members})
    state = state_mod.initial(
        search_uid="u" * 36,
        strategy="pbt",
        members=members,
        spec={"budget": {"steps": 1_000_000_000}, "pad": "x" * 8000},
        generation=1,
    )
    coordinator = Coordinator(pbt, lr_min=1e-4, lr_max=1.0, total_steps=1_000_000_000)
    rng = random.Random(0)
    for step in range(250, 1500, 250):
        for member in range(members):
            coordinator.report(member, step, rng.random(), f"{LONG_PATH}.{member}.{step}")
    state.population = coordinator.state_dict()
    answer = {"action": "exploit", "source": 255, "config": {"lr": 0.123456789}, "step": 10**9}
    for record in state.members.values():
        record.step = record.member_steps = 999_999_999
        record.objective, record.lr, record.checkpoint = 0.123456789, 0.0123456789, LONG_PATH
        record.attempts, record.last_seq, record.last_key = 100, 10**9, "k" * 64
        record.last_answer = {**answer, "checkpoint": LONG_PATH}
    return state


def configmap_bytes(state: state_mod.SearchState) -> int:
    data, binary = state.to_configmap()
    return len(json.dumps({"data": data, "binaryData": binary}))


def test_the_largest_population_keeps_the_state_configmap_well_under_1_mib() -> None:
    size = configmap_bytes(full_state(MAX_MEMBERS))
    assert size < CONFIGMAP_LIMIT / 2, f"{size} bytes for {MAX_MEMBERS} members"
    # ... and the bound is there for the ConfigMap, not by habit: 5x as many would not fit
    # (the start points are in the compressed coordinator, so a member costs less than it did).
    assert 5 * size > CONFIGMAP_LIMIT, f"{size} bytes for {MAX_MEMBERS} members"
