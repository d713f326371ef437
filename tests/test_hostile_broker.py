"""A hostile broker against the sandbox: it holds every token it has seen, every signed policy document
and the requesters' public certificates, and sends the sandbox whatever plans it likes. Each test is a
way it could get a plan run that the owner did not allow, and each must be refused by the sandbox itself.

Every sandbox here is the test's own (its ledgers under the test's directory), so a revocation or a
newer version seen here does not reach the session's shared sandbox.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.client.sdk import BrokerClient
from broker.client.encryption_key import EncryptionKey
from dsbroker.errors import DsbrokerError
from dsbroker.guard import guard
from dsbroker.identity.key_binding import sign_key_binding
from broker.dev.keys import DEV_AUDIENCE, DEV_ISSUER, IDP_KEY_ID, load_private_key, sandbox_settings
from dsbroker.policy.model import parse_policy
from dsbroker.rpc.status import error_from_rpc_error
from broker.server import start_broker
from sandbox.settings import SandboxSettings
from dsbroker.identity.tls import open_channel, thumbprint
from dsbroker.identity.tokens import issue_token
from broker.v1 import policy_service_pb2 as policies_pb
from dsbroker.v1 import results_pb2
from sandbox.demo.data import DEMO_DATASETS
from sandbox.server import start_sandbox
from sandbox.v1 import sandbox_service_pb2 as pb
from sandbox.v1 import sandbox_service_pb2_grpc as pb_grpc
from tests.conftest import (ANALYST, ENCRYPTED, GRANT, POLICIES, SHIPPED_DOMINANCE, XUANWU, broker_settings_for,
                            client_tls, dev_keys, dominance_off, revocation, sandbox_client_tls, sign, token_for)

SQL = "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY street_code"
SHIPPED = (POLICIES / f"{GRANT}.yaml").read_text(encoding="utf-8")


def document(version: int = 1, *, encrypted: bool = False) -> str:
    """The shipped grant at ``version`` (optionally allowing encrypted results), signed by reviewer and owner."""
    text = SHIPPED.replace("version: 1", f"version: {version}")
    if encrypted:  # encrypted results are not served under the dominance rule: the grant turns it off
        text = text.replace("results: [aggregate]", "results: [aggregate, encrypted]").replace(
            SHIPPED_DOMINANCE, dominance_off(ENCRYPTED))
    return sign(text)


def plan_for(signed: str, sql: str = SQL, *, token: str | None = None, encryption: results_pb2.Encryption | None = None,
             **fields) -> pb.Plan:
    """The plan an honest broker would send for ``sql`` under ``signed`` (fields override it)."""
    policy = parse_policy(signed)
    guarded = guard(sql, policy, district=XUANWU, department="xuanwu-fgw", encrypted=encryption is not None)
    plan = pb.Plan(dataset=policy.dataset, sql=guarded.sql, policy_id=policy.id, policy_version=policy.version,
                   max_rows=guarded.max_rows, policy_document=signed, original_sql=sql,
                   caller_token=token if token is not None else token_for(), execution_id=str(uuid.uuid4()),
                   encryption=encryption)
    for name, value in fields.items():
        setattr(plan, name, value) if not isinstance(value, (list, tuple)) else getattr(plan, name).extend(value)
    return plan


def call(sandbox, method: str, request):
    with open_channel(f"127.0.0.1:{sandbox.port}", tls=sandbox_client_tls(), options=[]) as channel:
        return getattr(pb_grpc.SandboxServiceStub(channel), method)(request, timeout=30)


def execute(sandbox, plan: pb.Plan) -> pb.ExecutePlanResponse:
    return call(sandbox, "ExecutePlan", pb.ExecutePlanRequest(plan=plan))


def refusal(sandbox, plan: pb.Plan) -> DsbrokerError:
    with pytest.raises(grpc.RpcError) as caught:
        execute(sandbox, plan)
    return error_from_rpc_error(caught.value)


class OwnSandbox:
    """Starts (and restarts) a sandbox on the demo data whose ledgers live in one directory."""

    def __init__(self, data: Path, state: Path) -> None:
        self.data, self.state = data, state
        self.running = []

    def start(self, **overrides):
        settings = {**sandbox_settings(dev_keys()), "listen": "127.0.0.1:0", "data": str(self.data),
                    "datasets": DEMO_DATASETS,
                    "execution_ledger": str(self.state / "executions.sqlite"),
                    "policy_ledger": str(self.state / "policies.sqlite"), **overrides}
        running = start_sandbox(SandboxSettings(**settings))
        self.running.append(running)
        return running

    def restart(self, running, **overrides):
        running.stop()
        return self.start(**overrides)

    def stop(self) -> None:
        for running in self.running:
            running.stop()


@pytest.fixture
def own(demo_db, tmp_path):
    sandboxes = OwnSandbox(demo_db, tmp_path)
    yield sandboxes
    sandboxes.stop()


# -- single-use execution ids --------------------------------------------------------------------

def test_an_execution_id_runs_once_even_across_a_restart(own):
    sandbox = own.start()
    plan = plan_for(document())
    assert execute(sandbox, plan).table.row_count == 7
    replayed = refusal(sandbox, plan)
    assert (replayed.code, replayed.reason) == (grpc.StatusCode.ALREADY_EXISTS, "PLAN_REPLAYED")
    assert replayed.metadata["policy"] == GRANT
    other_query = plan_for(document(), "SELECT COUNT(*) AS n FROM tax.declarations", execution_id=plan.execution_id)
    assert refusal(sandbox, other_query).reason == "PLAN_REPLAYED", "an id is spent, whatever plan comes with it"
    sandbox = own.restart(sandbox)
    assert refusal(sandbox, plan).reason == "PLAN_REPLAYED"
    fresh = pb.Plan()
    fresh.CopyFrom(plan)
    fresh.execution_id = str(uuid.uuid4())
    assert execute(sandbox, fresh).table.row_count == 7, "the sandbox keeps serving"


# -- superseded versions -------------------------------------------------------------------------

def test_a_version_older_than_one_the_sandbox_has_seen_is_refused_even_across_a_restart(own):
    sandbox = own.start()
    assert execute(sandbox, plan_for(document(1))).table.row_count == 7
    assert execute(sandbox, plan_for(document(2))).table.row_count == 7
    old = refusal(sandbox, plan_for(document(1)))
    assert (old.code, old.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "POLICY_SUPERSEDED")
    assert old.metadata["policy"] == GRANT
    sandbox = own.restart(sandbox)
    assert refusal(sandbox, plan_for(document(1))).reason == "POLICY_SUPERSEDED"
    assert execute(sandbox, plan_for(document(2))).table.row_count == 7


# -- certificate-bound tokens --------------------------------------------------------------------

def bound_token(name: str = ANALYST, **claims) -> str:
    """A token bound (RFC 8705 cnf x5t#S256) to client certificate ``name`` of the development keys."""
    keys = dev_keys()
    certificate = x509.load_pem_x509_certificate(keys.client_cert(name).read_bytes())
    fields = dict(subject=ANALYST, department="xuanwu-fgw", district=XUANWU, roles=("requester",),
                  ttl=dt.timedelta(hours=1)) | claims
    return issue_token(load_private_key(keys.idp_key), key_id=IDP_KEY_ID, issuer=DEV_ISSUER, audience=DEV_AUDIENCE,
                       certificate_thumbprint=thumbprint(certificate), **fields)


def test_a_certificate_bound_token_is_answered_end_to_end_under_thumbprint_binding(own, tmp_path):
    sandbox = own.start()
    broker = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", token_binding="thumbprint"))
    try:
        with BrokerClient(f"127.0.0.1:{broker.port}", token=bound_token(), tls=client_tls()) as client:
            assert len(client.query(GRANT, SQL).rows) == 7
        with BrokerClient(f"127.0.0.1:{broker.port}", token=bound_token(), tls=client_tls("other-analyst")) as other:
            with pytest.raises(DsbrokerError) as caught:  # the broker holds it to the certificate too
                other.query(GRANT, SQL)
        assert caught.value.reason == "TOKEN_CERTIFICATE_MISMATCH"
    finally:
        broker.stop()


# -- revocations at the sandbox ------------------------------------------------------------------

def publish(sandbox, statements=(), documents=()) -> pb.PublishPolicyStatementsResponse:
    return call(sandbox, "PublishPolicyStatements", pb.PublishPolicyStatementsRequest(
        statements=list(statements), policy_documents=list(documents)))


def listed(sandbox) -> list[str]:
    return list(call(sandbox, "ListPolicyStatements", pb.ListPolicyStatementsRequest()).statements)


def test_a_revocation_pushed_to_the_sandbox_refuses_every_version_for_good(own):
    sandbox = own.start()
    assert execute(sandbox, plan_for(document())).table.row_count == 7
    statement = revocation(GRANT)
    answer = publish(sandbox, [statement])
    assert answer.statements_added == 1 and publish(sandbox, [statement]).statements_added == 0
    error = refusal(sandbox, plan_for(document()))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "POLICY_REVOKED")
    assert error.metadata["policy"] == GRANT
    assert refusal(sandbox, plan_for(document(2))).reason == "POLICY_REVOKED", "versions: all covers later ones"
    sandbox = own.restart(sandbox)
    assert refusal(sandbox, plan_for(document())).reason == "POLICY_REVOKED"
    assert listed(sandbox) == [statement]


