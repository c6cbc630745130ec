"""The Helm chart's values, as one typed model that generates both values.yaml and its schema.

The chart (charts/schedsearch) never hand-keeps either file: the defaults and their comments in
values.yaml come from the fields' defaults and descriptions here, and values.schema.json is this
model's JSON schema. Every object refuses unknown keys (additionalProperties: false), so a typo in
`helm install --set` fails at install time with the key's path instead of being silently ignored.
Maps of labels/annotations and the Kubernetes affinity terms are the only open shapes: their
keys are the user's, and affinity is validated by the API server.

    python -m schedsearch.chart_values --out charts/schedsearch/values.schema.json \
        --values charts/schedsearch/values.yaml          # regenerate
    python -m schedsearch.chart_values --check ...       # exit 1 if either file has drifted
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from schedsearch.api.fields import DNS1123_LABEL_PATTERN

Quantity = str | int
Port = Annotated[int, Field(ge=1, le=65535)]
Namespace = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS1123_LABEL_PATTERN)]
DURATION_PATTERN = r"^[0-9]+(ms|s|m|h)$"


class Values(BaseModel):
    """Base of every values object: camelCase keys, unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Image(Values):
    """The one image that runs the controller and the trainer pods."""

    repository: str = Field(
        default="schedsearch/schedsearch", min_length=1, description="Image repository."
    )
    tag: str = Field(default="", description="Image tag; empty means the chart's appVersion.")
    digest: str = Field(
        default="",
        pattern=r"^(sha256:[0-9a-f]{64})?$",
        description="Image digest (sha256:...); when set it is used instead of the tag.",
    )
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent",
        description="Pull policy of the controller and helm-test pods.",
    )


class LocalObjectReference(Values):
    """A reference to a Secret in the release namespace."""

    name: str = Field(..., min_length=1, description="Name of the image pull Secret.")


class EnvVar(Values):
    """A plain environment variable."""

    name: str = Field(..., min_length=1, description="Variable name.")
    value: str = Field(default="", description="Variable value.")


class ResourceRequirements(Values):
    """Compute resources of a container (Kubernetes quantities, e.g. 100m, 256Mi)."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Resources the scheduler reserves."
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="Resources the container may not exceed."
    )


class Toleration(Values):
    """A Kubernetes toleration."""

    key: str = Field(
        default="", description="Taint key; empty with operator Exists matches every taint."
    )
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal", description="How the key is matched."
    )
    value: str = Field(default="", description="Taint value (operator Equal).")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        default="", description="Taint effect to tolerate; empty means all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="How long a NoExecute taint is tolerated."
    )


class Affinity(Values):
    """Kubernetes affinity; the terms inside are passed through and checked by the API server."""

    node_affinity: dict[str, Any] | None = Field(default=None, description="Node affinity terms.")
    pod_affinity: dict[str, Any] | None = Field(default=None, description="Pod affinity terms.")
    pod_anti_affinity: dict[str, Any] | None = Field(
        default=None, description="Pod anti-affinity terms."
    )


class Probe(Values):
    """Timing of an HTTP probe on the controller's health endpoint."""

    enabled: bool = Field(default=True, description="Whether the probe is set on the container.")
    initial_delay_seconds: int = Field(
        default=5, ge=0, description="Seconds after start before the first probe."
    )
    period_seconds: int = Field(default=10, ge=1, description="Seconds between probes.")
    timeout_seconds: int = Field(default=5, ge=1, description="Seconds before a probe times out.")
    failure_threshold: int = Field(
        default=3, ge=1, description="Consecutive failures before the probe counts as failed."
    )


class PodDisruptionBudget(Values):
    """How many controller replicas evictions must leave running."""

    enabled: bool = Field(default=True, description="Create it (only when replicas > 1).")
    min_available: int = Field(
        default=1, ge=1, description="Replicas that voluntary evictions must leave running."
    )


class Controller(Values):
    """The operator's Deployment."""

    replicas: int = Field(
        default=1,
        ge=0,
        le=10,
        description=(
            "Controller replicas. One acts (it holds a Lease); the others keep their caches warm "
            "and take over when the Lease is not renewed for 15 s. 2 survive the loss of a node. "
            "0 installs everything but keeps the controller stopped, e.g. to run one outside "
            "the cluster with the chart's ServiceAccount while debugging."
        ),
    )
    shard_selector: str = Field(
        default="",
        description=(
            "Label selector of the searches this release's controller runs (e.g. `shard=a`, "
            "`shard in (a,b)`); empty: all of them. On a very large cluster, several releases "
            "(each in its own namespace, all but one with crds.enabled=false) with disjoint "
            "selectors share the searches; a search that matches no release's selector is run "
            "by none."
        ),
    )
    pod_disruption_budget: PodDisruptionBudget = Field(
        default_factory=lambda: PodDisruptionBudget(),
        description=(
            "A PodDisruptionBudget, created when replicas > 1: voluntary evictions (node "
            "drains) leave at least minAvailable controllers running."
        ),
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the controller."
    )
    health_port: Port = Field(
        default=8080,
        description="Port of the controller's health endpoint (/healthz), used by the probes.",
    )
    extra_args: list[str] = Field(
        default_factory=list, description="Extra command-line flags of the controller."
    )
    extra_env: list[EnvVar] = Field(
        default_factory=list, description="Extra environment variables of the controller."
    )
    resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(
            requests={"cpu": "100m", "memory": "256Mi"}, limits={"memory": "1Gi"}
        ),
        description="Compute resources of the controller container.",
    )
    liveness_probe: Probe = Field(
        default_factory=lambda: Probe(initial_delay_seconds=15, period_seconds=20),
        description="Liveness probe: the kubelet restarts the controller when it fails.",
    )
    readiness_probe: Probe = Field(
        default_factory=Probe,
        description="Readiness probe: the Service sends traffic only to a ready controller.",
    )
    pod_labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels of the controller pod."
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Extra annotations of the controller pod."
    )
    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"kubernetes.io/os": "linux"},
        description="Node labels the controller pod must match.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the controller pod tolerates."
    )
    affinity: Affinity = Field(
        default_factory=Affinity, description="Affinity of the controller pod."
    )
    priority_class_name: str = Field(default="", description="PriorityClass of the controller pod.")


