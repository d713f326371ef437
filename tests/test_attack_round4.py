"""Round 4 of the outside attack: new classes of finding in the code added to fix the earlier rounds.

Each test is one finding, written against the code it attacks: it fails there and passes once the finding
is fixed. Real servers on port 0 with the development keys, real SQLite and DuckDB; no mocks.

1. (medium) A policy document's approvals are all checked before the 64 KiB bound: a plan (or a published
   document) with thousands of owner approvals that do not verify costs one Ed25519 check each.
2. (medium) A "public" BFV context may carry Galois and relinearisation keys: 55 MB, 90 MB of memory each,
   loaded before the key-binding check and kept in a cache of 32; a requester sends it through the broker.
3. (high) Plan.caller_certificate is parsed and kept (lru_cache of 1024, keyed by its bytes) before it is
   checked and whatever its size: a hostile broker fills the sandbox's memory with refused plans.
4. (low) The witness takes a checkpoint's fields unchecked: a first root that is no root is countersigned,
   and fork alarms of any size are kept, one per call.
5. (medium) The privacy ledger's spends can be set to 'refunded' with a plain UPDATE (no chain, no trigger):
   a writer of the ledger file gives a grant its budget back.
"""

from __future__ import annotations

import base64
import time

import grpc
import pytest
import tenseal as ts

from broker.client.encryption_key import EncryptionKey
from dsbroker.policy.signing import APPROVALS_HEADER, Approval, split_document
from dsbroker.results.parameters import PLAIN_MODULUS, POLY_MODULUS_DEGREE
from sandbox.v1 import sandbox_service_pb2 as pb
from tests.conftest import shared_data
from tests.conftest import GRANT, POLICIES, sign
from tests.test_hostile_broker import (bound_encryption, call, document, encrypted_plan, own,  # noqa: F401
                                       plan_for, refusal)

SHIPPED = (POLICIES / f"{GRANT}.yaml").read_text(encoding="utf-8")


# -- 1. approvals read before the size bound: O(n) signature checks per plan ---------------------------

def padded_with_bogus_owner_approvals(signed: str, count: int) -> str:
    """``signed`` with its reviewer's signature spoilt and ``count`` owner approvals (the owner's real key id,
    a signature that is no signature) after it: every line reads as an approval in canonical form."""
    body, approvals = split_document(signed)
    reviewer = next(a for a in approvals if a.role == "reviewer")
    owner = next(a for a in approvals if a.role == "owner")
    bogus = "ed25519:" + base64.b64encode(b"\x01" * 64).decode()
    lines = [Approval(reviewer.role, reviewer.by, reviewer.key, reviewer.at, bogus)]
    lines += [Approval(owner.role, owner.by, owner.key, owner.at, bogus)] * count
    return body + APPROVALS_HEADER + "".join(a.render() for a in lines)


@pytest.mark.parametrize("via", ["ExecutePlan", "PublishPolicyStatements"])
def test_a_policy_document_over_64_kib_is_refused_before_any_signature_is_checked(own, via):
    # Severity: medium (a hostile broker stops the owner's sandbox serving; also any holder of the
    # broker-to-sandbox certificate). The README says a document "of more than 64 KiB" is refused "before
    # anything expands", but the bound lives in parse_policy, which verify_policy calls only after every
    # approval has been checked. The attack: the shipped signed grant with its reviewer's signature spoilt,
    # followed by N owner approvals that name the owner's trusted key with a bogus signature. The reviewer's
    # signature fails, so verify_approvals asks _owner_signed whether an owner signed the body, and that
    # runs one Ed25519 verification per owner line: about 75 us each, so a 60 MB plan (300,000 lines,
    # inside the sandbox's 64 MiB message limit) costs some 20-45 s of CPU before it is refused, and a
    # refused document is not cached, so every plan pays again. Eight such plans in flight hold every
    # worker of a 2-core sandbox. Here 20,000 lines (3.7 MB) cost about 3 s.
    sandbox = own.start()
    heavy = padded_with_bogus_owner_approvals(sign(SHIPPED), 20_000)
    assert len(heavy) > 64 * 1024
    started = time.monotonic()
    if via == "ExecutePlan":
        error = refusal(sandbox, plan_for(document(), policy_document=heavy))
    else:
        with pytest.raises(grpc.RpcError) as caught:
            call(sandbox, via, pb.PublishPolicyStatementsRequest(policy_documents=[heavy]))
        from dsbroker.rpc.status import error_from_rpc_error
        error = error_from_rpc_error(caught.value)
    elapsed = time.monotonic() - started
    assert error.reason in ("POLICY_INVALID", "POLICY_SIGNATURE_INVALID", "PLAN_INVALID"), error.reason
    assert elapsed < 1.0, f"the sandbox spent {elapsed:.1f} s on a {len(heavy):,}-byte document it then refused"