def test_a_revocation_a_plan_carries_is_kept_so_a_later_plan_without_it_is_refused_too(own):
    sandbox = own.start()
    carried = refusal(sandbox, plan_for(document(), policy_statements=[revocation(GRANT)]))
    assert carried.reason == "POLICY_REVOKED"
    assert refusal(sandbox, plan_for(document())).reason == "POLICY_REVOKED"


def test_a_revocation_through_a_version_leaves_a_newer_version_usable(own):
    sandbox = own.start()
    publish(sandbox, [revocation(GRANT, through_version=1)])
    assert refusal(sandbox, plan_for(document(1))).reason == "POLICY_REVOKED"
    assert execute(sandbox, plan_for(document(2))).table.row_count == 7


def test_the_owners_own_directory_reaches_the_sandbox_whatever_the_broker_sends(own, tmp_path):
    directory = tmp_path / "owner-statements"
    directory.mkdir()
    sandbox = own.start(statements=str(directory))
    assert execute(sandbox, plan_for(document(1))).table.row_count == 7
    (directory / f"{GRANT}-v2.yaml").write_text(document(2), encoding="utf-8")
    assert refusal(sandbox, plan_for(document(1))).reason == "POLICY_SUPERSEDED"
    (directory / f"{GRANT}.revoked.json").write_text(revocation(GRANT) + "\n", encoding="utf-8")
    assert refusal(sandbox, plan_for(document(2))).reason == "POLICY_REVOKED"


