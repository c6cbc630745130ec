"""Member pods, HDET's Service and the token Secret, built from specs (controller.pods)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schedsearch.api import spec as api
from schedsearch.controller import names, pods, settings
from schedsearch.trainers import channel
from schedsearch.trainers.strategies import registry

from .controller_fixtures import CONFIG, UID, _builtin_workloads, parsed  # noqa: F401

REF = pods.SearchRef("ml", "s1", UID)


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]
    }


def test_pod_identity_ownership_and_restart_policy() -> None:
    pod = pods.member_pod(REF, parsed("pbt"), 3, attempt=2, config=CONFIG)
    meta = pod["metadata"]
    assert meta["name"] == "s1-pbt-3"
    assert meta["namespace"] == "ml"
    assert meta["labels"][names.LABEL_SEARCH] == "s1"
    assert meta["labels"][names.LABEL_MEMBER] == "3"
    assert meta["labels"][names.LABEL_ROLE] == "pbt"
    assert meta["annotations"][names.ANNOTATION_ATTEMPT] == "2"
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": api.API_VERSION,
        "kind": "ScheduleSearch",
        "name": "s1",
        "uid": UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert pod["spec"]["restartPolicy"] == "Never"
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "schedsearch.trainers", "pod"]


def test_names_are_deterministic() -> None:
    a = pods.member_pod(REF, parsed("pbt"), 1, attempt=1, config=CONFIG)
    b = pods.member_pod(REF, parsed("pbt"), 1, attempt=1, config=CONFIG)
    assert a == b


@pytest.mark.parametrize(
    ("resources", "limits"),
    [
        ({"cpu": "2", "memory": "4Gi"}, {"cpu": "2", "memory": "4Gi"}),
        (
            {"cpu": "500m", "memory": "1Gi", "gpu": 2},
            {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "2"},
        ),
    ],
)
def test_resources_requests_limits_and_gpu(
    resources: dict[str, Any], limits: dict[str, str]
) -> None:
    pod = pods.member_pod(REF, parsed("pbt", resources=resources), 0, attempt=1, config=CONFIG)
    got = pod["spec"]["containers"][0]["resources"]
    assert got["limits"] == limits
    assert got["requests"] == {"cpu": resources["cpu"], "memory": resources["memory"]}
    assert "nvidia.com/gpu" not in got["requests"]


def test_env_carries_identity_spec_and_token_reference() -> None:
    spec = parsed("pbt")
    start = {"config": {"lr": 0.01}, "step": 0, "checkpoint": None, "memberSteps": 0}
    pod = pods.member_pod(REF, spec, 2, attempt=1, config=CONFIG, member_start=start)
    env = env_of(pod)
    assert env[channel.ENV_SEARCH] == "s1"
    assert env[channel.ENV_NAMESPACE] == "ml"
    assert env[channel.ENV_MEMBER] == "2"
    assert env[channel.ENV_ROLE] == "pbt"
    assert env[channel.ENV_REPORT_URL] == "http://ctl:8081"
    assert json.loads(env[channel.ENV_MEMBER_START]) == start
    assert api.ScheduleSearchSpec.model_validate(json.loads(env[channel.ENV_SPEC])) == spec
    token = {"secretKeyRef": {"name": "s1-report-token", "key": channel.TOKEN_KEY}}
    assert env[channel.ENV_REPORT_TOKEN] == token
    # A plain value would put the token in every `kubectl get pod -o yaml`.
    assert all(e.get("value") != token for e in pod["spec"]["containers"][0]["env"])
    assert "RANK" not in env


def test_checkpoint_volume_pvc_or_emptydir() -> None:
    pvc = pods.member_pod(REF, parsed("pbt"), 0, attempt=1, config=CONFIG)
    assert pvc["spec"]["volumes"] == [
        {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "ckpt"}}
    ]
    mount = pvc["spec"]["containers"][0]["volumeMounts"][0]
    assert mount == {"name": "checkpoints", "mountPath": CONFIG.checkpoint_mount}
    folder = env_of(pvc)[channel.ENV_CHECKPOINT_DIR]
    assert folder.startswith(CONFIG.checkpoint_mount + "/") and UID[:8] in folder

    spec = parsed("autolrs", checkpoints={"emptyDir": {"sizeLimit": "5Gi"}})
    local = pods.member_pod(REF, spec, 0, attempt=1, config=CONFIG)
    assert local["spec"]["volumes"] == [{"name": "checkpoints", "emptyDir": {"sizeLimit": "5Gi"}}]


def test_scheduling_fields() -> None:
    scheduling = {
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "serviceAccountName": "trainer",
    }
    pod = pods.member_pod(REF, parsed("pbt", scheduling=scheduling), 0, attempt=1, config=CONFIG)
    assert pod["spec"]["nodeSelector"] == {"pool": "gpu"}
    assert pod["spec"]["tolerations"] == [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["spec"]["serviceAccountName"] == "trainer"


def test_hdet_rendezvous_env_and_dns() -> None:
    spec = parsed("hdet")
    ranks = [pods.member_pod(REF, spec, r, attempt=1, config=CONFIG) for r in range(2)]
    envs = [env_of(p) for p in ranks]
    assert [e["RANK"] for e in envs] == ["0", "1"]
    assert {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert {e["MASTER_ADDR"] for e in envs} == {"s1-hdet-0.s1-hdet.ml.svc"}
    assert len({e["MASTER_PORT"] for e in envs}) == 1
    assert [p["spec"]["hostname"] for p in ranks] == ["s1-hdet-0", "s1-hdet-1"]
    assert {p["spec"]["subdomain"] for p in ranks} == {"s1-hdet"}
    service = pods.replica_service(REF, "hdet")
    assert service["metadata"]["name"] == "s1-hdet"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {names.LABEL_SEARCH: "s1", names.LABEL_ROLE: "hdet"}
    assert service["metadata"]["ownerReferences"][0]["uid"] == UID


def test_image_choice_and_refusal() -> None:
    own = parsed("pbt")
    assert pods.trainer_image(own, CONFIG) == "registry.example/me/train:2"
    builtin = parsed("pbt", workload={"builtin": "digits-cnn"})
    assert pods.trainer_image(builtin, CONFIG) == CONFIG.image
    with pytest.raises(ValueError, match=r"spec\.workload\.image"):
        pods.member_pod(REF, builtin, 0, attempt=1, config=settings.Settings())


def test_token_secret_and_state_configmap_are_owned() -> None:
    secret = pods.token_secret(REF, "t0ken")
    assert secret["metadata"]["name"] == "s1-report-token"
    assert secret["stringData"] == {channel.TOKEN_KEY: "t0ken"}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == UID


@pytest.mark.parametrize(
    ("base", "expected"),
    [("abc-hdet", "abc-hdet"), ("9lives-hdet", None), ("x" * 70, None)],
)
def test_dns_labels(base: str, expected: str | None) -> None:
    label = names.dns_label(base)
    if expected is not None:
        assert label == expected
    assert len(label) <= 63 and label[0].isalpha() and label[-1].isalnum()
    assert names.dns_label(base) == label


@pytest.mark.parametrize(
    ("cpu", "threads"), [("500m", "1"), ("1", "1"), ("2", "2"), ("2500m", "3")]
)
def test_thread_count_follows_the_cpu_limit(cpu: str, threads: str) -> None:
    spec = parsed("pbt", resources={"cpu": cpu, "memory": "1Gi"})
    assert (
        env_of(pods.member_pod(REF, spec, 0, attempt=1, config=CONFIG))["OMP_NUM_THREADS"]
        == threads
    )


@pytest.mark.parametrize("kind", registry.NAMES)
def test_every_strategy_gets_pods_by_its_shape(kind: str) -> None:
    """Each registered strategy's members are pods with its role; only a replica set gets the
    rendezvous (and the Service the plan creates for it)."""
    spec = parsed(kind)
    strategy = registry.get(kind)
    assert pods.role_of(spec) == kind and pods.shape_of(spec) == strategy.shape
    count = pods.member_count(spec)
    assert count == strategy.members(spec.strategy.config)
    for member in range(count):
        pod = pods.member_pod(REF, spec, member, attempt=1, config=CONFIG)
        assert pod["metadata"]["labels"][names.LABEL_ROLE] == kind
        assert env_of(pod)[channel.ENV_ROLE] == kind
        assert ("MASTER_ADDR" in env_of(pod)) == (strategy.shape == "replicas")
