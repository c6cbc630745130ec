"""Manifests of what a search runs on: member pods, the control run's pod, HDET's headless
Service, the token Secret, the state ConfigMap. Pure functions from the spec (plus settings) to
API objects.

Every object carries an ownerReference to the search, so deleting the search lets Kubernetes'
garbage collector remove them; the stored LRSchedule is built elsewhere and has none (it outlives
the search). Member pods never restart in place (``restartPolicy: Never``): the controller
replaces a failed pod, and the new one resumes from the member's last checkpoint on the volume.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from schedsearch.api.fields import parse_quantity
from schedsearch.api.spec import API_VERSION, SEARCH_KIND, ScheduleSearchSpec
from schedsearch.controller import names, settings
from schedsearch.controller import state as state_mod
from schedsearch.trainers import channel
from schedsearch.trainers import metrics as trainer_metrics
from schedsearch.trainers.strategies.strategy import Shape

JsonObj = dict[str, Any]
CONTAINER = "trainer"
CHECKPOINT_VOLUME = "checkpoints"
TRAINER_COMMAND = ("python", "-m", "schedsearch.trainers", "pod")
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class SearchRef:
    """The identity of a search: enough to name, label and own its objects."""

    namespace: str
    name: str
    uid: str

    def owner_reference(self) -> JsonObj:
        return {
            "apiVersion": API_VERSION,
            "kind": SEARCH_KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, name: str, **labels: str) -> JsonObj:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": names.labels(self.name, **labels),
            "ownerReferences": [self.owner_reference()],
        }


def role_of(spec: ScheduleSearchSpec) -> channel.Role:
    """The members' role: their strategy's name (the pods' role label)."""
    return spec.strategy.name


def shape_of(spec: ScheduleSearchSpec) -> Shape:
    """How the strategy runs: one trainer pod, a population's member pods, or a replica set."""
    return spec.strategy.strategy.shape


def member_count(spec: ScheduleSearchSpec) -> int:
    """Pods the strategy runs: a population's members, a replica set's replicas, or 1."""
    chosen = spec.strategy
    return chosen.strategy.members(chosen.config)


def trainer_image(spec: ScheduleSearchSpec, config: settings.Settings) -> str | None:
    """The workload's own image, else the controller's default trainer image."""
    return spec.workload.image or config.image


def checkpoint_dir(ref: SearchRef, config: settings.Settings) -> str:
    # The uid keeps a re-created search of the same name from resuming its predecessor's files.
    return f"{config.checkpoint_mount}/{ref.name}-{ref.uid[:8]}"


def master_port(ref: SearchRef) -> int:
    """A replica set's rendezvous port, derived from the search's uid.

    In a cluster every pod has its own IP and any fixed port would do; pods sharing one network
    namespace (hostNetwork, or single-node test setups) would collide on a fixed one.
    """
    return 20000 + int(hashlib.sha256(ref.uid.encode()).hexdigest(), 16) % 10000


def master_addr(ref: SearchRef, role: str) -> str:
    """Rank 0's DNS name under the headless Service (``<host>.<service>.<namespace>.svc``)."""
    host, service = names.replica_hostname(ref.name, role, 0), names.replica_service(ref.name, role)
    return f"{host}.{service}.{ref.namespace}.svc"


def member_pod(
    ref: SearchRef,
    spec: ScheduleSearchSpec,
    member: int,
    *,
    attempt: int,
    config: settings.Settings,
    member_start: dict[str, Any] | None = None,
    report_seq: int = 0,
) -> JsonObj:
    """The pod of ``member`` (its ``attempt``-th, counting from 1); its reports are numbered
    from ``report_seq + 1``."""
    role = role_of(spec)
    extra: dict[str, str] = {}
    if member_start is not None:
        extra[channel.ENV_MEMBER_START] = json.dumps(member_start, sort_keys=True)
    replicas = shape_of(spec) == "replicas"
    if replicas:
        extra.update(_rendezvous_env(ref, spec, member))
    trainer = _Trainer(role, names.member_pod(ref.name, role, member), member, attempt, report_seq)
    pod = _trainer_pod(ref, spec, trainer, config, extra, _checkpoint_volume(spec))
    if replicas:
        pod["spec"]["hostname"] = names.replica_hostname(ref.name, role, member)
        pod["spec"]["subdomain"] = names.replica_service(ref.name, role)
        if member == 0:
            pod["spec"]["containers"][0].setdefault("ports", []).append(
                {"name": "rendezvous", "containerPort": master_port(ref)}
            )
    return pod


def control_pod(
    ref: SearchRef,
    spec: ScheduleSearchSpec,
    member: int,
    *,
    attempt: int,
    config: settings.Settings,
    control: dict[str, Any],
    report_seq: int = 0,
) -> JsonObj:
    """The control run's pod: it trains ``control["found"]`` and ``control["base"]`` from
    ``control["seed"]`` and reports under member index ``member`` (the state's
    ``control_index``). It gets the members' resources (GPUs included), so both schedules train
    on the hardware the search ran on; it trains from scratch and reads no checkpoint, so it
    gets a scratch emptyDir rather than the search's checkpoint volume."""
    extra = {channel.ENV_CONTROL: json.dumps(control, sort_keys=True, separators=(",", ":"))}
    trainer = _Trainer("control", names.control_pod(ref.name), member, attempt, report_seq)
    scratch = {"name": CHECKPOINT_VOLUME, "emptyDir": {}}
    return _trainer_pod(ref, spec, trainer, config, extra, scratch)


@dataclass(frozen=True)
class _Trainer:
    """Who a trainer pod is: its role, pod name, member index, attempt and last report."""

    role: channel.Role
    name: str
    member: int
    attempt: int
    report_seq: int


def _trainer_pod(
    ref: SearchRef,
    spec: ScheduleSearchSpec,
    trainer: _Trainer,
    config: settings.Settings,
    extra_env: dict[str, str],
    volume: JsonObj,
) -> JsonObj:
    image = trainer_image(spec, config)
    if image is None:
        raise ValueError(
            "spec.workload.image: required when the controller has no default trainer image "
            "(start it with --image)"
        )
    meta = ref.metadata(
        trainer.name,
        **{names.LABEL_ROLE: trainer.role, names.LABEL_MEMBER: str(trainer.member)},
    )
    meta["annotations"] = {names.ANNOTATION_ATTEMPT: str(trainer.attempt)}
    container: JsonObj = {
        "name": CONTAINER,
        "image": image,
        "command": list(TRAINER_COMMAND),
        "env": _env(ref, spec, trainer, config, extra_env),
        "resources": resources(spec),
        "volumeMounts": [{"name": CHECKPOINT_VOLUME, "mountPath": config.checkpoint_mount}],
    }
    if config.trainer_metrics_port is not None:
        container["ports"] = [{"name": "metrics", "containerPort": config.trainer_metrics_port}]
    pod_spec: JsonObj = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": config.termination_grace_seconds,
        # Service links put every Service of the namespace into the environment: noise at best.
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": [volume],
    }
    pod_spec.update(_scheduling(spec))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}