def test_a_file_in_the_owners_directory_that_does_not_verify_stops_the_start(own, tmp_path):
    directory = tmp_path / "owner-statements"
    directory.mkdir()
    (directory / "forged.json").write_text(revocation(GRANT, signer="xuanwu-tax") + "\n", encoding="utf-8")
    with pytest.raises(DsbrokerError) as caught:
        own.start(statements=str(directory))
    assert caught.value.reason == "CONFIG_INVALID" and "forged.json" in caught.value.message


def edited(statement: str, **changes) -> str:
    fields = {**json.loads(statement), **changes}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


FORGED = {
    "signed by the reviewer's key": (lambda: revocation(GRANT, signer="xuanwu-tax"), "STATEMENT_SIGNATURE_INVALID"),
    "the reason edited after signing": (lambda: edited(revocation(GRANT), reason="something else"),
                                        "STATEMENT_SIGNATURE_INVALID"),
    "narrowed to version 1 after signing": (lambda: edited(revocation(GRANT), versions=1),
                                            "STATEMENT_SIGNATURE_INVALID"),
    "signed as the owner by another key": (lambda: edited(revocation(GRANT, signer="xuanwu-tax"), by="city-tax",
                                                          key="city-tax-1"), "STATEMENT_SIGNATURE_INVALID"),
    "not in canonical form": (lambda: json.dumps(json.loads(revocation(GRANT))), "STATEMENT_INVALID"),
    "not a statement": (lambda: "revoke everything", "STATEMENT_INVALID"),
}


