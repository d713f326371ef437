"""An outside attack on the owner's sandbox, the access log and the broker's interceptors.

Each test is one finding, written against the code it attacks: it fails there and passes once the finding
is fixed. Real servers on port 0 with the development keys, real SQLite and DuckDB; no mocks, no timers.

- A token whose JOSE header PyJWT itself rejects (``crit``, a ``kid`` that is not text) escapes the
  authenticator as a bare ``jwt.InvalidTokenError``: INTERNAL, no ``auth.failure`` record, and so outside
  the per-client refusal cap; the sandbox answers a plan that carries one INTERNAL as well.
- A confirmation (``cnf``) the broker cannot hold a call to (``jkt``, a null thumbprint) is ignored, so a
  token that is bound to something is used as a bare bearer token.
- Reasons are stored whole: a requester's withdrawal reasons fill the broker's store and make every
  owner's, reviewer's and auditor's list of access requests too large to send.
- Request fields the servicers do not check give INTERNAL instead of INVALID_ARGUMENT.
- The witness countersigns any checkpoint signed by the broker that names its head as ``prev``, whatever
  tree it covers: a hostile broker forks the log and the sandbox witnesses the fork.
- A witness table dropped from the sandbox's ledger is created again, empty, by the next start, and
  reconcile then passes a log whose witnessed end was cut off.
- ``dsbroker data make`` (and its partitions) writes the owner's data file, company names included,
  readable by every account on the host.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import sqlite3
import uuid
from contextlib import closing

import grpc
import jwt as pyjwt
import pytest
from click.testing import CliRunner
from google.protobuf import timestamp_pb2

from broker.access_log.log import AccessLog, AccessRecord, RecordFilter
from dsbroker.records.checkpoints import load_or_create_signing_key, public_key_path, sign_checkpoint
from dsbroker.records.merkle import MerkleAccumulator, consistency_proof, merkle_root
from broker.cli.main import main
from broker.client.sdk import BrokerClient
from dsbroker.errors import DsbrokerError
from dsbroker.guard import guard
from broker.dev.keys import DEV_AUDIENCE, DEV_ISSUER, IDP_KEY_ID, load_private_key, sandbox_settings
from dsbroker.policy.model import parse_policy
from dsbroker.rpc.status import error_from_rpc_error
from broker.server import start_broker
from sandbox.settings import SandboxSettings
from dsbroker.identity.tls import open_channel
from broker.v1 import access_request_service_pb2 as requests_pb
from broker.v1 import audit_service_pb2 as audit_pb
from broker.v1 import catalog_service_pb2 as catalog_pb
from sandbox.demo.data import DEMO_DATASETS, make_demo_data, split_demo_data
from sandbox.server import start_sandbox
from sandbox.v1 import sandbox_service_pb2 as pb
from sandbox.v1 import sandbox_service_pb2_grpc as pb_grpc
from tests.test_access_log import restore_triggers
from tests.conftest import shared_data
from tests.conftest import (GRANT, POLICIES, XUANWU, broker_settings_for, call_raw, client_tls, dev_keys,
                            sandbox_client_tls, sign, token_for)

SQL = "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY street_code"
DOCUMENT = sign((POLICIES / f"{GRANT}.yaml").read_text(encoding="utf-8"))
EVERY_ROLE = ("requester", "reviewer", "owner", "auditor")


# -- helpers ----------------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_with_header(header: dict) -> str:
    """A token an unauthenticated client makes up: a header PyJWT reads, any claims, a signature of zeros."""
    claims = {"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "nobody", "exp": 4_000_000_000, "iat": 0}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(bytes(64))}"


def idp_token(**extra) -> str:
    """A token the development identity provider really signed for the Xuanwu commission, with ``extra`` claims."""
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    claims = {"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "analyst", "department": "xuanwu-fgw",
              "district": XUANWU, "roles": ["requester"], "iat": now, "nbf": now, "exp": now + 3600,
              "jti": str(uuid.uuid4()), **extra}
    return pyjwt.encode(claims, load_private_key(dev_keys().idp_key), algorithm="EdDSA", headers={"kid": IDP_KEY_ID})


def records_for(log_path, request_id: str):
    log = AccessLog(log_path)
    try:
        return log.records(where=RecordFilter(request_id=request_id))
    finally:
        log.close()


def call_sandbox(port: int, method: str, request):
    with open_channel(f"127.0.0.1:{port}", tls=sandbox_client_tls(), options=[]) as channel:
        return getattr(pb_grpc.SandboxServiceStub(channel), method)(request, timeout=30)


def sandbox_refusal(port: int, method: str, request) -> DsbrokerError:
    with pytest.raises(grpc.RpcError) as caught:
        call_sandbox(port, method, request)
    return error_from_rpc_error(caught.value)


def honest_plan(*, token: str | None = None, **fields) -> pb.Plan:
    """The plan an honest broker sends for SQL under the shipped grant (``fields`` override it)."""
    guarded = guard(SQL, parse_policy(DOCUMENT), district=XUANWU, department="xuanwu-fgw")
    plan = pb.Plan(dataset="tax.declarations", sql=guarded.sql, policy_id=GRANT, policy_version=1,
                   max_rows=guarded.max_rows, policy_document=DOCUMENT, original_sql=SQL,
                   caller_token=token if token is not None else token_for(), execution_id=str(uuid.uuid4()))
    for name, value in fields.items():
        setattr(plan, name, value)
    return plan


@pytest.fixture(scope="module")
def own_broker(sandbox, tmp_path_factory):
    """A broker with a log of its own, so that a test reads exactly the records its calls wrote."""
    log = tmp_path_factory.mktemp("attack") / "access-log.sqlite"
    running = start_broker(broker_settings_for(sandbox.port, log))
    running.log = log
    yield running
    running.stop()


# -- 1. tokens whose header PyJWT rejects: INTERNAL, unrecorded, uncapped ------------------------------

HEADERS_PYJWT_REJECTS = {
    "crit names an extension": {"alg": "EdDSA", "kid": IDP_KEY_ID, "crit": ["x-attack"]},
    "kid is a number": {"alg": "EdDSA", "kid": 7},
    "kid is a list": {"alg": "EdDSA", "kid": [IDP_KEY_ID]},
}


@pytest.mark.parametrize("header", HEADERS_PYJWT_REJECTS.values(), ids=HEADERS_PYJWT_REJECTS.keys())
def test_a_made_up_token_with_a_header_pyjwt_rejects_is_refused_and_recorded(own_broker, header):
    # jwt.get_unverified_header raises InvalidTokenError (not DecodeError) for these; the authenticator
    # catches only DecodeError there, so the error leaves the auth interceptor as a bare exception: the
    # caller gets INTERNAL, no auth.failure record is written, and the per-client refusal cap never sees it.
    request_id, code = call_raw(own_broker.port, "/broker.v1.CatalogService/ListDatasets",
                                   catalog_pb.ListDatasetsRequest(), token=token_with_header(header))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert [(r.event, r.decision) for r in records_for(own_broker.log, request_id)] == [("auth.failure", "deny")]


def test_a_flood_of_tokens_with_a_header_pyjwt_rejects_meets_the_refusal_cap(sandbox, tmp_path):
    class Frozen:  # one second of the cap's clock for the whole test
        def __call__(self) -> float:
            return 1_800_000_000.5

    log = tmp_path / "log.sqlite"
    running = start_broker(broker_settings_for(sandbox.port, log, max_refusals_per_client=2), refusal_clock=Frozen())
    try:
        token = token_with_header(HEADERS_PYJWT_REJECTS["crit names an extension"])
        codes = [call_raw(running.port, "/broker.v1.CatalogService/ListDatasets", catalog_pb.ListDatasetsRequest(),
                             token=token)[1] for _ in range(4)]
    finally:
        running.stop()
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    written = AccessLog(log)
    try:
        refused = [r for r in written.records() if r.event == "auth.failure"]
    finally:
        written.close()
    assert len(refused) == 3 and refused[-1].detail["refused"] == 2, "two one by one, two counted in one record"


def test_a_plan_whose_caller_token_has_a_header_pyjwt_rejects_is_refused_as_the_callers(sandbox):
    plan = honest_plan(token=token_with_header(HEADERS_PYJWT_REJECTS["crit names an extension"]))
    error = sandbox_refusal(sandbox.port, "ExecutePlan", pb.ExecutePlanRequest(plan=plan))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PLAN_CALLER_INVALID")


# -- 2. confirmations the broker cannot check are ignored --------------------------------------------

UNCHECKABLE_CNF = {
    "a DPoP key thumbprint (jkt)": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
    "a null certificate thumbprint": {"x5t#S256": None},
    "a cnf that is text": "bound",
}


@pytest.mark.parametrize("cnf", UNCHECKABLE_CNF.values(), ids=UNCHECKABLE_CNF.keys())
def test_a_token_bound_to_something_the_broker_cannot_check_is_not_taken_as_a_bearer_token(own_broker, cnf):
    # README: "A token that carries cnf is always held to it". The authenticator reads only a dict's
    # x5t#S256 string; any other cnf makes the token a plain bearer token, usable by whoever holds it.
    request_id, code = call_raw(own_broker.port, "/broker.v1.CatalogService/ListDatasets",
                                   catalog_pb.ListDatasetsRequest(), token=idp_token(cnf=cnf))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert [r.event for r in records_for(own_broker.log, request_id)] == ["auth.failure"]


def test_the_sandbox_does_not_run_a_plan_under_a_token_bound_to_something_it_cannot_check(sandbox):
    plan = honest_plan(token=idp_token(cnf=UNCHECKABLE_CNF["a DPoP key thumbprint (jkt)"]))
    error = sandbox_refusal(sandbox.port, "ExecutePlan", pb.ExecutePlanRequest(plan=plan))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PLAN_CALLER_INVALID")


# -- 3. reasons are stored whole ---------------------------------------------------------------------

def test_a_requesters_withdrawal_reasons_cannot_make_the_owners_list_of_requests_undeliverable(sandbox, tmp_path):
    # The purpose and example queries are held to 4,000 characters; a withdrawal's reason (like a
    # rejection's, a suspension's and an approval's comment) is stored whole. Two withdrawals of 40 MB
    # make every page the owner, the reviewers and the auditors list larger than the 64 MiB a reply holds.
    policies = tmp_path / "policies"
    policies.mkdir()
    running = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", policies=str(policies)))
    target = f"127.0.0.1:{running.port}"
    try:
        with BrokerClient(target, token=token_for(subject="li.wei"), tls=client_tls()) as requester:
            for _ in range(2):
                submitted = requester.submit_request(requests_pb.AccessRequest(
                    purpose="monthly VAT by street", dataset="tax.declarations", valid_from="2026-01-01",
                    valid_until="2030-12-31", result_modes=["aggregate"], queries_per_day=10,
                    columns=[requests_pb.RequestedColumn(column="street_code", use=requests_pb.COLUMN_USE_GROUP,
                                                         reason="rows")]))
                try:
                    requester.withdraw_request(submitted.name, reason="x" * 40_000_000)
                except DsbrokerError as error:  # refused as too long: as good as bounded
                    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        with BrokerClient(target, token=token_for("city-tax", "320100", ("owner",), "chen.jun"),
                          tls=client_tls()) as owner:
            listed, _ = owner.list_requests()
        assert len(listed) == 2
        assert all(len(r.state_reason) <= 4000 for r in listed)
    finally:
        running.stop()


# -- 4. request fields nobody checks: INTERNAL ------------------------------------------------------

def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


UNCHECKED_FIELDS = {
    "an access request state no enum has": (
        "/broker.v1.AccessRequestService/ListAccessRequests", requests_pb.ListAccessRequestsRequest(state=99)),
    "a records page token past any sequence number": (
        "/broker.v1.AuditService/ListAccessRecords", audit_pb.ListAccessRecordsRequest(page_token=_token("9" * 30))),
    "a start time in the year 33658": (
        "/broker.v1.AuditService/ListAccessRecords",
        audit_pb.ListAccessRecordsRequest(start_time=timestamp_pb2.Timestamp(seconds=10 ** 12))),
    "an end time with negative nanos": (
        "/broker.v1.AuditService/ListAccessRecords",
        audit_pb.ListAccessRecordsRequest(end_time=timestamp_pb2.Timestamp(seconds=1, nanos=-5))),
    "a record name with a superscript digit": (
        "/broker.v1.AuditService/GetAccessRecord", audit_pb.GetAccessRecordRequest(name="accessRecords/\u00b2")),
    "a record name past any sequence number": (
        "/broker.v1.AuditService/GetAccessRecord", audit_pb.GetAccessRecordRequest(name="accessRecords/" + "9" * 30)),
}


@pytest.mark.parametrize("path, request_message", UNCHECKED_FIELDS.values(), ids=UNCHECKED_FIELDS.keys())
def test_a_field_the_servicer_does_not_check_is_invalid_argument_not_internal(own_broker, path, request_message):
    request_id, code = call_raw(own_broker.port, path, request_message, token=token_for(roles=EVERY_ROLE))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [r.decision for r in records_for(own_broker.log, request_id)] == ["deny"]


@pytest.mark.parametrize("page_token", ["\u00b2", "9" * 30, "9" * 5000],
                         ids=["superscript", "past-int64", "5000-digits"])
def test_a_statements_page_token_the_sandbox_never_issued_is_invalid_argument_not_internal(sandbox, page_token):
    error = sandbox_refusal(sandbox.port, "ListPolicyStatements", pb.ListPolicyStatementsRequest(page_token=page_token))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID")


@pytest.mark.parametrize("max_rows", [-1, -5])
def test_a_plan_with_a_negative_row_cap_is_refused_before_it_runs(sandbox, max_rows):
    # -1 returns no row, flagged as cut; -5 reaches DuckDB's fetchmany(-4) and fails with INTERNAL, after the
    # plan was written to the execution ledger as run.
    error = sandbox_refusal(sandbox.port, "ExecutePlan", pb.ExecutePlanRequest(plan=honest_plan(max_rows=max_rows)))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PLAN_INVALID")


# -- 5 and 6. the witness ----------------------------------------------------------------------------

@pytest.fixture
def broker_key(tmp_path):
    path = tmp_path / "access-log.key"
    load_or_create_signing_key(path)
    return path


def start_witness(demo_db, tmp_path, broker_key):
    running = start_sandbox(SandboxSettings(
        listen="127.0.0.1:0", **shared_data(demo_db), sandbox_id="witness-attack", datasets=DEMO_DATASETS,
        execution_ledger=str(tmp_path / "executions.sqlite"), policy_ledger=str(tmp_path / "policies.sqlite"),
        privacy_ledger=str(tmp_path / "privacy.sqlite"),
        broker_log_keys=(str(public_key_path(broker_key)),), **sandbox_settings(dev_keys())))
    running.ledger = tmp_path / "executions.sqlite"
    return running


def witness_request(checkpoints, leaves, *, since: int = 0) -> pb.WitnessCheckpointRequest:
    """The checkpoints as the broker sends them: each with its consistency proof from the one before it (the
    first from ``since``), made over ``leaves``, the record hashes the sender claims the log holds."""
    sizes = [since, *(c.size for c in checkpoints)]
    proofs = [consistency_proof(MerkleAccumulator().extend(leaves[:old]), leaves[old:new])
              for old, new in zip(sizes, sizes[1:], strict=False)]
    return pb.WitnessCheckpointRequest(checkpoints=[pb.LogCheckpoint(
        size=c.size, root=c.root, prev=c.prev, sign_time=c.at, key_id=c.key_id, signature=c.signature,
        consistency_proof_hashes=proof) for c, proof in zip(checkpoints, proofs, strict=True)])


def written_log(location, key_path, records: int):
    """A log of ``records`` calls, checkpointed every 4 and at close; returns its checkpoints and record hashes."""
    log = AccessLog(location, signing_key=load_or_create_signing_key(key_path), checkpoint_every=4)
    for i in range(records):
        log.append(AccessRecord(event="call", decision="allow", subject=f"caller-{i}", detail={"method": "/x/Y"}))
    log.close()
    log = AccessLog(location)
    try:
        return log.checkpoints(), [record.hash for record in log.records()]
    finally:
        log.close()


def test_the_witness_refuses_a_checkpoint_whose_tree_does_not_extend_the_one_it_witnessed(demo_db, tmp_path,
                                                                                           broker_key):
    # A hostile broker holds its log key. It rewrites records the sandbox already witnessed (say, to drop a
    # query it ran behind the owner's back), rebuilds the tree, and signs the new head with ``prev`` set to
    # the head the sandbox holds and a larger size. The witness checks only the signature, ``prev`` and the
    # size, so it countersigns the fork; only a later reconcile against every head notices. An RFC 6962
    # consistency proof from the old tree to the new one would let it refuse at once.
    witness = start_witness(demo_db, tmp_path, broker_key)
    try:
        checkpoints, hashes = written_log(str(tmp_path / "log.sqlite"), broker_key, 8)
        head = checkpoints[-1]
        assert call_sandbox(witness.port, "WitnessCheckpoint",
                            witness_request(checkpoints, hashes)).size == head.size
        rewritten = [uuid.uuid4().hex * 2 for _ in range(head.size + 4)]  # other records from the first on
        fork = sign_checkpoint(load_or_create_signing_key(broker_key), size=len(rewritten),
                               root=merkle_root(rewritten), prev=head.hash(), at=dt.datetime.now(dt.timezone.utc))
        # The best proof the forger can make: from its own rewritten tree of head.size records.
        error = sandbox_refusal(witness.port, "WitnessCheckpoint",
                                witness_request([fork], rewritten, since=head.size))
        assert error.code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT)
    finally:
        witness.stop()


def test_a_dropped_witness_table_is_not_made_good_by_restarting_the_sandbox(demo_db, tmp_path, broker_key):
    location = str(tmp_path / "log.sqlite")
    witness = start_witness(demo_db, tmp_path, broker_key)
    try:
        checkpoints, hashes = written_log(location, broker_key, 12)
        call_sandbox(witness.port, "WitnessCheckpoint", witness_request(checkpoints, hashes))
    finally:
        witness.stop()
    kept = checkpoints[0]
    # The attack: the newest checkpoints and the records they covered go from the log's database (the
    # remaining records are sealed and verify), and the witnessed heads from the sandbox's ledger.
    with closing(sqlite3.connect(location, isolation_level=None)) as raw:
        for table in ("access_log", "access_log_checkpoints"):
            raw.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
        raw.execute(f"DELETE FROM access_log_checkpoints WHERE size > {kept.size}")
        raw.execute(f"DELETE FROM access_log WHERE seq > {kept.size}")
    restore_triggers(location)  # a careful writer leaves the triggers as they were
    runner = CliRunner()
    pinned = ["--pinned-key", str(public_key_path(broker_key))]
    assert runner.invoke(main, ["audit", "verify", "--log", location, *pinned]).exit_code == 0
    with closing(sqlite3.connect(witness.ledger)) as raw:
        raw.execute("DROP TABLE witnessed_checkpoints")
        raw.commit()
    dropped = runner.invoke(main, ["audit", "reconcile", "--log", location, "--ledger", str(witness.ledger)])
    assert dropped.exit_code == 7 and "WITNESS_TABLE_MISSING" in dropped.output  # found, as long as nobody restarts
    try:
        restarted = start_witness(demo_db, tmp_path, broker_key)
    except DsbrokerError:
        pass  # refusing to start over a ledger whose witness table is gone is a fix too
    else:
        restarted.stop()
    found = runner.invoke(main, ["audit", "reconcile", "--log", location, "--ledger", str(witness.ledger)])
    assert found.exit_code == 7, found.output


# -- 7. the owner's data file ------------------------------------------------------------------------

def test_the_owners_data_file_and_its_partitions_are_readable_by_the_owner_only(tmp_path):
    # Every state file and key is created 0600 whatever the umask; the data file itself, which holds every
    # declaration and tax.taxpayers with the companies' names, is created with the umask's mode (0644 under
    # the usual 022), and so is each partition split from it.
    data = tmp_path / "owner-data.duckdb"
    make_demo_data(data, taxpayers=100, months=1)
    parts = split_demo_data(data, ["office-a", "office-b"], tmp_path / "partitions")
    for path in (data, *parts):
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is mode {path.stat().st_mode & 0o777:o}"
