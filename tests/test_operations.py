"""What operators see: Prometheus metrics, one JSON log line per call, and plaintext health for probes.

Real servers: a sandbox (the released-cell auditor on, its ledgers in a directory of the module's own) and a
broker, each with a metrics port and a plaintext probe port on loopback; queries through the SDK.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import urllib.request
import uuid

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from broker.client.sdk import BrokerClient
from broker.dev.keys import sandbox_settings
from broker.server import start_broker
from dsbroker.errors import ConfigError, DsbrokerError
from dsbroker.observability.call_facts import CallFacts
from dsbroker.observability.readiness import NOT_SERVING, SERVING, Dependency, Readiness
from dsbroker.observability.request_log import REQUEST_LOGGER, JsonFormatter
from sandbox.demo.data import DEMO_DATASETS
from sandbox.server import start_sandbox
from sandbox.settings import SandboxSettings
from tests.conftest import (GRANT, XUANWU, Clock, broker_settings_for, client_tls, dev_keys, policies_with,
                            token_for)

OPERATIONS = {"metrics_listen": "127.0.0.1:0", "health_listen": "127.0.0.1:0"}
RELEASED_SQL = ("SELECT street_code, industry_code, COUNT(DISTINCT taxpayer_id) AS n, SUM(vat_paid) AS vat "
                "FROM tax.declarations GROUP BY street_code, industry_code")
REFUSED_SQL = "SELECT taxpayer_id, vat_paid FROM tax.declarations WHERE taxpayer_id = '91320102MA1XYZ0001'"


@pytest.fixture(scope="module")
def observed(demo_db, tmp_path_factory):
    """A sandbox and a broker with their metrics and probe ports, for this module alone."""
    state = tmp_path_factory.mktemp("operations")
    # A test rig: brokers of this module serve variants of the shipped grant under its version (a quota), which an
    # owner's sandbox refuses (one body per version).
    sandbox = start_sandbox(SandboxSettings(listen="127.0.0.1:0", data=str(demo_db), datasets=DEMO_DATASETS,
                                            state_dir=str(state / "sandbox"), one_body_per_version=False,
                                            **OPERATIONS, **sandbox_settings(dev_keys())))
    try:
        broker = start_broker(broker_settings_for(sandbox.port, state / "access-log.sqlite", **OPERATIONS))
    except BaseException:
        sandbox.stop()
        raise
    yield sandbox, broker
    broker.stop()
    sandbox.stop()


@pytest.fixture
def observed_client(observed):
    with BrokerClient(f"127.0.0.1:{observed[1].port}", token=token_for(), tls=client_tls()) as c:
        yield c


@pytest.fixture
def request_lines():
    """The request log's records as the JSON lines its formatter writes, captured beside its own handler."""
    lines: list[dict] = []
    formatter = JsonFormatter()

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(formatter.format(record)))

    capture = Capture()
    logger = logging.getLogger(REQUEST_LOGGER)
    logger.addHandler(capture)
    yield lines
    logger.removeHandler(capture)


