"""The test kubelet's stand-in for cluster DNS: Service and pod names in env values -> POD_IP."""

from __future__ import annotations

import pytest

from tests.cluster.launch import POD_IP, cluster_dns


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ring-hdet-0.ring-hdet.t-1.svc", POD_IP),
        ("a.b.ns.svc.cluster.local", POD_IP),
        ("http://schedsearch.schedsearch-system.svc:8081/v1", f"http://{POD_IP}:8081/v1"),
        ("tcp://db.ns.svc:5432", f"tcp://{POD_IP}:5432"),
        ("svc", "svc"),
        ("my.svc.example.com", "my.svc.example.com"),
        ("/var/lib/x.svc", "/var/lib/x.svc"),
        ("x.svcs", "x.svcs"),
        ("RANK=0", "RANK=0"),
    ],
)
def test_cluster_names_resolve_to_the_pod_ip(value: str, expected: str) -> None:
    assert cluster_dns(value) == expected