class ServiceAccount(Values):
    """The identity the controller runs as."""

    create: bool = Field(default=True, description="Create the ServiceAccount.")
    name: str = Field(
        default="", description="Name of the ServiceAccount; empty means the release's full name."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations of the ServiceAccount."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels.")
    automount_token: bool = Field(
        default=True,
        description="Mount the ServiceAccount token (the controller needs it to talk to the API).",
    )


class Rbac(Values):
    """What the controller may do, cluster-wide or in a list of namespaces."""

    create: bool = Field(
        default=True, description="Create the Roles/ClusterRoles and their bindings."
    )
    namespaces: list[Namespace] = Field(
        default_factory=list,
        description=(
            "Namespaces the controller watches (namespace names: lowercase letters, digits and "
            "'-'). Empty: every namespace (ClusterRole and ClusterRoleBinding). Non-empty: a "
            "Role and RoleBinding in each listed namespace only, and the controller is told to "
            "watch exactly these."
        ),
    )


class Service(Values):
    """The Service in front of the controller: metrics and the trainers' report channel."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations of the Service."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels.")


class ScrapeConfig(Values):
    """A Prometheus Operator scrape object (ServiceMonitor or PodMonitor)."""

    enabled: bool = Field(
        default=False,
        description="Create the object; needs the monitoring.coreos.com CRDs in the cluster.",
    )
    interval: str = Field(default="30s", pattern=DURATION_PATTERN, description="Scrape interval.")
    scrape_timeout: str = Field(
        default="10s", pattern=DURATION_PATTERN, description="Scrape timeout."
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra labels, e.g. the one your Prometheus selects monitors by.",
    )
    honor_labels: bool = Field(
        default=True,
        description=(
            "Keep the scraped series' own labels when they clash with the target's: their "
            "`namespace` is the search's namespace, which the dashboard filters on (false "
            "renames it exported_namespace and leaves the dashboard's namespace and per-member "
            "panels empty)."
        ),
    )


class Metrics(Values):
    """The controller's Prometheus endpoint (/metrics)."""

    enabled: bool = Field(default=True, description="Serve controller metrics.")
    port: Port = Field(default=9090, description="Port of the controller's /metrics endpoint.")
    service_monitor: ScrapeConfig = Field(
        default_factory=ScrapeConfig, description="A ServiceMonitor for the controller's metrics."
    )


class TrainerMetrics(Values):
    """Per-member metrics (step, losses, LR, steps/s) served by each trainer pod."""

    enabled: bool = Field(default=False, description="Trainer pods serve /metrics.")
    port: Port = Field(default=9400, description="Port of the trainer pods' /metrics endpoint.")
    pod_monitor: ScrapeConfig = Field(
        default_factory=ScrapeConfig, description="A PodMonitor for the trainer pods' metrics."
    )


class Trainers(Values):
    """The training pods the controller creates."""

    metrics: TrainerMetrics = Field(
        default_factory=TrainerMetrics, description="Prometheus metrics of the trainer pods."
    )


class ReportChannel(Values):
    """The HTTP endpoint trainer pods report progress and events to."""

    port: Port = Field(default=8081, description="Port of the report channel.")


class Dashboard(Values):
    """A Grafana dashboard in a ConfigMap, for Grafana's dashboard sidecar to pick up."""

    enabled: bool = Field(default=True, description="Create the dashboard ConfigMap.")
    labels: dict[str, str] = Field(
        default_factory=lambda: {"grafana_dashboard": "1"},
        description="Labels the Grafana sidecar selects dashboard ConfigMaps by.",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations, e.g. the sidecar's target folder (grafana_folder).",
    )


class Crds(Values):
    """The ScheduleSearch CustomResourceDefinitions."""

    enabled: bool = Field(
        default=True,
        description="Install the CRDs with the release (turn off if managed elsewhere).",
    )
    keep: bool = Field(
        default=True,
        description=(
            "Keep the CRDs on `helm uninstall` (helm.sh/resource-policy: keep): deleting a CRD "
            "deletes every ScheduleSearch and its results."
        ),
    )