@pytest.mark.parametrize("make, reason", FORGED.values(), ids=FORGED.keys())
def test_a_statement_the_owner_did_not_sign_is_refused_and_changes_nothing(own, make, reason):
    sandbox = own.start()
    with pytest.raises(grpc.RpcError) as caught:
        publish(sandbox, [make()])
    assert error_from_rpc_error(caught.value).reason == reason
    assert refusal(sandbox, plan_for(document(), policy_statements=[make()])).reason == reason
    assert execute(sandbox, plan_for(document())).table.row_count == 7, "not revoked, and still serving"
    assert listed(sandbox) == []


# -- revocation through the broker, and when the broker loses its store ----------------------------

class Deployment:
    """A broker of the test's own, on its own policies folder and store, in front of the test's sandbox."""

    def __init__(self, sandbox, state: Path) -> None:
        self.policies = state / "policies"
        self.policies.mkdir()
        (self.policies / f"{GRANT}.yaml").write_text(document(), encoding="utf-8")
        self.settings = broker_settings_for(sandbox.port, state / "log.sqlite", policies=str(self.policies))
        self.broker = start_broker(self.settings)

    def client(self, *actor) -> BrokerClient:
        token = token_for(*actor) if actor else token_for()
        return BrokerClient(f"127.0.0.1:{self.broker.port}", token=token, tls=client_tls())

    def owner(self) -> BrokerClient:
        return self.client("city-tax", "320100", ("owner",), "chen")

    def restart_on_a_new_store(self) -> None:
        self.broker.stop()
        Path(self.settings.store).unlink()
        self.broker = start_broker(self.settings)

    def query_refusal(self) -> DsbrokerError:
        with self.client() as client, pytest.raises(DsbrokerError) as caught:
            client.query(GRANT, SQL)
        return caught.value


@pytest.fixture
def deployment(own, tmp_path):
    sandbox = own.start(sandbox_id="owner-sandbox")
    running = Deployment(sandbox, tmp_path)
    running.sandbox = sandbox
    yield running
    running.broker.stop()


@pytest.mark.parametrize("lost", ["the store", "the store and the statement files"])
def test_a_revocation_reaches_the_sandbox_and_survives_the_loss_of_the_brokers_store(deployment, lost):
    with deployment.client() as client:
        assert len(client.query(GRANT, SQL).rows) == 7
    statement = revocation(GRANT)
    with deployment.owner() as owner:
        answer = owner.revoke_policy(GRANT, statement)
    assert answer.sandboxes_notified == ["owner-sandbox"]
    assert deployment.query_refusal().reason == "GRANT_NOT_ACTIVE"
    assert refusal(deployment.sandbox, plan_for(document())).reason == "POLICY_REVOKED"
    kept = sorted((deployment.policies / "statements").glob("*.json"))
    assert [path.read_text().strip() for path in kept] == [statement]
    if lost != "the store":
        for path in kept:
            path.unlink()
    deployment.restart_on_a_new_store()
    with deployment.owner() as owner:
        assert owner.get_policy(GRANT).state == policies_pb.POLICY_STATE_REVOKED
    assert deployment.query_refusal().reason == "GRANT_NOT_ACTIVE"
    assert refusal(deployment.sandbox, plan_for(document())).reason == "POLICY_REVOKED"


