"""``schedsearch run --metrics-port``: a local search's members as Prometheus series.

The local engine feeds the same reporter a trainer pod serves (``schedsearch_trainer_*`` of
trainers/metrics.py: each member's step, training and validation loss, learning rate, steps per
second, steps and events, labelled namespace/search/member), so the chart's Grafana dashboard
watches a long local search as it watches a cluster one. Nothing is served without a port.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click
from prometheus_client import CollectorRegistry, start_http_server

from schedsearch.api.spec import ScheduleSearch
from schedsearch.trainers.metrics import PrometheusReporter
from schedsearch.trainers.strategies.base import Reporter

# Every interface, as a trainer pod serves: the Prometheus that scrapes a workstation is often
# in a container or on another host.
ADDRESS = "0.0.0.0"


@contextlib.contextmanager
def serving(
    search: ScheduleSearch, port: int | None, *, address: str = ADDRESS
) -> Iterator[list[Reporter]]:
    """The reporters to add to the engine's: none without a port; with one, a Prometheus
    reporter served at ``http://address:port/metrics`` until the block ends."""
    if port is None:
        yield []
        return
    reporter = PrometheusReporter(
        CollectorRegistry(), search=search.name, namespace=search.metadata.namespace or ""
    )
    try:
        server, thread = start_http_server(port, addr=address, registry=reporter.registry)
    except OSError as err:
        raise click.ClickException(
            f"--metrics-port {port}: cannot serve metrics there ({err.strerror or err})"
        ) from None
    click.echo(f"metrics: http://{address}:{port}/metrics", err=True)
    try:
        yield [reporter]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
