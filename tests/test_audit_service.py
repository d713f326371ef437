"""Every call reaches the access log, auditors read it over gRPC (and are logged doing so), a broken
log refuses queries before the sandbox runs them, and the log reconciles with the sandbox's ledger."""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing

import grpc
import pytest
from click.testing import CliRunner

from broker.access_log.log import AccessLog, AccessRecord, RecordFilter
from broker.access_log.calls import CallAuditInterceptor
from dsbroker.records.checkpoints import public_key_path
from broker.audit.reconcile import reconcile
from dsbroker.records.access_record import record_hash
from broker.audit.verify import verify_log
from broker.cli.main import main
from broker.client.sdk import BrokerClient
from dsbroker.errors import DsbrokerError
from broker.server import SERVICE_NAMES, start_broker
from broker.settings import access_log_key_path
from sandbox.settings import SandboxSettings
from dsbroker.identity.tls import open_channel
from broker.v1 import (access_request_service_pb2, audit_service_pb2, catalog_service_pb2, policy_service_pb2,
                       query_service_pb2)
from broker.dev.keys import sandbox_settings
from sandbox.demo.data import DEMO_DATASETS
from sandbox.ledgers.executions import ExecutionLedger
from sandbox.server import start_sandbox
from sandbox.v1 import sandbox_service_pb2 as sandbox_pb
from sandbox.v1 import sandbox_service_pb2_grpc as sandbox_grpc
from dsbroker.guard import guard
from dsbroker.policy.model import parse_policy
from tests.conftest import shared_data
from tests.conftest import (GRANT, XUANWU, broker_settings_for, call_raw, client_tls, dev_keys, log_key,
                            sandbox_client_tls, signed_policies, token_for, writing_log)

SQL = "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY street_code"
EVERY_ROLE = ("requester", "reviewer", "owner", "auditor")
MODULES = (query_service_pb2, catalog_service_pb2, access_request_service_pb2, policy_service_pb2, audit_service_pb2)


def all_methods():
    """(path, request class) of every method the broker serves."""
    found = []
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            assert service.full_name in SERVICE_NAMES, f"{service.full_name} is not served"
            for method in service.methods:
                request = getattr(module, method.input_type.name)
                found.append((f"/{service.full_name}/{method.name}", request))
    return found


@pytest.fixture(scope="module")
def own_broker(sandbox, tmp_path_factory):
    """A broker with a log of its own, so the tests can read exactly what it wrote."""
    log = tmp_path_factory.mktemp("audit") / "access-log.sqlite"
    running = start_broker(broker_settings_for(sandbox.port, log, checkpoint_every=25))
    running.log = log
    yield running
    running.stop()


def records_for(log_path, request_id: str):
    log = AccessLog(log_path)
    try:
        return log.records(where=RecordFilter(request_id=request_id))
    finally:
        log.close()


@pytest.mark.parametrize("path, request_type", all_methods(), ids=[p for p, _ in all_methods()])
def test_every_rpc_path_writes_its_record(own_broker, path, request_type):
    token = token_for(roles=EVERY_ROLE)
    paths = {
        "handled": call_raw(own_broker.port, path, request_type(), token=token),
        "no token": call_raw(own_broker.port, path, request_type(), token=None),
        "forged token": call_raw(own_broker.port, path, request_type(), token=token[:-4] + "AAAA"),
        "no deadline": call_raw(own_broker.port, path, request_type(), token=token, deadline=False),
    }
    for how, (request_id, code) in paths.items():
        records = records_for(own_broker.log, request_id)
        assert records, f"{path} ({how}, {code.name}) left no record"
        if how == "handled":
            allowed = code == grpc.StatusCode.OK
            assert any(r.decision in (("allow", "released") if allowed else ("deny", "error")) for r in records)
            assert all(r.subject == "analyst" and r.token_id for r in records)
        elif how in ("no token", "forged token"):
            assert code == grpc.StatusCode.UNAUTHENTICATED and records[0].event == "auth.failure"
        else:
            assert code == grpc.StatusCode.INVALID_ARGUMENT and records[0].reason == "DEADLINE_REQUIRED"
        assert all(path in (r.detail.get("method", path)) for r in records)