def test_the_broker_refuses_a_revocation_the_owner_did_not_sign_for_this_policy(deployment):
    with deployment.owner() as owner:
        cases = {"": ("INVALID_ARGUMENT", "STATEMENT_REQUIRED"),
                 revocation(GRANT, signer="xuanwu-tax"): ("PERMISSION_DENIED", "STATEMENT_SIGNATURE_INVALID"),
                 revocation("xuanwu-fgw-2026-999"): ("INVALID_ARGUMENT", "STATEMENT_MISMATCH")}
        for statement, (code, reason) in cases.items():
            with pytest.raises(DsbrokerError) as caught:
                owner.revoke_policy(GRANT, statement)
            assert (caught.value.code.name, caught.value.reason) == (code, reason)
        with pytest.raises(DsbrokerError) as caught:
            owner.revoke_policy(GRANT, revocation(GRANT, "one reason"), reason="another reason")
        assert caught.value.reason == "STATEMENT_MISMATCH"
    with deployment.client() as client:
        assert len(client.query(GRANT, SQL).rows) == 7, "nothing was revoked"
    assert listed(deployment.sandbox) == []


# -- certificates the broker forwards ------------------------------------------------------------

def certificate_der(name: str = ANALYST) -> bytes:
    return x509.load_pem_x509_certificate(dev_keys().client_cert(name).read_bytes()).public_bytes(Encoding.DER)


def self_signed(common_name: str = ANALYST):
    """A client certificate (and its key) the broker made itself, with a requester's name: no CA issued it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(Encoding.DER), key


def test_a_bound_token_runs_only_with_the_certificate_it_is_bound_to(own):
    sandbox = own.start()
    token = bound_token()
    assert execute(sandbox, plan_for(document(), token=token, caller_certificate=certificate_der())).table.row_count
    for certificate in (certificate_der("other-analyst"), b""):
        error = refusal(sandbox, plan_for(document(), token=token, caller_certificate=certificate))
        assert (error.reason, error.metadata["token_reason"]) == ("PLAN_CALLER_INVALID", "TOKEN_CERTIFICATE_MISMATCH")


def test_a_certificate_the_requester_ca_did_not_issue_is_refused(own):
    sandbox = own.start(token_binding="subject")
    forged, _key = self_signed()
    error = refusal(sandbox, plan_for(document(), caller_certificate=forged))
    assert (error.reason, error.metadata["token_reason"]) == ("PLAN_CALLER_INVALID", "CERTIFICATE_UNTRUSTED")
    error = refusal(sandbox, plan_for(document(), caller_certificate=b"not a certificate"))
    assert error.metadata["token_reason"] == "CERTIFICATE_INVALID"
    # Under subject binding the owner requires the certificate to name the token's subject, whatever the broker does.
    error = refusal(sandbox, plan_for(document(), caller_certificate=certificate_der("other-analyst")))
    assert error.metadata["token_reason"] == "TOKEN_CERTIFICATE_MISMATCH"
    assert refusal(sandbox, plan_for(document())).metadata["token_reason"] == "TOKEN_CERTIFICATE_MISMATCH"
    assert execute(sandbox, plan_for(document(), caller_certificate=certificate_der())).table.row_count == 7


# -- the requester's encryption key --------------------------------------------------------------

ENCRYPTED_SQL = "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY street_code"


@pytest.fixture(scope="module")
def requester_key() -> EncryptionKey:
    return EncryptionKey.generate()


@pytest.fixture(scope="module")
def brokers_key() -> EncryptionKey:
    return EncryptionKey.generate()


def bound_encryption(key: EncryptionKey, *, signer=None, sql: str = ENCRYPTED_SQL, token: str | None = None,
                     grant: str = GRANT, signed_key: EncryptionKey | None = None) -> results_pb2.Encryption:
    """``key``'s public context with a binding signature over ``signed_key`` (default: ``key``) and the query."""
    encryption = key.encryption()
    encryption.key_signature = sign_key_binding(
        signer or load_private_key(dev_keys().client_key(ANALYST)), key_id=(signed_key or key).key_id, grant=grant,
        sql=sql, token=token or TOKEN)
    return encryption


TOKEN = token_for()


def encrypted_plan(encryption: results_pb2.Encryption, *, sql: str = ENCRYPTED_SQL, certificate: bytes | None = None,
                   token: str | None = None) -> pb.Plan:
    return plan_for(document(encrypted=True), sql, token=token or TOKEN, encryption=encryption,
                    caller_certificate=certificate_der() if certificate is None else certificate)


