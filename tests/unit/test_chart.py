"""The Helm chart: generated files in sync with their sources, a strict values schema, and what
`helm lint` / `helm template` produce in both RBAC modes (those need the helm binary that
scripts/build-k8s-tools.sh builds: skipped when absent, a failure under CI=true)."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry

from schedsearch import chart_crds, chart_values
from schedsearch.controller.metrics import ControllerMetrics
from schedsearch.trainers.metrics import PrometheusReporter
from tests.cluster import binaries

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "schedsearch"
SCHEMA = CHART / "values.schema.json"
VALUES = CHART / "values.yaml"
Manifest = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# Generated files and the values schema (no helm needed).


def test_values_schema_and_values_yaml_are_generated_from_the_model() -> None:
    assert SCHEMA.read_text() == chart_values.render_schema(), (
        "values.schema.json drifted: run python -m schedsearch.chart_values "
        "--out charts/schedsearch/values.schema.json --values charts/schedsearch/values.yaml"
    )
    assert VALUES.read_text() == chart_values.render_values(), "values.yaml drifted (same command)"


def test_values_yaml_holds_exactly_the_models_defaults() -> None:
    values = yaml.safe_load(VALUES.read_text())
    model = chart_values.ChartValues.model_validate(values)
    assert model == chart_values.ChartValues()


def schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_values_yaml_validates_against_the_schema() -> None:
    schema_validator().validate(yaml.safe_load(VALUES.read_text()))


@pytest.mark.parametrize(
    "patch",
    [
        {"replicaCount": 2},  # unknown top-level key
        {"controller": {"replicas": -1}},
        {"controller": {"resource": {}}},  # typo of "resources"
        {"metrics": {"serviceMonitor": {"intervall": "30s"}}},  # typo, two levels down
        {"controller": {"tolerations": [{"key": "gpu", "efect": "NoSchedule"}]}},
        {"image": {"pullPolicy": "Sometimes"}},  # not an allowed value
        {"metrics": {"port": 70000}},  # not a port
        {"rbac": {"namespaces": ["Bad_NS"]}},  # not a namespace name
        {"rbac": {"namespaces": [""]}},
    ],
)
def test_schema_refuses_bad_values(patch: dict[str, Any]) -> None:
    values = deep_merge(yaml.safe_load(VALUES.read_text()), patch)
    with pytest.raises(jsonschema.ValidationError):
        schema_validator().validate(values)


def test_every_fixed_shape_object_in_the_schema_is_closed() -> None:
    open_maps = []
    for path, node in walk(json.loads(SCHEMA.read_text())):
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
        elif node.get("type") == "object" and node.get("additionalProperties") is not False:
            open_maps.append(path)
    # Only maps keyed by the user (labels, annotations, selectors, resources) and pass-through
    # Kubernetes terms (affinity, `global` of a parent chart) stay open.
    allowed = re.compile(
        r"(global|labels|annotations|podLabels|podAnnotations|nodeSelector|requests|limits"
        r"|nodeAffinity|podAffinity|podAntiAffinity)(/anyOf/\d+)?$"
    )
    assert open_maps and all(allowed.search(p) for p in open_maps), open_maps


def test_every_value_in_values_yaml_has_a_comment() -> None:
    wanted = value_paths(chart_values.ChartValues)
    lines = VALUES.read_text().splitlines()
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing keys
    seen = set()
    for i, line in enumerate(lines):
        match = re.match(r"^( *)([^\s#][^:]*):", line)
        if not match or line.lstrip().startswith("- "):
            continue
        indent = len(match.group(1))
        stack = [(n, k) for n, k in stack if n < indent] + [(indent, match.group(2))]
        path = ".".join(k for _, k in stack)
        if path in wanted:
            seen.add(path)
            assert lines[i - 1].lstrip().startswith("#"), f"values.yaml:{i + 1} {path}: no comment"
    assert seen == wanted, wanted - seen


def value_paths(model: type[chart_values.Values], prefix: str = "") -> set[str]:
    """Dotted paths of every value (nested models recurse; maps and lists are one value)."""
    paths = set()
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        paths.add(path)
        annotation = info.annotation
        if (
            isinstance(annotation, type)
            and issubclass(annotation, chart_values.Values)
            and annotation is not chart_values.Affinity  # rendered as one `{}` value
        ):
            paths |= value_paths(annotation, path + ".")
    return paths


def test_notes_print_a_search_a_chart_user_can_apply() -> None:
    """NOTES.txt cannot point at the repository's examples/ (a chart user does not have it):
    it prints a spec to paste, which must be a valid ScheduleSearch."""
    from schedsearch.api import ScheduleSearch

    notes = (CHART / "templates/NOTES.txt").read_text()
    assert "examples/" not in notes
    lines = notes.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("<<'EOF'"))
    end = lines.index("EOF", start)
    assert lines[start].startswith("kubectl apply"), "the heredoc must start at column 0"
    search = ScheduleSearch.model_validate(yaml.safe_load("\n".join(lines[start + 1 : end])))
    assert search.spec.checkpoints is None or search.spec.strategy_name == "autolrs"


def test_crd_templates_match_operator_crds() -> None:
    problems = chart_crds.sync(REPO / "operator/crds", CHART / "templates/crds", check=True)
    assert not problems, problems


def test_crd_wrapping_escapes_template_braces_and_keeps_own_metadata() -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": "things.example.io",
            "labels": {"app.kubernetes.io/part-of": "x", "team": "ml"},
            "annotations": {"owner": "ml"},
        },
        "spec": {"description": "a {{ literal }} brace"},
    }
    text = chart_crds.wrap(crd, source="src/things.yaml")
    assert '{{ "{{" }} literal }}' in text
    assert "    team: ml" in text and "app.kubernetes.io/part-of: x" not in text
    assert "    owner: ml" in text and "helm.sh/resource-policy: keep" in text
    with pytest.raises(ValueError, match="CustomResourceDefinition"):
        chart_crds.wrap({**crd, "kind": "Deployment"}, source="src/x.yaml")


def test_dashboard_queries_only_series_that_exist() -> None:
    dashboard = json.loads((CHART / "files/dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = {name for e in exprs for name in re.findall(r"\b(schedsearch_\w+)", e)}
    assert used and used <= exported_series_names(), used - exported_series_names()
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("phase", "best objective", "state", "loss", "learning rate", "reconcile"):
        assert topic in titles


def exported_series_names() -> set[str]:
    return set(exposed_labels())


def exposed_labels() -> dict[str, set[str]]:
    """Every sample name the controller and the trainers expose, with its label names, from
    registries fed as a running search feeds them."""
    controller = ControllerMetrics()
    controller.observe_search(
        "n",
        "s",
        phase="Running",
        members={"Running": 1},
        best_objective=1,
        metric="val_loss",
        mode="min",
    )
    with controller.time_reconcile("n"), controller.time_report("event"):
        controller.count_exploit("n", "s")
        controller.count_member_restart("n", "s")
    trainer = PrometheusReporter(CollectorRegistry(), search="s", namespace="n")
    trainer.on_progress(0, 1, 1.0, 0.1, val_loss=1.0)
    trainer.on_progress(0, 2, 1.0, 0.1)
    trainer.on_event("exploit", "copied")
    labels: dict[str, set[str]] = {}
    for registry in (controller.registry, trainer.registry):
        for family in registry.collect():
            for sample in family.samples:
                labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


# Labels Prometheus gives every target it scrapes through a ServiceMonitor or PodMonitor. A
# series' own label of the same name survives only if the monitor honours labels; otherwise it
# is stored as exported_<name> and a query on <name> reads the target's value instead.
TARGET_LABELS = frozenset(
    {"namespace", "pod", "service", "endpoint", "job", "instance", "container"}
)
SELECTOR = re.compile(r"(?:\b(schedsearch_\w+))?\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(?:=~|!~|!=|=)\s*"([^"]*)"')
LABEL_VALUES = re.compile(r"^label_values\((.*),\s*(\w+)\)$")


def label_uses(expr: str, legend: str = "") -> list[tuple[frozenset[str], str]]:
    """Each label a dashboard query names, with the series it must be a label of: matchers on
    their selector's series, ``by (...)``, the legend and ``label_values``' label on every
    series of the query."""
    series = set(re.findall(r"\b(schedsearch_\w+)", expr))
    uses: list[tuple[frozenset[str], str]] = []
    for match in SELECTOR.finditer(expr):
        matchers = MATCHER.findall(match.group(2))
        names = {match.group(1)} if match.group(1) else set()
        names |= {n for label, value in matchers if label == "__name__" for n in value.split("|")}
        uses += [(frozenset(names), label) for label, _ in matchers if label != "__name__"]
    grouped = [g.strip() for by in re.findall(r"\bby\s*\(([^)]*)\)", expr) for g in by.split(",")]
    grouped += re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)
    found = LABEL_VALUES.match(expr)
    if found:
        grouped.append(found.group(2))
    return uses + [(frozenset(series), label) for label in grouped if label]


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((CHART / "files/dashboard.json").read_text())
    queries = [
        (t["expr"], t.get("legendFormat", ""))
        for p in dashboard["panels"]
        for t in p.get("targets", [])
    ]
    return queries + [
        (v["definition"], "") for v in dashboard["templating"]["list"] if "definition" in v
    ]


def honours_labels(series: str) -> bool:
    """Whether the chart's default monitor of ``series`` keeps the series' own labels."""
    values = chart_values.ChartValues()
    if series.startswith("schedsearch_trainer_"):
        return values.trainers.metrics.pod_monitor.honor_labels
    return values.metrics.service_monitor.honor_labels


def test_dashboard_labels_are_labels_of_the_series_as_prometheus_stores_them() -> None:
    exposed = exposed_labels()
    problems = []
    for expr, legend in dashboard_queries():
        for series, label in label_uses(expr, legend):
            assert series, f"no series for {label!r} in {expr}"
            for name in sorted(series):
                if label not in exposed.get(name, set()):
                    problems.append(f"{name} has no label {label!r} ({expr})")
                elif label in TARGET_LABELS and not honours_labels(name):
                    problems.append(f"{name}: Prometheus stores {label!r} as exported_{label}")
    assert not problems, "\n".join(problems)


def test_label_uses_reads_matchers_groupings_legends_and_label_values() -> None:
    expr = 'sum by (le, kind) (rate(schedsearch_x_bucket{namespace=~"$ns", search="a"}[5m]))'
    assert sorted(label_uses(expr, "{{kind}} {{ member }}"), key=lambda u: u[1]) == [
        (frozenset({"schedsearch_x_bucket"}), "kind"),
        (frozenset({"schedsearch_x_bucket"}), "kind"),
        (frozenset({"schedsearch_x_bucket"}), "le"),
        (frozenset({"schedsearch_x_bucket"}), "member"),
        (frozenset({"schedsearch_x_bucket"}), "namespace"),
        (frozenset({"schedsearch_x_bucket"}), "search"),
    ]
    values = 'label_values({__name__=~"schedsearch_a|schedsearch_b", namespace=~"$n"}, search)'
    assert sorted(label_uses(values), key=lambda u: u[1]) == [
        (frozenset({"schedsearch_a", "schedsearch_b"}), "namespace"),
        (frozenset({"schedsearch_a", "schedsearch_b"}), "search"),
    ]


def test_the_local_engine_and_the_cluster_fill_the_dashboards_variables() -> None:
    """A local run (``run --metrics-port``) serves only the trainer series: the namespace and
    search variables must list its searches too."""
    variables = {
        v["name"]: v["definition"]
        for v in json.loads((CHART / "files/dashboard.json").read_text())["templating"]["list"]
        if "definition" in v
    }
    for name in ("namespace", "search"):
        used = {s for uses in label_uses(variables[name]) for s in uses[0]}
        assert "schedsearch_trainer_step" in used, variables[name]


# ---------------------------------------------------------------------------------------------
# helm lint / helm template.


@pytest.fixture(scope="module")
def helm() -> Path:
    found, problem = binaries.locate()
    if problem is None or os.access(found.helm, os.X_OK):
        return found.helm
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {problem}", pytrace=False)
    pytest.skip(problem)


def pinned_kube_version() -> str:
    """The Kubernetes release tools/k8s/go.mod pins, the one the tests render for."""
    for line in (REPO / "tools/k8s/go.mod").read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "k8s.io/kubernetes" and words[1].startswith("v1."):
            return words[1]
    raise AssertionError("tools/k8s/go.mod pins no k8s.io/kubernetes release")


def helm_template(
    helm: Path, *args: str, kube_version: bool = True
) -> subprocess.CompletedProcess[str]:
    pinned = ["--kube-version", pinned_kube_version()] if kube_version else []
    return subprocess.run(
        [str(helm), "template", "rel", str(CHART), *pinned, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_helm_template_works_without_a_kube_version(helm: Path) -> None:
    """What a chart user types first: helm's own idea of the Kubernetes version must satisfy
    Chart.yaml's kubeVersion (scripts/build-k8s-tools.sh sets it as helm's release build does;
    helm's source default, v1.20, does not)."""
    out = helm_template(helm, kube_version=False)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    ("sets", "named"),
    [
        (("trainers.metrics.podMonitor.enabled=true",), "trainers.metrics.enabled=true"),
        (
            ("metrics.enabled=false", "metrics.serviceMonitor.enabled=true"),
            "metrics.enabled=true",
        ),
    ],
)
def test_a_monitor_of_metrics_that_are_off_fails_with_a_message(
    helm: Path, sets: tuple[str, ...], named: str
) -> None:
    out = helm_template(helm, *(arg for item in sets for arg in ("--set", item)))
    assert out.returncode != 0
    assert named in out.stderr, out.stderr