def scrape(running) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{running.endpoints.metrics_port}/metrics", timeout=30) as reply:
        assert reply.status == 200
        return reply.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape as (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def refused(client, grant: str, sql: str) -> DsbrokerError:
    with pytest.raises(DsbrokerError) as caught:
        client.query(grant, sql)
    return caught.value


def test_metrics_count_queries_stages_and_withheld_cells_and_never_show_sql_ids_or_values(observed, observed_client,
                                                                                          direct):
    sandbox, broker = observed
    result = observed_client.query(GRANT, RELEASED_SQL)
    guard_refusal = refused(observed_client, GRANT, REFUSED_SQL)
    unknown_grant = refused(observed_client, "no-such-grant-2026", "SELECT COUNT(*) FROM tax.declarations")
    assert result.withheld, "the demo data should have cells under the threshold"

    broker_text, sandbox_text = scrape(broker), scrape(sandbox)
    found = samples(broker_text)
    run_query = "/broker.v1.QueryService/RunQuery"
    assert value(found, "dsbroker_broker_queries_total", decision="released", reason="") >= 1
    assert value(found, "dsbroker_broker_queries_total", decision="denied", reason=guard_refusal.reason) >= 1
    assert value(found, "dsbroker_broker_queries_total", decision="denied", reason=unknown_grant.reason) >= 1
    assert value(found, "dsbroker_broker_rpcs_total", method=run_query, code="OK") >= 1
    assert value(found, "dsbroker_broker_rpcs_total", method=run_query, code=guard_refusal.code_name) >= 1
    assert value(found, "dsbroker_broker_rpc_duration_seconds_count", method=run_query) >= 3
    for stage in ("guard", "decision_record", "sandbox_call", "result_record", "access_log_commit"):
        assert value(found, "dsbroker_broker_stage_duration_seconds_count", stage=stage) >= 1, stage
    assert value(found, "dsbroker_broker_access_log_batch_records_count") >= 3  # a DECISION and a RESULT, at least
    assert value(found, "dsbroker_broker_access_log_batch_records_sum") >= \
        value(found, "dsbroker_broker_access_log_batch_records_count")

    found = samples(sandbox_text)
    assert value(found, "dsbroker_sandbox_queries_total", decision="released", reason="") >= 1
    assert value(found, "dsbroker_sandbox_rpcs_total", method="/sandbox.v1.SandboxService/ExecutePlan",
                 code="OK") >= 1
    for stage in ("recheck", "engine", "disclosure", "auditor"):
        assert value(found, "dsbroker_sandbox_stage_duration_seconds_count", stage=stage) >= 1, stage
    withheld = {rule: value(found, "dsbroker_sandbox_cells_withheld_total", rule=rule)
                for rule in ("min_entities", "dominance", "secondary", "audit")}
    assert withheld["min_entities"] >= 1 and sum(withheld.values()) >= len(result.withheld)

    # Labels are bounded names: no SQL, no grant, no department, district, subject or taxpayer, no value.
    taxpayers = [row[0] for row in direct.execute("SELECT taxpayer_id FROM tax.declarations LIMIT 20").fetchall()]
    released = {str(cell) for row in result.rows for cell in row if isinstance(cell, int) and cell >= 10_000}
    assert released, "the query should release sums large enough to tell from a count"
    for text in (broker_text, sandbox_text):
        for secret in ("SELECT", "tax.declarations", "vat_paid", GRANT, "no-such-grant", "xuanwu", XUANWU,
                       "analyst", "91320102MA1XYZ0001", *taxpayers, *released):
            assert secret not in text, secret


def test_a_refusal_for_a_spent_quota_is_counted_as_exhausted(observed, tmp_path):
    sandbox, _ = observed
    policies = policies_with(tmp_path, "max_groups: 5000}", "max_groups: 5000, queries_total: 1}")
    broker = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", policies=policies,
                                              metrics_listen="127.0.0.1:0"))
    try:
        with BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(), tls=client_tls()) as client:
            client.query(GRANT, "SELECT COUNT(*) AS n FROM tax.declarations")
            error = refused(client, GRANT, "SELECT COUNT(*) AS n FROM tax.declarations")
        assert error.reason == "QUOTA_EXCEEDED"
        found = samples(scrape(broker))
    finally:
        broker.stop()
    assert value(found, "dsbroker_broker_exhausted_refusals_total", reason="QUOTA_EXCEEDED") == 1
    assert value(found, "dsbroker_broker_queries_total", decision="denied", reason="QUOTA_EXCEEDED") == 1
    assert value(found, "dsbroker_broker_queries_total", decision="released", reason="") == 1


def test_a_reason_the_registry_does_not_declare_is_counted_as_unregistered():
    from dsbroker.observability.metrics import ServerMetrics

    metrics = ServerMetrics("broker")
    metrics.rpc("/broker.v1.QueryService/RunQuery", "RESOURCE_EXHAUSTED", 0.001, "A_REASON_NOBODY_DECLARED")
    metrics.query("denied", "SOMETHING; DROP TABLE")
    found = samples(metrics_text(metrics))
    assert value(found, "dsbroker_broker_exhausted_refusals_total", reason="UNREGISTERED") == 1
    assert value(found, "dsbroker_broker_queries_total", decision="denied", reason="UNREGISTERED") == 1
    assert "DROP TABLE" not in metrics_text(metrics) and "NOBODY" not in metrics_text(metrics)


def metrics_text(metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def test_each_server_counts_in_a_registry_of_its_own(observed, observed_client):
    sandbox, broker = observed
    observed_client.query(GRANT, "SELECT COUNT(*) AS n FROM tax.declarations")
    assert "dsbroker_sandbox_" not in scrape(broker) and "dsbroker_broker_" not in scrape(sandbox)
    assert broker.metrics.registry is not sandbox.metrics.registry


def check(port: int, service: str = ""):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=30)


def test_health_answers_in_plaintext_without_a_certificate_on_the_probe_port(observed):
    sandbox, broker = observed
    for running, service in ((broker, "broker.v1.QueryService"), (sandbox, "sandbox.v1.SandboxService")):
        port = running.endpoints.health_port
        assert port and port != running.port
        assert check(port).status == SERVING
        assert check(port, service).status == SERVING
        with pytest.raises(grpc.RpcError) as caught:
            check(port, "no.such.Service")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        # The probe port serves health alone: nothing else answers there without TLS.
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as caught:
                channel.unary_unary("/broker.v1.QueryService/RunQuery")(b"", timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_broker_reports_not_serving_when_its_access_log_cannot_be_written(observed, tmp_path):
    sandbox, _ = observed
    (tmp_path / "log").mkdir()
    broker = start_broker(broker_settings_for(sandbox.port, tmp_path / "log" / "access-log.sqlite",
                                              store=str(tmp_path / "state.sqlite"), health_listen="127.0.0.1:0"))
    try:
        with BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(), tls=client_tls()) as client:
            client.query(GRANT, "SELECT COUNT(*) AS n FROM tax.declarations")
            assert check(broker.endpoints.health_port, "broker.v1.QueryService").status == SERVING
            access_log = next(stop.__self__ for stop in broker.on_stop if stop.__name__ == "finish")
            # The log's database goes away under the broker: its directory is gone, a file in its place.
            access_log.store.close()
            (tmp_path / "log").rename(tmp_path / "gone")
            (tmp_path / "log").write_text("")
            error = refused(client, GRANT, "SELECT COUNT(*) AS n FROM tax.declarations")
        assert error.reason == "ACCESS_LOG_UNAVAILABLE"
        assert check(broker.endpoints.health_port).status == NOT_SERVING
        assert check(broker.endpoints.health_port, "broker.v1.QueryService").status == NOT_SERVING
        assert "access_log" in broker.readiness.failing
    finally:
        broker.stop()