def test_health_checks_are_not_accesses_and_are_not_recorded(own_broker):
    from grpc_health.v1 import health_pb2

    log = AccessLog(own_broker.log)
    before = log.store.size()
    _, code = call_raw(own_broker.port, "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest(), token=None)
    assert code == grpc.StatusCode.OK and log.store.size() == before
    log.close()


def test_a_refused_auditor_read_is_recorded_with_its_reason(own_broker):
    # A page token that is valid base64 but not a sequence number reaches the servicer's parsing.
    request_id, code = call_raw(own_broker.port, "/broker.v1.AuditService/ListAccessRecords",
                                audit_service_pb2.ListAccessRecordsRequest(page_token="bm90LWEtbnVtYmVy"),
                                token=token_for(roles=("auditor",)))
    records = records_for(own_broker.log, request_id)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(r.event, r.decision, r.reason) for r in records] == [("audit.read", "deny", "PAGE_TOKEN_INVALID")]


def test_an_unexpected_failure_in_a_handler_is_recorded_as_an_error(tmp_path):
    from dsbroker.rpc.call_context import CallConventionsInterceptor
    from dsbroker.rpc.serving import build_server
    from dsbroker.rpc.status import ErrorInterceptor

    def broken(request, context):
        raise ValueError("a bug")

    log = writing_log(tmp_path / "log.sqlite")
    server = build_server(max_workers=2, max_message_bytes=1 << 20, max_concurrent_rpcs=4,
                          interceptors=[ErrorInterceptor(), CallConventionsInterceptor(), CallAuditInterceptor(log)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Broken", {"Call": grpc.unary_unary_rpc_method_handler(broken)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as caught:
                channel.unary_unary("/test.Broken/Call")(b"", timeout=5, metadata=[("x-request-id", "bug-1")])
        assert caught.value.code() == grpc.StatusCode.INTERNAL and "a bug" not in caught.value.details()
        [record] = log.records(where=RecordFilter(request_id="bug-1"))
        assert (record.event, record.decision, record.reason) == ("call", "error", "INTERNAL")
    finally:
        server.stop(0)
        log.close()


def auditor(broker) -> BrokerClient:
    return BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(roles=("auditor",), subject="auditor-wang"),
                        tls=client_tls())


def test_an_auditor_reads_the_log_over_grpc_and_each_read_is_logged(own_broker):
    with BrokerClient(f"127.0.0.1:{own_broker.port}", token=token_for(), tls=client_tls()) as requester:
        requester.query(GRANT, SQL)
    with auditor(own_broker) as client:
        decisions, _ = client.list_access_records(where=RecordFilter(event="query.decision", decision="allow"))
        assert decisions and all(r.event == "query.decision" for r in decisions)
        one = client.get_access_record(decisions[-1].seq)
        assert one == decisions[-1] and record_hash(one) == one.hash  # as stored, so checkable remotely
        page, token = client.list_access_records(page_size=2)
        second, _ = client.list_access_records(page_size=2, page_token=token)
        assert [r.seq for r in page] == [1, 2] and [r.seq for r in second] == [3, 4]
    reads = [r for r in AccessLog(own_broker.log).records(where=RecordFilter(event="audit.read"))
             if r.subject == "auditor-wang"]
    assert {r.detail["method"].rsplit("/", 1)[1] for r in reads} >= {"ListAccessRecords", "GetAccessRecord"}
    assert all(r.decision == "allow" for r in reads)


def test_only_auditors_read_the_log_and_a_refused_read_is_logged(own_broker):
    with BrokerClient(f"127.0.0.1:{own_broker.port}", token=token_for(roles=("requester", "owner")),
                      tls=client_tls()) as client:
        with pytest.raises(DsbrokerError) as refused:
            client.list_access_records()
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    last = AccessLog(own_broker.log).records(where=RecordFilter(event="audit.read", decision="deny"))
    assert last and last[-1].detail["method"].endswith("ListAccessRecords")


def test_the_cli_verifies_and_exports_the_log_over_grpc(own_broker, tmp_path):
    keys = dev_keys()
    env = {"DSBROKER_BROKER": f"127.0.0.1:{own_broker.port}", "DSBROKER_CA": str(keys.platform_ca),
           "DSBROKER_CERT": str(keys.client_cert("analyst")), "DSBROKER_KEY": str(keys.client_key("analyst")),
           "DSBROKER_TOKEN": token_for(roles=("auditor",))}
    runner = CliRunner()
    pinned = str(public_key_path(access_log_key_path(broker_settings_for(0, own_broker.log))))
    checkpoint = runner.invoke(main, ["audit", "checkpoint", "--out", str(tmp_path / "kept.jsonl")], env=env)
    assert checkpoint.exit_code == 0, checkpoint.output
    verified = runner.invoke(main, ["audit", "verify", "--pinned-key", pinned, "--checkpoint",
                                    str(tmp_path / "kept.jsonl")], env=env)
    assert verified.exit_code == 0 and "access log intact" in verified.output, verified.output
    exported = runner.invoke(main, ["audit", "export", "--format", "csv", "--event", "query.decision"], env=env)
    assert exported.exit_code == 0 and exported.stdout.startswith("\ufeffevent,decision")
    assert "record(s) exported" in exported.stderr
    refused = runner.invoke(main, ["audit", "list"], env={**env, "DSBROKER_TOKEN": token_for()})
    assert refused.exit_code == 3 and "PERMISSION_DENIED" in refused.output


def test_a_log_that_cannot_be_written_refuses_the_query_before_the_sandbox_runs_it(sandbox, demo_db, tmp_path):
    log_path = tmp_path / "access-log.sqlite"
    running = start_broker(broker_settings_for(sandbox.port, log_path))
    ledger = ExecutionLedger(demo_db.with_name(demo_db.name + ".executions.sqlite"))
    try:
        with BrokerClient(f"127.0.0.1:{running.port}", token=token_for(), tls=client_tls()) as client:
            client.query(GRANT, SQL)
            executed = len(ledger.executions())
            with closing(sqlite3.connect(log_path)) as raw:
                raw.execute("ALTER TABLE access_log RENAME TO access_log_away")
            with pytest.raises(DsbrokerError) as refused:
                client.query(GRANT, SQL)
            assert (refused.value.code, refused.value.reason) == (grpc.StatusCode.UNAVAILABLE,
                                                                  "ACCESS_LOG_UNAVAILABLE")
            assert len(ledger.executions()) == executed, "the sandbox ran a query the log did not record"
            with closing(sqlite3.connect(log_path)) as raw:
                raw.execute("ALTER TABLE access_log_away RENAME TO access_log")
            assert client.query(GRANT, SQL).rows  # the broker kept serving
    finally:
        ledger.close()
        running.stop()


@pytest.fixture
def private_sandbox(demo_db, tmp_path):
    """A sandbox with an execution ledger of its own."""
    running = start_sandbox(SandboxSettings(listen="127.0.0.1:0", **shared_data(demo_db), sandbox_id="sandbox-a",
                                            execution_ledger=str(tmp_path / "executions.sqlite"),
                                            datasets=DEMO_DATASETS,
                                            **sandbox_settings(dev_keys())))
    running.ledger = tmp_path / "executions.sqlite"
    yield running
    running.stop()


def test_the_log_and_the_sandbox_ledger_reconcile_and_a_plan_run_behind_the_logs_back_is_found(
        private_sandbox, tmp_path):
    log_path = tmp_path / "access-log.sqlite"
    running = start_broker(broker_settings_for(private_sandbox.port, log_path))
    try:
        with BrokerClient(f"127.0.0.1:{running.port}", token=token_for(), tls=client_tls()) as client:
            for sql in (SQL, "SELECT COUNT(*) AS n FROM tax.declarations"):
                client.query(GRANT, sql)
    finally:
        running.stop()
    ledger = ExecutionLedger(private_sandbox.ledger)
    log = AccessLog(log_path)
    assert reconcile(log.records(), ledger.executions()) == []
    released = log.records(where=RecordFilter(event="query.result"))
    assert {r.detail["sandbox_id"] for r in released} == {"sandbox-a"}
    cli = CliRunner().invoke(main, ["audit", "reconcile", "--log", str(log_path), "--ledger",
                                    str(private_sandbox.ledger)])
    assert cli.exit_code == 0 and "reconciled: 2 executions" in cli.output

    # A broker that skips its log: it replays the first decision's plan straight to the sandbox.
    decision = log.records(where=RecordFilter(event="query.decision", decision="allow"))[0]
    assert ledger.executions()[0].execution_id == decision.detail["execution_id"]
    with open_channel(f"127.0.0.1:{private_sandbox.port}", tls=sandbox_client_tls(), options=[]) as channel:
        plan = _plan_for(decision, token_for(), execution_id=str(uuid.uuid4()))
        sandbox_grpc.SandboxServiceStub(channel).ExecutePlan(sandbox_pb.ExecutePlanRequest(plan=plan), timeout=10)
    found = reconcile(log.records(), ledger.executions())
    assert [(d.where, d.kind) for d in found] == [("ledger entry 3", "EXECUTED_WITHOUT_DECISION")]
    cli = CliRunner().invoke(main, ["audit", "reconcile", "--log", str(log_path), "--ledger",
                                    str(private_sandbox.ledger)])
    assert cli.exit_code == 7 and "ledger entry 3" in cli.output

    # An entry removed from the ledger: its chain breaks, and a release no longer has its execution.
    with closing(sqlite3.connect(private_sandbox.ledger)) as raw:
        raw.execute("DROP TRIGGER executions_no_delete")
        raw.execute("DELETE FROM executions WHERE seq = 2")
        raw.commit()
    assert ledger.verify()[0].startswith("ledger entry 2:")
    assert [d.kind for d in reconcile(log.records(), ledger.executions())] == [
        "EXECUTED_WITHOUT_DECISION", "RELEASED_WITHOUT_EXECUTION"]
    ledger.close()
    log.close()


def _plan_for(decision, token: str, *, execution_id: str) -> sandbox_pb.Plan:
    """The plan the broker sent for ``decision``, under a new execution id."""
    document = (signed_policies() / f"{GRANT}.yaml").read_text(encoding="utf-8")
    policy = parse_policy(document)
    guarded = guard(decision.sql, policy, district=XUANWU, department="xuanwu-fgw")
    assert guarded.sql == decision.rewritten_sql
    return sandbox_pb.Plan(dataset=policy.dataset, sql=guarded.sql, policy_id=policy.id,
                           policy_version=policy.version, max_rows=guarded.max_rows, policy_document=document,
                           original_sql=decision.sql, caller_token=token, execution_id=execution_id)


def test_verify_reports_an_allowed_decision_without_a_release_as_a_note(tmp_path):
    log = writing_log(tmp_path / "log.sqlite")
    seq = log.append(AccessRecord(event="query.decision", decision="allow", detail={"execution_id": "e1"}))
    log.append(AccessRecord(event="query.decision", decision="allow", detail={"execution_id": "e2"}))
    log.append(AccessRecord(event="query.result", decision="released", detail={"decision_seq": seq + 1}))
    found = verify_log(log.store, public_keys=[log_key().public_key()])
    log.close()
    assert found.intact
    assert [w.seq for w in found.warnings if w.kind == "DECISION_WITHOUT_RELEASE"] == [seq]


def test_a_token_whose_lifetime_is_text_is_refused_and_recorded_on_first_use_and_on_reuse(own_broker):
    # PyJWT takes exp "1900000000" (int() accepts it); a token kept after its first use then compared
    # text with a number on reuse: INTERNAL, and no record of the second call.
    import datetime as dt

    import jwt as pyjwt

    from broker.dev.keys import DEV_AUDIENCE, DEV_ISSUER, IDP_KEY_ID, load_private_key

    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    token = pyjwt.encode({"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "analyst", "department": "xuanwu-fgw",
                          "district": XUANWU, "roles": ["requester"], "iat": now, "exp": str(now + 3600)},
                         load_private_key(dev_keys().idp_key), algorithm="EdDSA", headers={"kid": IDP_KEY_ID})
    for _ in range(2):
        request_id, code = call_raw(own_broker.port, "/broker.v1.CatalogService/ListDatasets",
                                    catalog_service_pb2.ListDatasetsRequest(), token=token)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert [(r.event, r.reason) for r in records_for(own_broker.log, request_id)] == [
            ("auth.failure", "TOKEN_CLAIMS_INVALID")]


@pytest.mark.parametrize("body", [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x12\x02\xff\xfe"],
                         ids=["corrupt", "truncated", "bad-utf-8"])
@pytest.mark.parametrize("path", ["/broker.v1.QueryService/RunQuery", "/broker.v1.AuditService/ListAccessRecords"])
def test_a_request_body_that_does_not_decode_is_refused_and_recorded(own_broker, path, body):
    # gRPC used to answer INTERNAL "Exception deserializing request!" before any interceptor ran: no record.
    request_id = f"garbage-{uuid.uuid4().hex[:12]}"
    metadata = [("x-request-id", request_id), ("authorization", f"Bearer {token_for(roles=EVERY_ROLE)}")]
    with open_channel(f"127.0.0.1:{own_broker.port}", tls=client_tls(), options=[]) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary(path, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)(
                body, metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Traceback" not in caught.value.details()
    records = records_for(own_broker.log, request_id)
    assert [(r.event, r.decision, r.reason) for r in records] == [("call.refused", "deny", "REQUEST_UNDECODABLE")]
    assert records[0].detail["method"] == path and records[0].client
    assert call_raw(own_broker.port, path, query_service_pb2.RunQueryRequest() if "Query" in path
                    else audit_service_pb2.ListAccessRecordsRequest(), token=token_for(roles=EVERY_ROLE))[1] in (
        grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)


def test_queries_with_huge_comments_write_records_of_bounded_size(own_broker):
    import hashlib

    allowed = SQL + " -- " + "padding " * 130_000  # just under the guard's 1 MiB
    # 8 MB: refused, and recorded as refused (a query of its own, which no cached plan answers)
    refused = "SELECT COUNT(*) AS n_huge FROM tax.declarations -- " + "padding " * 1_000_000
    with BrokerClient(f"127.0.0.1:{own_broker.port}", token=token_for(), tls=client_tls()) as client:
        request_id = client.query(GRANT, allowed).request_id
        with pytest.raises(DsbrokerError) as caught:
            client.query(GRANT, refused)
    assert caught.value.reason == "SQL_TOO_LARGE"
    records = records_for(own_broker.log, request_id)
    [denial] = AccessLog(own_broker.log).records(where=RecordFilter(event="query.decision", decision="deny"))[-1:]
    assert [r.event for r in records] == ["query.decision", "query.result"] and denial.reason == "SQL_TOO_LARGE"
    for record, sql in ((records[0], allowed), (records[1], allowed), (denial, refused)):
        assert record.sql_cut and len(record.sql.encode()) <= 16 * 1024 and sql.startswith(record.sql)
        assert (record.sql_sha256, record.sql_bytes) == (hashlib.sha256(sql.encode()).hexdigest(), len(sql.encode()))
    assert not records[0].rewritten_sql_cut and records[0].rewritten_sql  # the guard dropped the comment
