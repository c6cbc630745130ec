"""pytest fixtures for tests against the real test cluster (registered by tests/conftest.py).

- ``k8s_cluster`` (session): a running ``harness.Cluster``: ``.kubeconfig``, ``.api_client()``,
  ``.rest``, ``.kubectl(...)``, ``.env()``, ``.service_account_kubeconfig(ns, name)``.
- ``kubelet`` (session): the test kubelet running pods of that cluster: ``.pod_log(ns, name)``.
- ``namespace`` (function): a fresh namespace, deleted after the test.

Missing binaries skip these tests with the command that builds them, except under CI=true, where
they fail: CI must never pass by skipping the cluster.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import binaries, harness, processes, rest
from tests.cluster.kubelet import Kubelet


@pytest.fixture(scope="session")
def k8s_binaries() -> binaries.Binaries:
    found, problem = binaries.locate()
    if problem is None:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {problem}", pytrace=False)
    pytest.skip(problem)


@pytest.fixture(scope="session")
def k8s_cluster(k8s_binaries: binaries.Binaries) -> Iterator[harness.Cluster]:
    keep = os.environ.get("SCHEDSEARCH_KEEP_CLUSTER_DIR") == "1"
    cluster = harness.Cluster.start(k8s_binaries, keep_workdir=keep)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kubelet(k8s_cluster: harness.Cluster) -> Iterator[Kubelet]:
    root = Path(tempfile.mkdtemp(prefix="schedsearch-kubelet-"))
    node = Kubelet(k8s_cluster.rest, root)
    node.start()
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def namespace(k8s_cluster: harness.Cluster) -> Iterator[str]:
    """A new namespace, usable at once (its default ServiceAccount exists, so pods are admitted)."""
    name = f"t-{secrets.token_hex(4)}"
    api = k8s_cluster.rest
    api.post("/api/v1/namespaces", {"metadata": {"name": name}})
    account = f"/api/v1/namespaces/{name}/serviceaccounts/default"
    if not processes.wait_until(lambda: api.send("GET", account)[0] == 200, timeout=30):
        raise TimeoutError(f"namespace {name}: the default ServiceAccount never appeared")
    yield name
    try:
        api.delete(f"/api/v1/namespaces/{name}")
    except rest.ApiError as exc:
        if exc.status != 404:  # the test may have deleted it itself
            raise