def test_the_requesters_own_bound_key_is_encrypted_under(own, requester_key):
    sandbox = own.start()
    response = execute(sandbox, encrypted_plan(bound_encryption(requester_key)))
    assert response.encrypted.key_id == requester_key.key_id
    bound = bound_token()
    answered = execute(sandbox, encrypted_plan(bound_encryption(requester_key, token=bound), token=bound))
    assert answered.encrypted.key_id == requester_key.key_id, "a cnf-bound token binds the certificate too"


def test_a_broker_that_substitutes_its_own_encryption_key_is_refused(own, requester_key, brokers_key):
    sandbox = own.start()
    forged_certificate, forged_key = self_signed()
    hostile = {
        "its key with the requester's signature": encrypted_plan(
            bound_encryption(brokers_key, signed_key=requester_key)),
        "its key, unsigned": encrypted_plan(brokers_key.encryption()),
        "the requester's signature for another query": encrypted_plan(
            bound_encryption(requester_key, sql=SQL.replace("vat_paid", "revenue")), sql=ENCRYPTED_SQL),
        "a signature for another caller's token": encrypted_plan(
            bound_encryption(requester_key, token=token_for(subject="someone-else"))),
        "a signature for another grant": encrypted_plan(bound_encryption(requester_key, grant="xuanwu-fgw-2026-999")),
        "no certificate": encrypted_plan(bound_encryption(requester_key), certificate=b""),
        "another requester's certificate": encrypted_plan(bound_encryption(requester_key),
                                                          certificate=certificate_der("other-analyst")),
    }
    for why, plan in hostile.items():
        error = refusal(sandbox, plan)
        assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ENCRYPTION_KEY_NOT_BOUND"), why
    # Its own certificate, with the requester's name, signing its own key: no CA vouches for it.
    plan = encrypted_plan(bound_encryption(brokers_key, signer=forged_key), certificate=forged_certificate)
    assert refusal(sandbox, plan).metadata["token_reason"] == "CERTIFICATE_UNTRUSTED"
    assert execute(sandbox, encrypted_plan(bound_encryption(requester_key))).encrypted.key_id == requester_key.key_id


def test_without_a_requester_ca_only_a_certificate_bound_token_binds_a_key(own, requester_key):
    sandbox = own.start(requester_ca="")
    error = refusal(sandbox, encrypted_plan(bound_encryption(requester_key)))
    assert error.reason == "ENCRYPTION_KEY_NOT_BOUND", "CN = sub proves nothing without a CA to check the chain"
    bound = bound_token()
    response = execute(sandbox, encrypted_plan(bound_encryption(requester_key, token=bound), token=bound))
    assert response.encrypted.key_id == requester_key.key_id


def test_a_newer_version_the_broker_installs_reaches_the_sandbox_before_any_plan_under_it(deployment):
    (deployment.policies / f"{GRANT}.yaml").write_text(document(2), encoding="utf-8")
    deployment.broker.stop()
    deployment.broker = start_broker(deployment.settings)
    # A hostile broker replays the version-1 document it still holds: the sandbox has seen version 2.
    assert refusal(deployment.sandbox, plan_for(document(1))).reason == "POLICY_SUPERSEDED"
    with deployment.client() as client:
        answered = client.query(GRANT, SQL)
    assert answered.policy_version == 2 and len(answered.rows) == 7


def test_subject_binding_at_the_sandbox_needs_the_requester_ca(own):
    # Without the CA a certificate the broker made with the requester's name would pass.
    with pytest.raises(DsbrokerError) as caught:
        own.start(token_binding="subject", requester_ca="")
    assert caught.value.reason == "CONFIG_INVALID" and "requester_ca" in caught.value.message


def test_a_flood_of_statements_is_refused_before_any_is_checked(own):
    sandbox = own.start()
    with pytest.raises(grpc.RpcError) as caught:
        publish(sandbox, [revocation(GRANT)] * 257)
    error = error_from_rpc_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "STATEMENT_INVALID")
    assert execute(sandbox, plan_for(document())).table.row_count == 7