# -- 2. a public context that carries Galois and relinearisation keys ----------------------------------

@pytest.fixture(scope="module")
def key_with_evaluation_keys() -> EncryptionKey:
    """A requester key whose "public" context also carries Galois and relinearisation keys (about 55 MB),
    with the right parameters, so check_public_context passes it."""
    context = ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=POLY_MODULUS_DEGREE, plain_modulus=PLAIN_MODULUS)
    context.generate_galois_keys()
    context.generate_relin_keys()
    public = context.copy()
    public.make_context_public()
    data = public.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=True, save_relin_keys=True)
    return EncryptionKey(context, data)


def test_a_public_context_with_galois_or_relinearisation_keys_is_refused_and_not_kept(own, key_with_evaluation_keys):
    # Severity: medium (memory exhaustion of the sandbox by a requester with an encrypted grant, or by a
    # hostile broker). check_public_context refuses a secret key but not evaluation keys; the broker passes
    # RunQueryRequest.encryption.public_context through unchecked, and the sandbox loads it
    # (PublicContexts.load) before the key-binding check and keeps it in a cache of 32. The attack: an
    # encrypted query whose public context carries Galois and relinearisation keys under the right
    # parameters: a 55 MB message that costs 0.3 s to load and about 90 MB of the sandbox's memory for as
    # long as it stays cached; 32 different ones (a fresh context each query, even unsigned ones from a
    # hostile broker) hold about 3 GB, and 8 in flight at once more. Nothing here needs more than a public
    # key: the sandbox should refuse such a context (ENCRYPTION_KEY_INVALID) without keeping it.
    assert len(key_with_evaluation_keys.public_context) > 10 * 1024 * 1024
    sandbox = own.start()
    error = refusal(sandbox, encrypted_plan(bound_encryption(key_with_evaluation_keys)))
    assert error.reason in ("ENCRYPTION_KEY_INVALID", "ENCRYPTION_KEY_PRIVATE"), error.reason


# -- 3. the caller certificates a hostile broker forwards are kept, whatever their size -------------------

def large_self_signed(serial: int, size: int) -> bytes:
    """A certificate with a requester's name that no CA issued, made ``size`` bytes large by an extension."""
    import datetime as dt
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID, ObjectIdentifier

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "analyst")])
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.1"), os.urandom(size)),
                           critical=False)
            .sign(key, hashes.SHA256())).public_bytes(Encoding.DER)


def test_the_sandbox_keeps_nothing_of_a_refused_plans_caller_certificate(own):
    # Severity: high (a hostile broker makes the owner's sandbox run out of memory). PlanGuardChecker
    # parses Plan.caller_certificate with dsbroker.identity.tls.certificate_from_der, an lru_cache of 1024 entries
    # keyed by the DER bytes, before the certificate is checked against the requester CA, and nothing bounds
    # the field's size. The cache keeps the forwarded bytes and the PeerCertificate's own copy of them (about
    # 2.4 times the certificate), for refused plans too. The attack: plans under the signed grant (which the
    # broker holds), each with a different self-signed certificate of 60 MB (a large non-critical
    # extension; within the 64 MiB message limit). Each is refused CERTIFICATE_UNTRUSTED, and each leaves
    # about 140 MB behind: some 150 plans exhaust a 24 GB host, and 1024 would hold about 140 GB. Here 6
    # certificates of 4 MB must leave the sandbox's memory as it was.
    import gc
    import tracemalloc

    sandbox = own.start()
    certificates = [large_self_signed(1000 + i, 4 * 1024 * 1024) for i in range(6)]
    plans = [plan_for(document(), caller_certificate=der) for der in certificates]
    del certificates
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for plan in plans:
            error = refusal(sandbox, plan)
            assert error.reason in ("PLAN_CALLER_INVALID", "PLAN_INVALID"), error.reason
        del plans
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 4 * 1024 * 1024, f"six refused plans left {kept / 2**20:.0f} MB in the sandbox"


