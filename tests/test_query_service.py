"""The broker and the sandbox as real gRPC servers on port 0: answers, refusals, and bad input."""

from __future__ import annotations

import duckdb
import grpc
import pytest

from broker.access_log.log import AccessLog
from broker.client.sdk import BrokerClient
from dsbroker.errors import DsbrokerError
from dsbroker.guard import RULES
from broker.dev.keys import sandbox_settings
from broker.server import start_broker
from sandbox.settings import SandboxSettings
from broker.v1.query_service_pb2 import GuardStep
from sandbox.demo.data import DEMO_DATASETS, make_demo_data
from sandbox.server import start_sandbox
from tests.conftest import shared_data
from tests.conftest import GRANT, XUANWU, broker_settings_for, client_tls, dev_keys, policies_with, token_for

STREET_SQL = ("SELECT street_code, SUM(vat_paid) AS vat, COUNT(DISTINCT taxpayer_id) AS n "
              "FROM tax.declarations GROUP BY street_code ORDER BY street_code")


def refusal(client: BrokerClient, sql: str, grant: str = GRANT) -> DsbrokerError:
    with pytest.raises(DsbrokerError) as caught:
        client.query(grant, sql)
    return caught.value


def test_aggregate_query_matches_duckdb_run_directly(client, direct):
    result = client.query(GRANT, STREET_SQL)
    expected = direct.execute(
        "SELECT street_code, SUM(vat_paid), COUNT(DISTINCT taxpayer_id) FROM tax.declarations "
        f"WHERE district_code = '{XUANWU}' GROUP BY street_code HAVING COUNT(DISTINCT taxpayer_id) >= 10 "
        "ORDER BY street_code").fetchall()
    assert result.columns == ["street_code", "vat", "n"]
    assert [tuple(r) for r in result.rows] == expected and len(expected) == 7
    assert result.disclosure_rules[0]["rule"] == "min_entities" and result.disclosure_rules[0]["threshold"] == 10
    assert "district_code = '320102'" in result.rewritten_sql and result.access_record > 0


def test_a_lookup_join_runs_in_the_sandbox_and_matches_duckdb(client, direct):
    result = client.query(GRANT, "SELECT s.street_name, SUM(d.vat_paid) AS vat FROM tax.declarations d "
                                 "JOIN tax.streets s USING (street_code) GROUP BY 1 ORDER BY 1")
    expected = direct.execute(
        "SELECT s.street_name, SUM(d.vat_paid) FROM tax.declarations d JOIN tax.streets s "
        f"ON d.street_code = s.street_code WHERE d.district_code = '{XUANWU}' GROUP BY 1 "
        "HAVING COUNT(DISTINCT d.taxpayer_id) >= 10 ORDER BY 1").fetchall()
    assert [tuple(r) for r in result.rows] == expected and len(expected) == 7
    assert result.columns == ["street_name", "vat"]


def test_threshold_withholds_small_cells(client, direct):
    result = client.query(GRANT, "SELECT street_code, industry_code, COUNT(DISTINCT taxpayer_id) AS n "
                                 "FROM tax.declarations GROUP BY street_code, industry_code")
    small = direct.execute(
        "SELECT count(*) FROM (SELECT street_code, industry_code FROM tax.declarations WHERE district_code = "
        f"'{XUANWU}' GROUP BY ALL HAVING COUNT(DISTINCT taxpayer_id) < 10)").fetchone()[0]
    assert small > 0, "the demo data should have small cells"
    # The shipped grant marks small cells: their rows come back with the cells withheld (null and marked).
    withheld = [i for i, row in enumerate(result.rows) if (i, 2) in result.withheld]
    assert len(withheld) == small and all(result.rows[i][2] is None for i in withheld)
    assert all(row[2] >= 10 for i, row in enumerate(result.rows) if i not in withheld)
    rule = next(r for r in result.disclosure_rules if r["rule"] == "min_entities")
    assert rule["cells_withheld"] == small and "withheld and marked" in rule["description"]


def test_a_token_of_the_grantee_department_for_another_district_is_refused(broker):
    # The grant names Xuanwu: a token of xuanwu-fgw that claims Qinhuai used to read Qinhuai's rows.
    log = AccessLog(broker.access_log_path)
    before = log.store.size()
    with BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(district="320104"),
                      tls=client_tls()) as qinhuai_caller:
        for call in (qinhuai_caller.query, qinhuai_caller.explain):
            with pytest.raises(DsbrokerError) as caught:
                call(GRANT, "SELECT SUM(vat_paid) AS vat FROM tax.declarations")
            error = caught.value
            assert (error.code, error.reason, error.metadata["grant"]) == (
                grpc.StatusCode.PERMISSION_DENIED, "GRANT_DISTRICT_MISMATCH", GRANT)
    assert [(r.event, r.reason) for r in log.records(after=before)] == [
        ("query.decision", "GRANT_DISTRICT_MISMATCH"), ("query.explain", "GRANT_DISTRICT_MISMATCH")]
    log.close()