class ChartValues(Values):
    """Every value of the schedsearch chart."""

    global_: dict[str, Any] = Field(
        default_factory=dict,
        alias="global",
        description="Values shared with a parent chart; this chart reads none of them.",
    )
    name_override: str = Field(default="", description="Replaces the chart name in resource names.")
    fullname_override: str = Field(
        default="", description="Replaces the release-and-chart full name."
    )
    crds: Crds = Field(
        default_factory=Crds,
        description="The ScheduleSearch and LRSchedule CustomResourceDefinitions.",
    )
    image: Image = Field(
        default_factory=Image,
        description="The one image that runs the controller and the trainer pods.",
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list, description="Secrets used to pull the image, e.g. [{name: regcred}]."
    )
    controller: Controller = Field(
        default_factory=Controller, description="The controller (the operator's Deployment)."
    )
    service_account: ServiceAccount = Field(
        default_factory=ServiceAccount, description="The controller's ServiceAccount."
    )
    rbac: Rbac = Field(
        default_factory=Rbac,
        description="What the controller may do: everywhere, or only in the namespaces listed.",
    )
    service: Service = Field(
        default_factory=Service,
        description="The Service in front of the controller (metrics, report channel, health).",
    )
    metrics: Metrics = Field(
        default_factory=Metrics, description="The controller's Prometheus metrics."
    )
    report_channel: ReportChannel = Field(
        default_factory=ReportChannel,
        description="The HTTP endpoint trainer pods report progress and events to.",
    )
    trainers: Trainers = Field(
        default_factory=Trainers, description="The training pods the controller creates."
    )
    dashboard: Dashboard = Field(
        default_factory=Dashboard,
        description="A Grafana dashboard ConfigMap for Grafana's dashboard sidecar.",
    )


def json_schema() -> dict[str, Any]:
    """The values.schema.json document: the model's schema with Helm-friendly metadata."""
    # Draft-07 (Helm validates with it since v3; newer drafts are not understood by every Helm
    # release users run), so shared definitions live under "definitions", not "$defs".
    schema = ChartValues.model_json_schema(
        by_alias=True, mode="validation", ref_template="#/definitions/{model}"
    )
    schema = _strip_titles(schema)
    definitions = schema.pop("$defs", {})
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        **schema,
        "definitions": definitions,
    }


def _strip_titles(node: Any) -> Any:
    # Titles are the Python class/field names: noise for chart users, and they churn on renames.
    if isinstance(node, dict):
        return {
            k: _strip_titles(v)
            for k, v in node.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def render_schema() -> str:
    """values.schema.json as text (stable key order, trailing newline)."""
    return json.dumps(json_schema(), indent=2) + "\n"


def render_values() -> str:
    """values.yaml as text: every default preceded by its description as a comment."""
    header = (
        "# Values of the schedsearch chart. GENERATED from schedsearch/chart_values.py by\n"
        "#   python -m schedsearch.chart_values --out charts/schedsearch/values.schema.json "
        "--values charts/schedsearch/values.yaml\n"
        "# Edit the model there, not this file; values.schema.json refuses unknown keys.\n"
    )
    return header + "\n" + "\n".join(_model_lines(ChartValues(), indent=0)) + "\n"


def _model_lines(model: Values, *, indent: int) -> list[str]:
    lines: list[str] = []
    pad = " " * indent
    for name, field in type(model).model_fields.items():
        key = field.alias or name
        value = getattr(model, name)
        for text in textwrap.wrap(field.description or "", width=98 - indent):
            lines.append(f"{pad}# {text}")
        if isinstance(value, Values) and value.model_dump(exclude_none=True):
            lines.append(f"{pad}{key}:")
            lines.extend(_model_lines(value, indent=indent + 2))
        else:
            lines.extend(_leaf_lines(key, value, indent=indent))
        if indent == 0:
            lines.append("")
    return lines[:-1] if indent == 0 else lines


def _leaf_lines(key: str, value: Any, *, indent: int) -> list[str]:
    pad = " " * indent
    dumped = _to_plain(value)
    if isinstance(dumped, (dict, list)) and dumped:
        block = yaml.safe_dump(dumped, default_flow_style=False, sort_keys=False).rstrip("\n")
        return [f"{pad}{key}:", *(f"{pad}  {line}" for line in block.splitlines())]
    flow = yaml.safe_dump(dumped, default_flow_style=True).rstrip("\n").removesuffix("\n...")
    return [f"{pad}{key}: {flow}"]


def _to_plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_none=True)
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    return value


def _check_or_write(path: Path, text: str, *, check: bool) -> bool:
    if check:
        current = path.read_text() if path.exists() else ""
        if current != text:
            print(f"{path} is out of date: run python -m schedsearch.chart_values", file=sys.stderr)
            return False
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schedsearch.chart_values", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="values.schema.json to write")
    parser.add_argument("--values", type=Path, help="values.yaml to write as well")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    ok = _check_or_write(args.out, render_schema(), check=args.check)
    if args.values is not None:
        ok = _check_or_write(args.values, render_values(), check=args.check) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