# -- 4. checkpoint fields the witness takes unchecked --------------------------------------------------

@pytest.fixture
def broker_key(tmp_path):
    from dsbroker.records.checkpoints import load_or_create_signing_key

    path = tmp_path / "access-log.key"
    load_or_create_signing_key(path)
    return path


def _checkpoint_request(checkpoint, proof=()) -> pb.WitnessCheckpointRequest:
    return pb.WitnessCheckpointRequest(checkpoints=[pb.LogCheckpoint(
        size=checkpoint.size, root=checkpoint.root, prev=checkpoint.prev, sign_time=checkpoint.at,
        key_id=checkpoint.key_id, signature=checkpoint.signature, consistency_proof_hashes=list(proof))])


def _signed(key_path, *, size: int, root: str, prev: str | None, at: str):
    import dataclasses

    from dsbroker.records.checkpoints import Checkpoint, key_id, load_or_create_signing_key

    key = load_or_create_signing_key(key_path)
    unsigned = Checkpoint(size=size, root=root, prev=prev or "0" * 64, at=at, key_id=key_id(key.public_key()))
    return dataclasses.replace(unsigned, signature=base64.b64encode(key.sign(unsigned.signed_body())).decode())


@pytest.mark.parametrize("attack", ["first root that is no root", "fork alarm of megabytes"])
def test_a_checkpoint_with_fields_out_of_range_is_refused_before_it_is_recorded(demo_db, tmp_path, broker_key,
                                                                                attack):
    # Severity: low (a hostile broker, holding its log key; availability of the witness and the owner's disk).
    # plan_fields.py holds a plan's fields to their ranges before anything is recorded, but the witness
    # takes a checkpoint's size, root, prev and sign_time as they come, checks only the signature, and
    # writes the checkpoint's JSON whole into the execution ledger (synchronous=FULL). Two attacks:
    # - a first checkpoint whose root is not 64 hex digits is countersigned (there is no earlier root to
    #   prove against): the sandbox's countersignature then vouches for a "root" no tree has, and every
    #   later checkpoint is a CHECKPOINT_FORK, for good;
    # - a checkpoint that branches off (size at or below the head) is kept as an alarm once per distinct
    #   checkpoint, whatever its size: one 60 MB sign_time per call, a different one each time, and the
    #   ledger file grows by 60 MB a call without bound (every reconcile then reads it all into memory).
    from dsbroker.records.checkpoints import public_key_path
    from broker.dev.keys import sandbox_settings
    from sandbox.settings import SandboxSettings
    from sandbox.demo.data import DEMO_DATASETS
    from sandbox.server import start_sandbox
    from tests.conftest import dev_keys
    from tests.test_attack_sandbox import call_sandbox, sandbox_refusal

    ledger = tmp_path / "executions.sqlite"
    witness = start_sandbox(SandboxSettings(
        listen="127.0.0.1:0", **shared_data(demo_db), sandbox_id="witness-round4", datasets=DEMO_DATASETS,
        execution_ledger=str(ledger), policy_ledger=str(tmp_path / "policies.sqlite"),
        privacy_ledger=str(tmp_path / "privacy.sqlite"),
        broker_log_keys=(str(public_key_path(broker_key)),), **sandbox_settings(dev_keys())))
    try:
        now = "2026-11-21T09:30:00.000000+00:00"
        if attack == "first root that is no root":
            bogus = _signed(broker_key, size=4, root="not a merkle root", prev=None, at=now)
            error = sandbox_refusal(witness.port, "WitnessCheckpoint", _checkpoint_request(bogus))
            assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error.reason
            return
        head = _signed(broker_key, size=4, root="ab" * 32, prev=None, at=now)
        call_sandbox(witness.port, "WitnessCheckpoint", _checkpoint_request(head))
        before = sum(path.stat().st_size for path in tmp_path.glob("executions.sqlite*"))
        for i in range(3):
            fork = _signed(broker_key, size=2, root="cd" * 32, prev=None, at=f"{i}" + "x" * (2 * 1024 * 1024))
            error = sandbox_refusal(witness.port, "WitnessCheckpoint", _checkpoint_request(fork))
        grown = sum(path.stat().st_size for path in tmp_path.glob("executions.sqlite*")) - before
        assert error.reason in ("CHECKPOINT_FORK", "CHECKPOINTS_INVALID", "CHECKPOINT_INVALID"), error.reason
        assert grown < 256 * 1024, f"three refused checkpoints grew the sandbox's ledger by {grown / 2**20:.1f} MB"
    finally:
        witness.stop()