def test_the_row_filter_binds_the_grantees_district(sandbox, tmp_path, direct):
    # The same department granted Qinhuai instead: its Qinhuai token reads Qinhuai's rows, and only those.
    policies = policies_with(tmp_path, 'district: "320102"', 'district: "320104"')
    running = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", policies=policies))
    try:
        with BrokerClient(f"127.0.0.1:{running.port}", token=token_for(district="320104"),
                          tls=client_tls()) as qinhuai_caller:
            result = qinhuai_caller.query(GRANT, "SELECT SUM(vat_paid) AS vat FROM tax.declarations")
    finally:
        running.stop()
    expected = direct.execute("SELECT SUM(vat_paid) FROM tax.declarations WHERE district_code = '320104'").fetchone()
    assert result.rows == [[expected[0]]]


def test_a_grant_without_a_grantee_district_serves_no_query(sandbox, tmp_path):
    policies = policies_with(tmp_path, ', district: "320102"}', "}")
    running = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", policies=policies))
    try:
        with BrokerClient(f"127.0.0.1:{running.port}", token=token_for(), tls=client_tls()) as caller:
            with pytest.raises(DsbrokerError) as caught:
                caller.query(GRANT, "SELECT SUM(vat_paid) AS vat FROM tax.declarations")
    finally:
        running.stop()
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "GRANT_DISTRICT_MISSING")


@pytest.mark.parametrize("sql, code, reason", [
    ("SELECT FROM WHERE", grpc.StatusCode.INVALID_ARGUMENT, "SYNTAX_ERROR"),
    ("SELECT COUNT(*) FROM tax.declarations; SELECT 1", grpc.StatusCode.INVALID_ARGUMENT, "MULTIPLE_STATEMENTS"),
    ("DELETE FROM tax.declarations", grpc.StatusCode.INVALID_ARGUMENT, "STATEMENT_NOT_ALLOWED"),
    ("SELECT COUNT(*) FROM tax.nosuch", grpc.StatusCode.PERMISSION_DENIED, "TABLE_NOT_FOUND"),
    ("SELECT nosuch, COUNT(*) FROM tax.declarations GROUP BY 1", grpc.StatusCode.PERMISSION_DENIED,
     "COLUMN_NOT_GRANTED"),
    ("SELECT taxpayer_id, vat_paid FROM tax.declarations", grpc.StatusCode.INVALID_ARGUMENT, "ENTITY_COLUMN_MISUSED"),
    ("SELECT vat_paid FROM tax.declarations", grpc.StatusCode.INVALID_ARGUMENT, "RAW_ROWS"),
])
def test_bad_queries_get_status_and_reason(client, sql, code, reason):
    error = refusal(client, sql)
    assert (error.code, error.reason) == (code, reason)
    assert "Traceback" not in error.message and error.metadata.get("rule")


def test_sql_over_one_mebibyte_is_refused(client):
    error = refusal(client, "SELECT COUNT(*) FROM tax.declarations WHERE street_code IN ("
                    + ",".join(["'320102001'"] * 100_000) + ")")
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SQL_TOO_LARGE")


def test_ungranted_table_reads_exactly_like_a_missing_one(client):
    missing = refusal(client, "SELECT COUNT(*) FROM tax.nosuch")
    existing = refusal(client, "SELECT COUNT(*) FROM tax.taxpayers")
    assert (missing.code, missing.reason) == (existing.code, existing.reason)
    assert missing.message.replace("nosuch", "X") == existing.message.replace("taxpayers", "X")


def test_another_departments_grant_reads_like_a_missing_grant(broker):
    with BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(department="qinhuai-fgw"),
                      tls=client_tls()) as other:
        theirs = refusal(other, "SELECT COUNT(*) FROM tax.declarations")
        missing = refusal(other, "SELECT COUNT(*) FROM tax.declarations", grant="no-such-grant")
    assert theirs.code == missing.code == grpc.StatusCode.PERMISSION_DENIED
    assert theirs.reason == missing.reason == "GRANT_NOT_FOUND"