def test_plaintext_health_off_loopback_is_refused_before_the_server_starts(observed, tmp_path):
    sandbox, _ = observed
    with pytest.raises(ConfigError, match="health_listen"):
        start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", health_listen="0.0.0.0:0"))
    with pytest.raises(ConfigError, match="metrics_listen"):
        start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", metrics_listen="no-port"))


def test_readiness_fails_on_a_blaming_reason_recovers_on_success_and_rechecks_at_most_every_few_seconds():
    servicer = health.HealthServicer()
    clock = Clock(100.0)
    answers = []

    def recheck() -> bool:
        answers.append(clock.now)
        return len(answers) > 1  # the first recheck still fails, the second finds the engine back

    readiness = Readiness(servicer, ["svc"], [Dependency("engine", frozenset({"ENGINE_UNREACHABLE"}),
                                                         frozenset({"/svc/Run"}), recheck=recheck)], clock=clock)

    def status(service: str = "svc"):
        return servicer.Check(health_pb2.HealthCheckRequest(service=service), None).status

    readiness.judge(CallFacts(method="/svc/Run", reason="ENGINE_UNREACHABLE"), "UNAVAILABLE")
    assert status() == status("") == NOT_SERVING
    readiness.recheck()
    assert answers == []  # just failed: not tried again yet
    clock.now += 10
    readiness.recheck()
    assert answers == [110.0] and status() == NOT_SERVING
    clock.now += 1
    readiness.recheck()
    assert answers == [110.0]  # within the interval
    clock.now += 10
    readiness.recheck()
    assert answers == [110.0, 121.0] and status() == status("") == SERVING
    readiness.judge(CallFacts(method="/svc/Run", reason="ENGINE_UNREACHABLE"), "UNAVAILABLE")
    readiness.judge(CallFacts(method="/svc/Other"), "OK")
    assert status() == NOT_SERVING  # a call that does not need the engine says nothing about it
    readiness.judge(CallFacts(method="/svc/Run"), "OK")
    assert status() == SERVING and readiness.failing == {}


def test_one_json_line_per_call_with_the_request_id_the_broker_and_the_sandbox_share(observed, observed_client,
                                                                                     request_lines):
    request_id = f"ops-{uuid.uuid4().hex}"
    observed_client.query(GRANT, RELEASED_SQL, request_id=request_id)
    error = refused(observed_client, GRANT, REFUSED_SQL)
    check(observed[1].endpoints.health_port)

    mine = [line for line in request_lines if line["request_id"] == request_id]
    assert {(line["server"], line["method"]) for line in mine} == {
        ("broker", "/broker.v1.QueryService/RunQuery"), ("sandbox", "/sandbox.v1.SandboxService/ExecutePlan")}
    for line in mine:
        assert line["caller"] == "analyst" and line["department"] == "xuanwu-fgw" and line["grant"] == GRANT
        assert line["decision"] == "released" and line["reason"] == "" and line["code"] == "OK"
        assert line["duration_ms"] > 0 and line["logger"] == REQUEST_LOGGER and line["time"].endswith("+00:00")
    broker_line = next(line for line in mine if line["server"] == "broker")
    sandbox_line = next(line for line in mine if line["server"] == "sandbox")
    assert sandbox_line["duration_ms"] <= broker_line["duration_ms"]

    denial = [line for line in request_lines if line["reason"] == error.reason]
    assert len(denial) == 1 and denial[0]["server"] == "broker" and denial[0]["decision"] == "denied"
    assert denial[0]["code"] == error.code_name and denial[0]["request_id"]
    # No SQL and no value in any line, and health probes write none.
    assert not [line for line in request_lines if "Health" in line["method"]]
    text = "\n".join(json.dumps(line) for line in request_lines)
    assert "SELECT" not in text and "91320102MA1XYZ0001" not in text and "vat_paid" not in text

    # The lines reach stderr through a queue, off the calling thread, and not a second time through the root.
    logger = logging.getLogger(REQUEST_LOGGER)
    assert not logger.propagate
    assert any(isinstance(handler, logging.handlers.QueueHandler) for handler in logger.handlers)
