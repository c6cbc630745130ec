"""operator/rbac is the controller's least privilege; the Helm chart must grant exactly the same."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "operator" / "rbac"
TEMPLATE = ROOT / "charts" / "schedsearch" / "templates" / "_rbac-rules.tpl"


def objects(name: str) -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((RBAC / name).read_text())
    return {doc["kind"]: doc for doc in docs if doc}


def chart_rules(define: str) -> list[dict[str, Any]]:
    text = TEMPLATE.read_text()
    match = re.search(
        r'\{\{-? define "' + re.escape(define) + r'" -?\}\}(.*?)\{\{-? end -?\}\}', text, re.S
    )
    assert match, f"{define} is not defined in {TEMPLATE}"
    return list(yaml.safe_load(match.group(1)))


def test_cluster_role_equals_the_charts_rules() -> None:
    role = objects("cluster-wide.yaml")["ClusterRole"]
    assert role["rules"] == chart_rules("schedsearch.rbacRules")


def test_namespaced_role_is_the_cluster_role() -> None:
    role = objects("namespaced.yaml")["Role"]
    assert role["rules"] == chart_rules("schedsearch.rbacRules")
    assert role["rules"] == objects("cluster-wide.yaml")["ClusterRole"]["rules"]


def test_leader_election_role_equals_the_charts_rules() -> None:
    role = objects("leader-election.yaml")["Role"]
    assert role["rules"] == chart_rules("schedsearch.leaderElectionRules")
    assert role["metadata"]["namespace"] == "schedsearch-system"  # the controller's own only
    binding = objects("leader-election.yaml")["RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_least_privilege() -> None:
    rules = objects("cluster-wide.yaml")["ClusterRole"]["rules"]
    verbs = {(r["apiGroups"][0], res): set(r["verbs"]) for r in rules for res in r["resources"]}
    assert "*" not in {v for vs in verbs.values() for v in vs}
    # Secrets are read one by one (the search's own token), never listed or watched.
    assert verbs[("", "secrets")] == {"get", "create"}
    assert ("", "nodes") not in verbs and ("", "namespaces") not in verbs
    # The watches read the searches' own kinds only, never the CRDs themselves.
    assert not [group for group, _ in verbs if group == "apiextensions.k8s.io"]
    bindings = objects("cluster-wide.yaml")["ClusterRoleBinding"]
    assert (
        bindings["roleRef"]["name"]
        == objects("cluster-wide.yaml")["ClusterRole"]["metadata"]["name"]
    )
