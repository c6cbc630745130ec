"""Shared pytest configuration: the test cluster's fixtures (k8s_cluster, kubelet, namespace)."""

pytest_plugins = ["tests.cluster.fixtures"]