def _env(
    ref: SearchRef,
    spec: ScheduleSearchSpec,
    trainer: _Trainer,
    config: settings.Settings,
    extra: dict[str, str],
) -> list[JsonObj]:
    values: dict[str, str] = {
        channel.ENV_SEARCH: ref.name,
        channel.ENV_NAMESPACE: ref.namespace,
        channel.ENV_SEARCH_UID: ref.uid,
        channel.ENV_ROLE: trainer.role,
        channel.ENV_MEMBER: str(trainer.member),
        channel.ENV_ATTEMPT: str(trainer.attempt),
        channel.ENV_SPEC: json.dumps(spec.to_wire(), sort_keys=True, separators=(",", ":")),
        channel.ENV_CHECKPOINT_DIR: checkpoint_dir(ref, config),
        channel.ENV_REPORT_URL: config.report_url,
        channel.ENV_REPORT_SEQ: str(trainer.report_seq),
        "PYTHONUNBUFFERED": "1",
        # torch sizes its thread pool from the node's cores, not the pod's CPU limit: far more
        # threads than the limit allows makes small models spin and slow down several-fold.
        "OMP_NUM_THREADS": str(cpu_threads(spec)),
    }
    if config.trainer_metrics_port is not None:
        values[trainer_metrics.PORT_ENV] = str(config.trainer_metrics_port)
    values.update(extra)
    env: list[JsonObj] = [{"name": k, "value": v} for k, v in values.items()]
    token_ref = {"name": names.token_secret(ref.name), "key": channel.TOKEN_KEY}
    env.append({"name": channel.ENV_REPORT_TOKEN, "valueFrom": {"secretKeyRef": token_ref}})
    return env


