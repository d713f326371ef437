"""The bench's breakdown of a query's time, read from real metrics endpoints (prometheus-client's exposition)."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health

from broker.dev.stage_times import RPCS, breakdown, read_timings
from dsbroker.observability.endpoints import OperationsEndpoints
from dsbroker.observability.metrics import ServerMetrics


@pytest.fixture
def servers():
    """A broker's and a sandbox's metrics, each served on a port of its own."""
    metrics = {side: ServerMetrics(side) for side in ("broker", "sandbox")}
    endpoints = {side: OperationsEndpoints.start(metrics[side], health.HealthServicer(), metrics_listen="127.0.0.1:0",
                                                 health_listen="", what=side) for side in metrics}
    try:
        yield metrics, {side: f"127.0.0.1:{endpoint.metrics_port}" for side, endpoint in endpoints.items()}
    finally:
        for endpoint in endpoints.values():
            endpoint.close()


def _query(metrics: dict[str, ServerMetrics]) -> None:
    """What one small query observes on each side, in seconds (the auditor's audit and record are two)."""
    broker, sandbox = metrics["broker"], metrics["sandbox"]
    broker.rpc(RPCS["broker"], "OK", 0.006)
    for stage, seconds in (("guard", 0.0001), ("decision_record", 0.0006), ("sandbox_call", 0.004),
                           ("result_record", 0.0004), ("access_log_commit", 0.0003), ("access_log_commit", 0.0003)):
        broker.stage(stage, seconds)
    sandbox.rpc(RPCS["sandbox"], "OK", 0.003)
    for stage, seconds in (("recheck", 0.0003), ("engine", 0.002), ("disclosure", 0.0004), ("auditor", 0.0001),
                           ("auditor", 0.0001)):
        sandbox.stage(stage, seconds)


def test_the_breakdown_gives_each_stage_per_query_and_the_hops_between_them(servers):
    metrics, listens = servers
    _query(metrics)  # before the timed loop: not counted
    before = {side: read_timings(listen) for side, listen in listens.items()}
    for _ in range(4):
        _query(metrics)
    metrics["broker"].rpc("/broker.v1.CatalogService/ListDatasets", "OK", 1.0)  # another method: not the query's
    after = {side: read_timings(listen) for side, listen in listens.items()}
    found = breakdown(before, after, queries=4)
    assert found.queries == 4
    assert found.broker["rpc"] == pytest.approx(6.0)
    assert found.broker["decision_record"] == pytest.approx(0.6)
    assert found.broker["access_log_commit"] == pytest.approx(0.6)  # two commits a query, per query
    assert found.sandbox["auditor"] == pytest.approx(0.2)
    assert found.sandbox["rpc"] == pytest.approx(3.0)
    lines = {label.strip(): ms for label, ms in found.rows(7.0)}
    assert lines["end to end, as the caller times it"] == 7.0
    assert lines["the caller's hop (SDK, gRPC, TLS, messages)"] == pytest.approx(1.0)
    assert lines["the broker-to-sandbox hop"] == pytest.approx(1.0)
    assert lines["the rest (execution ledger, encoding)"] == pytest.approx(0.3)
    assert lines["the rest (grant, plan, interceptors, request log)"] == pytest.approx(0.9)