def render(helm: Path, *sets: str, namespace: str = "schedsearch") -> list[Manifest]:
    return list(_render(helm, sets, namespace))


@functools.cache
def _render(helm: Path, sets: tuple[str, ...], namespace: str) -> tuple[Manifest, ...]:
    # Cached: several tests read the same rendering, and each helm run costs about a second.
    args = ["--namespace", namespace]
    for item in sets:
        args += ["--set", item]
    out = helm_template(helm, *args)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def test_helm_lint_passes_in_both_rbac_modes(helm: Path) -> None:
    for extra in ([], ["--set", "rbac.namespaces={ml,research}"]):
        out = subprocess.run(
            [str(helm), "lint", "--strict", str(CHART), *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    ("setting", "named"),
    [("controller.replica=1", "replica"), ("controller.replicas=-1", "replicas")],
)
def test_helm_refuses_bad_values(helm: Path, setting: str, named: str) -> None:
    out = helm_template(helm, "--set", setting)
    assert out.returncode != 0
    assert named in out.stderr and "schema" in out.stderr.lower(), out.stderr


def test_cluster_wide_mode(helm: Path) -> None:
    manifests = render(helm)
    assert [m["metadata"]["name"] for m in of_kind(manifests, "ClusterRole")] == ["rel-schedsearch"]
    binding = of_kind(manifests, "ClusterRoleBinding")[0]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rel-schedsearch", "namespace": "schedsearch"}
    ]
    # Namespaced: only the leader election's, in the release's own namespace.
    for kind in ("Role", "RoleBinding"):
        found = [
            (m["metadata"]["namespace"], m["metadata"]["name"]) for m in of_kind(manifests, kind)
        ]
        assert found == [("schedsearch", "rel-schedsearch-leader-election")]
    assert "--all-namespaces" in controller_container(manifests)["args"]