def test_missing_or_malformed_token_is_unauthenticated(broker):
    for token in (None, "not-a-jwt", "a.b.c"):
        with BrokerClient(f"127.0.0.1:{broker.port}", token=token, tls=client_tls()) as anonymous:
            error = refusal(anonymous, "SELECT COUNT(*) FROM tax.declarations")
        assert error.code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) FROM read_csv('/etc/passwd')",
    "COPY tax.declarations TO '/tmp/dsbroker-leak.csv'",
    "ATTACH '/tmp/dsbroker-other.duckdb' AS other",
    "INSTALL httpfs",
    "SET threads = 1",
    "SELECT current_setting('threads'), COUNT(*) FROM tax.declarations",
    "SELECT COUNT(*) FROM duckdb_settings()",
    "PRAGMA database_list",
    "CREATE TEMP TABLE t AS SELECT 1",
    "CREATE MACRO m(x) AS x",
])
def test_engine_escape_hatches_are_refused_through_the_broker(client, sql):
    error = refusal(client, sql)
    assert error.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)


def test_servers_keep_serving_after_bad_requests(client):
    for sql in ("SELECT FROM", "DROP TABLE x", "SELECT * FROM tax.declarations", "\x00\xff", "'" * 1000):
        refusal(client, sql)
    assert client.query(GRANT, "SELECT COUNT(*) AS c FROM tax.declarations").rows[0][0] > 0


def test_every_call_is_in_the_access_log_and_the_chain_verifies(broker, client):
    log = AccessLog(broker.access_log_path)
    before = max((r.seq for r in log.records()), default=0)
    client.query(GRANT, "SELECT COUNT(*) AS c FROM tax.declarations")
    refusal(client, "SELECT vat_paid FROM tax.declarations")
    with BrokerClient(f"127.0.0.1:{broker.port}", tls=client_tls()) as anonymous:
        refusal(anonymous, "SELECT COUNT(*) FROM tax.declarations")
    new = list(log.records(after=before))
    assert [(r.event, r.decision) for r in new] == [
        ("query.decision", "allow"), ("query.result", "released"), ("query.decision", "deny"), ("auth.failure", "deny")]
    assert new[1].detail["rows"] == 1 and len(new[1].detail["result_sha256"]) == 64
    assert new[2].reason == "RAW_ROWS" and new[0].rewritten_sql.endswith("LIMIT 5001")
    assert log.verify() == []
    log.close()


def test_explain_shows_the_rewrite_and_each_rule_without_running_and_is_logged(broker, client):
    log = AccessLog(broker.access_log_path)
    before = max((r.seq for r in log.records()), default=0)
    sql = ("SELECT s.street_name, SUM(vat_paid) AS vat FROM tax.declarations d JOIN tax.streets s USING (street_code) "
           "GROUP BY 1")
    explanation = client.explain(GRANT, sql)
    ran = client.query(GRANT, sql)
    assert explanation.rewritten_sql == ran.rewritten_sql
    actions = {step.rule: step.action for step in explanation.steps}
    assert list(actions) == [rule.__name__ for rule in RULES]
    assert actions["split_cells"] == actions["qualify_joined_columns"] == GuardStep.ACTION_REWROTE
    assert actions["add_entity_threshold"] == GuardStep.ACTION_UNCHANGED  # cells are marked, in the sandbox
    # The grant's dominance rule (the default, n=2, k=85) tests the one summed measure.
    assert explanation.release_plan == ("__k0 AS street_name, __s1 AS vat | ORDER BY __k0 (in the engine) | LIMIT 5001 "
                                        "| dominance: vat_paid")
    assert actions["reject_raw_rows"] == GuardStep.ACTION_CHECKED
    assert explanation.lookup_tables == ["tax.streets"] and explanation.max_groups == 5000
    assert explanation.disclosure_rules[0].threshold == 10 and explanation.policy_version == 1
    assert [(r.rule, r.threshold) for r in explanation.disclosure_rules] == [("min_entities", 10), ("dominance", 2),
                                                                             ("audit", 10)]

    with pytest.raises(DsbrokerError) as caught:
        client.explain(GRANT, "SELECT taxpayer_id FROM tax.declarations")
    assert caught.value.reason == "ENTITY_COLUMN_MISUSED" and caught.value.metadata["column"] == "taxpayer_id"

    new = list(log.records(after=before))
    assert [(r.event, r.decision) for r in new] == [
        ("query.explain", "allow"), ("query.decision", "allow"), ("query.result", "released"),
        ("query.explain", "deny")]
    assert f"accessRecords/{new[0].seq}" == explanation.access_record
    assert new[0].rewritten_sql == explanation.rewritten_sql
    assert new[3].reason == "ENTITY_COLUMN_MISUSED" and log.verify() == []
    log.close()