def _rendezvous_env(ref: SearchRef, spec: ScheduleSearchSpec, rank: int) -> dict[str, str]:
    """torch.distributed's env:// rendezvous: rank 0 hosts it, reached by its stable DNS name."""
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(member_count(spec)),
        "MASTER_ADDR": master_addr(ref, role_of(spec)),
        "MASTER_PORT": str(master_port(ref)),
    }


def cpu_threads(spec: ScheduleSearchSpec) -> int:
    """Intra-op threads a member should use: its CPU quantity rounded up, at least one."""
    return max(1, math.ceil(parse_quantity(spec.resources.cpu)))


def resources(spec: ScheduleSearchSpec) -> JsonObj:
    """Requests equal to limits (Guaranteed QoS: a training step should not be throttled into
    a different speed than its neighbours'); GPUs are an extended resource set as a limit."""
    wanted = {"cpu": spec.resources.cpu, "memory": spec.resources.memory}
    limits: JsonObj = dict(wanted)
    if spec.resources.gpu > 0:
        limits[GPU_RESOURCE] = str(spec.resources.gpu)
    return {"requests": dict(wanted), "limits": limits}


def _checkpoint_volume(spec: ScheduleSearchSpec) -> JsonObj:
    checkpoints = spec.checkpoints
    if checkpoints.persistent_volume_claim is not None:
        claim = {"claimName": checkpoints.persistent_volume_claim}
        return {"name": CHECKPOINT_VOLUME, "persistentVolumeClaim": claim}
    empty: JsonObj = {}
    if checkpoints.empty_dir is not None and checkpoints.empty_dir.size_limit is not None:
        empty["sizeLimit"] = checkpoints.empty_dir.size_limit
    return {"name": CHECKPOINT_VOLUME, "emptyDir": empty}


def _scheduling(spec: ScheduleSearchSpec) -> JsonObj:
    out: JsonObj = {}
    scheduling = spec.scheduling
    if scheduling is None:
        return out
    if scheduling.node_selector:
        out["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling.tolerations:
        out["tolerations"] = [t.to_wire() for t in scheduling.tolerations]
    if scheduling.service_account_name:
        out["serviceAccountName"] = scheduling.service_account_name
    return out


def replica_service(ref: SearchRef, role: str) -> JsonObj:
    """Headless Service over the replicas: gives rank 0 a DNS name before it is Ready."""
    name = names.replica_service(ref.name, role)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ref.metadata(name, **{names.LABEL_ROLE: role}),
        "spec": {
            "clusterIP": "None",
            # Replicas rendezvous while starting, before any readiness could be reported.
            "publishNotReadyAddresses": True,
            "selector": {names.LABEL_SEARCH: ref.name, names.LABEL_ROLE: role},
            "ports": [{"name": "rendezvous", "port": master_port(ref)}],
        },
    }


def token_secret(ref: SearchRef, token: str) -> JsonObj:
    """The Secret whose token the search's pods present on the report channel."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": ref.metadata(names.token_secret(ref.name)),
        "type": "Opaque",
        "stringData": {channel.TOKEN_KEY: token},
    }


def state_configmap(ref: SearchRef, state: state_mod.SearchState) -> JsonObj:
    data, binary = state.to_configmap()
    obj: JsonObj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": ref.metadata(names.state_configmap(ref.name)),
        "data": data,
    }
    if binary:
        obj["binaryData"] = binary
    return obj