def test_namespaced_mode(helm: Path) -> None:
    manifests = render(helm, "rbac.namespaces={ml,research}")
    assert not of_kind(manifests, "ClusterRole") and not of_kind(manifests, "ClusterRoleBinding")
    roles = {m["metadata"]["namespace"] for m in of_kind(manifests, "Role") if not lease_role(m)}
    bindings = {
        m["metadata"]["namespace"] for m in of_kind(manifests, "RoleBinding") if not lease_role(m)
    }
    assert roles == bindings == {"ml", "research"}
    args = controller_container(manifests)["args"]
    assert "--namespace=ml" in args and "--namespace=research" in args
    assert "--all-namespaces" not in args


@pytest.mark.parametrize(
    "sets",
    [(), ("rbac.namespaces={ml,research}", "trainers.metrics.enabled=true", "metrics.port=9191")],
)
def test_the_controller_accepts_the_charts_flags(helm: Path, sets: tuple[str, ...]) -> None:
    from schedsearch.controller import app  # the Kubernetes client: only when needed

    manifests = render(helm, *sets)
    options = app.parse_args(controller_container(manifests)["args"])
    service = of_kind(manifests, "Service")[0]
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert options.report_port == ports["report"] and options.health_port == ports["health"]
    assert options.metrics_port == ports["metrics"]
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    url = f"http://{name}.{namespace}.svc:{ports['report']}"
    assert options.settings.report_url == url
    assert options.settings.image == "schedsearch/schedsearch:0.1.0"
    if sets:
        assert options.namespaces == ("ml", "research") and not options.all_namespaces
        assert options.settings.trainer_metrics_port == 9400
    else:
        assert options.all_namespaces and options.settings.trainer_metrics_port is None