# -- 5. the privacy budget, reset by a writer of the sandbox's ledger ------------------------------------

from tests.test_noise import SQL as NOISE_SQL  # noqa: E402
from tests.test_noise import crafted, noisy_servers  # noqa: E402,F401


def test_a_spent_privacy_budget_cannot_be_given_back_by_a_writer_of_the_ledger_file(noisy_servers):
    # Severity: medium (a writer of the sandbox's ledger files, holding no key, undoes differential privacy).
    # The privacy ledger says "a noise policy's budget is only a protection if ... nothing can reset it". Its
    # only guard is a trigger against DELETE: UPDATE is allowed (the ledger moves spends from reserved to
    # released or refunded itself), there is no hash chain, and neither reconcile nor anything else reads
    # it. The attack: one statement, no trigger dropped, while the sandbox runs:
    #     UPDATE spends SET state = 'refunded'
    # The grant's budget is whole again, so the requester buys three more epsilon-1 answers; setting only
    # the stored answers to 'refunded' instead makes every repeat of one query a fresh noisy draw, and 200
    # repeats average the noise away. Nothing notices.
    import sqlite3
    from contextlib import closing

    from dsbroker.errors import DsbrokerError

    start, ledger, _log = noisy_servers
    client = start()
    for alias in ("r1", "r2", "r3"):
        client.query(GRANT, NOISE_SQL.replace("AS revenue", f"AS {alias}"))
    with pytest.raises(DsbrokerError) as caught:
        client.query(GRANT, NOISE_SQL.replace("AS revenue", "AS r4"))
    assert caught.value.reason == "PRIVACY_BUDGET_EXHAUSTED"
    with closing(sqlite3.connect(ledger, isolation_level=None)) as raw:
        raw.execute("UPDATE spends SET state = 'refunded'")  # allowed: only DELETE has a trigger
    try:
        answered = client.query(GRANT, NOISE_SQL.replace("AS revenue", "AS r5"))
    except DsbrokerError as error:
        assert error.reason in ("PRIVACY_BUDGET_EXHAUSTED", "PRIVACY_LEDGER_TAMPERED"), error.reason
    else:
        pytest.fail(f"the budget came back: a fresh noisy answer, epsilon {answered.noise['epsilon_total_spent']} "
                    "of 3 spent")


def test_a_requester_cannot_make_the_sandbox_keep_evaluation_keys_through_the_broker(own, tmp_path,
                                                                                    key_with_evaluation_keys):
    # The same finding as above, end to end by a requester with a valid certificate and token under a grant
    # that allows encrypted results: the broker forwards the 55 MB context without a look, the requester signs
    # the binding itself (it is its own key), and the sandbox encrypts under it and keeps it cached.
    from broker.client.sdk import BrokerClient
    from dsbroker.errors import DsbrokerError
    from broker.server import start_broker
    from tests.conftest import ENCRYPTED, broker_settings_for, client_tls, policies_with, token_for

    sandbox = own.start()
    policies = policies_with(tmp_path, "results: [aggregate]", "results: [aggregate, encrypted]",
                             without_dominance=ENCRYPTED)
    broker = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", policies=policies))
    try:
        with BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(), tls=client_tls()) as client:
            try:
                client.query(GRANT, "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY 1",
                             encryption_key=key_with_evaluation_keys, timeout=60)
            except DsbrokerError as error:
                assert error.reason in ("ENCRYPTION_KEY_INVALID", "ENCRYPTION_KEY_PRIVATE"), error.reason
            else:
                pytest.fail("the sandbox encrypted under a 55 MB context with Galois and relinearisation keys")
    finally:
        broker.stop()