@pytest.fixture
def isolated_broker(tmp_path):
    """A broker of its own, for tests that take its sandbox away or slow it down."""
    started = []

    def start(sandbox_target: str):
        running = start_broker(broker_settings_for(0, tmp_path / "log.sqlite", sandbox=sandbox_target))
        started.append(running)
        return BrokerClient(f"127.0.0.1:{running.port}", token=token_for(), tls=client_tls())

    yield start
    for running in started:
        running.stop()


def test_sandbox_down_is_unavailable_and_the_broker_keeps_serving(isolated_broker, demo_db):
    sandbox = start_sandbox(SandboxSettings(listen="127.0.0.1:0", **shared_data(demo_db), datasets=DEMO_DATASETS,
                                            **sandbox_settings(dev_keys())))
    client = isolated_broker(f"127.0.0.1:{sandbox.port}")
    assert client.query(GRANT, "SELECT COUNT(*) AS c FROM tax.declarations").rows
    sandbox.stop()
    error = refusal(client, "SELECT COUNT(*) AS c FROM tax.declarations")
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "SANDBOX_UNAVAILABLE")
    assert refusal(client, "SELECT vat_paid FROM tax.declarations").reason == "RAW_ROWS"
    client.close()


class SlowEngineClock:
    """A monotonic clock on which every query takes an hour: the engine's time limit always passes."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1800.0
        return self.now


def test_sandbox_too_slow_is_deadline_exceeded(isolated_broker, demo_db):
    # The clock is the test's: no race between a 2 ms watchdog and how fast this machine runs the query.
    slow = start_sandbox(SandboxSettings(listen="127.0.0.1:0", **shared_data(demo_db), datasets=DEMO_DATASETS,
                                         **sandbox_settings(dev_keys())),
                         engine_clock=SlowEngineClock())
    client = isolated_broker(f"127.0.0.1:{slow.port}")
    error = refusal(client, "SELECT street_code, industry_code, period, COUNT(DISTINCT taxpayer_id) AS n, "
                            "SUM(vat_paid) AS v FROM tax.declarations GROUP BY ALL")
    assert (error.code, error.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "QUERY_TIMEOUT")
    client.close()
    slow.stop()


def demo_with_a_crowded_month(tmp_path, rows: int = 2_000_000):
    """Small demo data plus ``rows`` declarations in Xuanwu in January 2024, each of a taxpayer of its own: a
    query that aggregates that month per taxpayer needs far more than a few megabytes, one of February hardly
    any."""
    path = tmp_path / "crowded.duckdb"
    make_demo_data(path, taxpayers=300, months=2)
    with duckdb.connect(str(path)) as con:
        con.execute(f"""
            INSERT INTO tax.declarations
            SELECT 'X' || lpad(CAST(i AS VARCHAR), 17, '0'), DATE '2024-01-01', '320102',
                   '320102' || lpad(CAST(1 + i % 7 AS VARCHAR), 3, '0'), '51', 'F', '173', 'micro',
                   1000 + i % 997, 100 + i % 97, 0, 10, 1
            FROM range({rows}) r(i)""")
    return path


def test_a_query_past_the_sandbox_memory_limit_is_refused_and_it_keeps_serving(isolated_broker, tmp_path):
    # Spilling is refused: past memory_limit a query is RESOURCE_EXHAUSTED with a reason, not a crash.
    sandbox = start_sandbox(SandboxSettings(listen="127.0.0.1:0", data=str(demo_with_a_crowded_month(tmp_path)),
                                            audit_released_cells=False, datasets=DEMO_DATASETS, memory_limit="16MB",
                                            **sandbox_settings(dev_keys())))
    client = isolated_broker(f"127.0.0.1:{sandbox.port}")
    try:
        error = refusal(client, "SELECT street_code, industry_code, period, size_class, COUNT(DISTINCT taxpayer_id) "
                                "AS n, SUM(vat_paid) AS v FROM tax.declarations GROUP BY ALL")
        assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUERY_OUT_OF_MEMORY")
        assert error.metadata.get("memory_limit") == "16MB"
        for _ in range(3):  # every pooled connection serves again
            assert client.query(GRANT, "SELECT COUNT(*) AS c FROM tax.declarations "
                                       "WHERE period = DATE '2024-02-01'").columns == ["c"]
    finally:
        client.close()
        sandbox.stop()


def test_client_deadline_is_passed_to_the_sandbox(client):
    with pytest.raises(DsbrokerError) as caught:
        client.query(GRANT, "SELECT street_code, industry_code, period, COUNT(DISTINCT taxpayer_id) AS n "
                            "FROM tax.declarations GROUP BY ALL", timeout=0.001)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert client.query(GRANT, "SELECT COUNT(*) AS c FROM tax.declarations").rows


def test_an_unexpected_failure_is_internal_and_still_audited(broker, client, monkeypatch):
    # A bug in the guard must neither leak a traceback nor skip the access log.
    import broker.query.pipeline as pipeline

    def broken_guard(*_args, **_kwargs):
        raise ZeroDivisionError("secret detail")

    monkeypatch.setattr(pipeline, "guard", broken_guard)
    error = refusal(client, "SELECT COUNT(*) AS never_cached FROM tax.declarations")
    assert error.code == grpc.StatusCode.INTERNAL and "secret" not in error.message
    log = AccessLog(broker.access_log_path)
    last = list(log.records())[-1]
    assert (last.event, last.decision, last.reason) == ("query.decision", "deny", "INTERNAL")
    log.close()


def raw_call(broker, method: str, request, *, token: str | None = None):
    """Call a QueryService method with a request built by hand; returns (response, None) or (None, DsbrokerError)."""
    from dsbroker.rpc.status import error_from_rpc_error
    from dsbroker.identity.tls import open_channel
    from broker.v1 import query_service_pb2_grpc

    metadata = [("authorization", f"Bearer {token or token_for()}")]
    with open_channel(f"127.0.0.1:{broker.port}", tls=client_tls(), options=[]) as channel:
        try:
            return getattr(query_service_pb2_grpc.QueryServiceStub(channel), method)(
                request, metadata=metadata, timeout=30), None
        except grpc.RpcError as error:
            return None, error_from_rpc_error(error)


@pytest.mark.parametrize("method", ["RunQuery", "ExplainQuery"])
@pytest.mark.parametrize("request_id", ["two\nlines", "x" * 100_000, "spaces are not allowed", "é"])
def test_a_request_id_in_the_body_is_held_to_the_headers_rules(broker, method, request_id):
    from broker.v1 import query_service_pb2

    request = getattr(query_service_pb2, f"{method}Request")(policy=f"policies/{GRANT}", request_id=request_id,
                                                              sql="SELECT COUNT(*) AS c FROM tax.declarations")
    log = AccessLog(broker.access_log_path)
    before = log.store.size()
    _, error = raw_call(broker, method, request)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_INVALID")
    assert [v.field for d in error.details for v in d.field_violations] == ["request_id"]
    assert len(error.message) < 200
    new = log.records(after=before)
    assert [(r.decision, r.reason) for r in new] == [("deny", "REQUEST_ID_INVALID")]
    assert all(len(r.request_id) <= 128 for r in new)
    log.close()
    response, error = raw_call(broker, method, getattr(query_service_pb2, f"{method}Request")(
        policy=f"policies/{GRANT}", request_id="report-2026.11:q1", sql="SELECT COUNT(*) AS c FROM tax.declarations"))
    assert error is None and response.access_record.startswith("accessRecords/")


@pytest.mark.parametrize("name", ["g" * 1_000_000, "街" * 400_000, "Xuanwu-FGW-2026-007", "a'; DROP TABLE x"])
def test_a_grant_name_that_cannot_be_one_gets_a_small_reply_and_the_broker_keeps_serving(broker, client, name):
    # A 1 MB name used to come back inside the message and the ErrorInfo: a reply too large to deliver.
    log = AccessLog(broker.access_log_path)
    before = log.store.size()
    for call in (lambda: client.query(name, "SELECT COUNT(*) AS c FROM tax.declarations"),
                 lambda: client.explain(name, "SELECT COUNT(*) AS c FROM tax.declarations")):
        with pytest.raises(DsbrokerError) as caught:
            call()
        error = caught.value
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "GRANT_NAME_INVALID")
        assert [v.field for d in error.details for v in d.field_violations] == ["policy"]
        assert len(error.message) < 200 and all(len(v) <= 200 for v in error.metadata.values())
    records = log.records(after=before)
    assert [(r.event, r.reason) for r in records] == [("query.decision", "GRANT_NAME_INVALID"),
                                                      ("query.explain", "GRANT_NAME_INVALID")]
    assert all(len(r.grant_id) <= 80 for r in records)
    log.close()
    assert client.query(GRANT, "SELECT COUNT(*) AS c FROM tax.declarations").rows[0][0] > 0