def lease_role(manifest: Manifest) -> bool:
    return str(manifest["metadata"]["name"]).endswith("-leader-election")


def test_replicas_elect_a_leader_and_a_disruption_budget_keeps_one_running(helm: Path) -> None:
    one = render(helm)
    args = controller_container(one)["args"]
    assert "--leader-elect" in args and "--leader-election-namespace=schedsearch" in args
    assert "--leader-election-id=rel-schedsearch" in args
    deployment = of_kind(one, "Deployment")[0]
    # A new pod comes up before an old one goes: the old leader hands the Lease over.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert not of_kind(one, "PodDisruptionBudget"), "one replica: nothing to keep running"
    (role,) = [m for m in of_kind(one, "Role") if lease_role(m)]
    assert role["metadata"]["namespace"] == "schedsearch"
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    two = render(helm, "controller.replicas=2")
    assert of_kind(two, "Deployment")[0]["spec"]["replicas"] == 2
    (budget,) = of_kind(two, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert budget["spec"]["selector"]["matchLabels"] == selector
    off = render(helm, "controller.replicas=2", "controller.podDisruptionBudget.enabled=false")
    assert not of_kind(off, "PodDisruptionBudget")


def test_a_shard_selector_reaches_the_controller(helm: Path) -> None:
    from schedsearch.controller import app  # the Kubernetes client: only when needed

    args = controller_container(render(helm))["args"]
    assert not [a for a in args if a.startswith("--shard-selector")]
    sharded = render(helm, "controller.shardSelector=shard=a")
    options = app.parse_args(controller_container(sharded)["args"])
    assert options.shard_selector == "shard=a" and options.leader_elect


def controller_container(manifests: list[Manifest]) -> Manifest:
    deployment = of_kind(manifests, "Deployment")[0]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "controller")


def test_deployment_is_locked_down(helm: Path) -> None:
    manifests = render(helm)
    pod = of_kind(manifests, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = controller_container(manifests)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert (
        container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    )
    assert container["command"] == ["python", "-m", "schedsearch.controller"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz" and ports[get["port"]] == 8080


def test_crds_are_gated_and_kept(helm: Path) -> None:
    crds = of_kind(render(helm), "CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in crds} == {
        yaml.safe_load(p.read_text())["metadata"]["name"]
        for p in (REPO / "operator/crds").glob("*.yaml")
    }
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds)
    unkept = of_kind(render(helm, "crds.keep=false"), "CustomResourceDefinition")
    assert unkept and all("annotations" not in c["metadata"] for c in unkept)
    assert not of_kind(render(helm, "crds.enabled=false"), "CustomResourceDefinition")


def test_monitors_only_when_asked(helm: Path) -> None:
    default = render(helm)
    assert not of_kind(default, "ServiceMonitor") and not of_kind(default, "PodMonitor")
    asked = render(
        helm,
        "metrics.serviceMonitor.enabled=true",
        "trainers.metrics.enabled=true",
        "trainers.metrics.podMonitor.enabled=true",
        "rbac.namespaces={ml}",
    )
    endpoint = of_kind(asked, "ServiceMonitor")[0]["spec"]["endpoints"][0]
    assert endpoint["port"] == "metrics"
    pod_monitor = of_kind(asked, "PodMonitor")[0]["spec"]
    assert pod_monitor["namespaceSelector"] == {"matchNames": ["ml"]}
    # The series' namespace label is the search's: Prometheus must keep it (the dashboard).
    assert endpoint["honorLabels"] is True
    assert pod_monitor["podMetricsEndpoints"][0]["honorLabels"] is True


def test_namespaced_objects_name_their_namespace(helm: Path) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    for m in render(helm, "rbac.namespaces={ml,research}"):
        if m["kind"] not in cluster_scoped:
            where = m["metadata"].get("namespace")
            assert where in {"schedsearch", "ml", "research"}, (m["kind"], m["metadata"])


def test_dashboard_config_map_holds_the_dashboard(helm: Path) -> None:
    config_map = next(
        m for m in of_kind(render(helm), "ConfigMap") if m["metadata"]["name"].endswith("dashboard")
    )
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "files/dashboard.json").read_text())
    assert json.loads(config_map["data"]["schedsearch.json"]) == shipped


def test_install_manifest_is_the_rendered_chart(helm: Path) -> None:
    out = subprocess.run(
        ["bash", str(REPO / "scripts/render-install-manifest.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HELM": str(helm)},
    )
    assert out.returncode == 0, out.stderr[-3000:]


# ---------------------------------------------------------------------------------------------
# helpers


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object with its path (properties by name, other keywords as-is)."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            if key == "properties":
                for name, sub in value.items():
                    yield from walk(sub, f"{path}/{name}")
            elif isinstance(value, (dict, list)):
                yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from walk(item, f"{path}/{i}")
