"""The sandboxes witness the broker's checkpoints: a log whose newest checkpoints were deleted and
whose records were cut or rewritten is found by ``audit reconcile``; a witness refuses a checkpoint
that forks from the chain it witnessed, and the broker then fails closed. Real gRPC servers, real
DuckDB, the log on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import time
from contextlib import closing

import grpc
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.access_log.log import AccessLog, AccessRecord
from dsbroker.records.checkpoints import load_or_create_signing_key, public_key_path, sign_checkpoint
from dsbroker.records.merkle import MerkleAccumulator, consistency_proof, merkle_root
from dsbroker.records.access_record import GENESIS_HASH
from broker.cli.main import main
from broker.client.sdk import BrokerClient
from dsbroker.errors import DsbrokerError
from broker.dev.keys import sandbox_settings
from dsbroker.rpc.status import error_from_rpc_error
from broker.server import start_broker
from sandbox.settings import SandboxSettings
from dsbroker.identity.tls import open_channel
from sandbox.demo.data import DEMO_DATASETS
from sandbox.server import start_sandbox
from sandbox.v1 import sandbox_service_pb2 as pb
from sandbox.v1 import sandbox_service_pb2_grpc as pb_grpc
from tests.conftest import shared_data
from tests.conftest import GRANT, broker_settings_for, client_tls, dev_keys, sandbox_client_tls, token_for
from tests.test_access_log import restore_triggers, rewrite_consistently, tamper

SQL = "SELECT street_code, COUNT(DISTINCT taxpayer_id) AS n FROM tax.declarations GROUP BY 1"
EVERY = 4
WAIT_SECONDS = 60.0  # how long the tests wait for the witness thread, polling; never a short timer


@pytest.fixture
def broker_key(tmp_path):
    """The broker's log key, made before the sandbox starts so that the sandbox can pin it."""
    path = tmp_path / "access-log.key"
    load_or_create_signing_key(path)
    return path


@pytest.fixture
def witness(demo_db, tmp_path, broker_key):
    """A sandbox that witnesses checkpoints signed by ``broker_key``, with a ledger of its own."""
    running = start_sandbox(SandboxSettings(
        listen="127.0.0.1:0", **shared_data(demo_db), sandbox_id="witness-a", datasets=DEMO_DATASETS,
        execution_ledger=str(tmp_path / "executions.sqlite"),
        broker_log_keys=(str(public_key_path(broker_key)),), **sandbox_settings(dev_keys())))
    running.ledger = tmp_path / "executions.sqlite"
    yield running
    running.stop()


def start(witness, tmp_path, location, broker_key):
    return start_broker(broker_settings_for(witness.port, tmp_path / "access-log.sqlite", access_log=location,
                                            access_log_key=str(broker_key), checkpoint_every=EVERY))


def serve(witness, tmp_path, location, broker_key, *, queries: int) -> None:
    """Start a broker on ``location``, answer ``queries`` queries, and stop it (a last checkpoint)."""
    running = start(witness, tmp_path, location, broker_key)
    try:
        with BrokerClient(f"127.0.0.1:{running.port}", token=token_for(), tls=client_tls()) as client:
            for _ in range(queries):
                client.query(GRANT, SQL)
    finally:
        running.stop()


def reconcile(location, ledger, *extra):
    return CliRunner().invoke(main, ["audit", "reconcile", "--log", location, "--ledger", str(ledger), *extra])


def checkpoints_of(location):
    log = AccessLog(location)
    try:
        return log.checkpoints()
    finally:
        log.close()


@pytest.mark.parametrize("attack", ["cut", "rewritten"])
def test_deleting_the_newest_checkpoints_and_cutting_or_rewriting_what_they_covered_is_found(
        witness, tmp_path, store_location, broker_key, attack):
    serve(witness, tmp_path, store_location, broker_key, queries=6)
    assert reconcile(store_location, witness.ledger).exit_code == 0
    checkpoints = checkpoints_of(store_location)
    assert len(checkpoints) >= 3
    kept = checkpoints[-3]
    tamper(store_location, f"DELETE FROM access_log_checkpoints WHERE size > {kept.size}")
    if attack == "cut":
        tamper(store_location, f"DELETE FROM access_log WHERE seq > {kept.size}")
        restore_triggers(store_location)  # a careful writer leaves no missing trigger behind
        # What is left is sealed and matches its checkpoints: the log alone cannot tell.
        verified = CliRunner().invoke(main, ["audit", "verify", "--log", store_location, "--pinned-key",
                                             str(public_key_path(broker_key))])
        assert verified.exit_code == 0, verified.output
    else:
        rewrite_consistently(store_location, kept.size + 1)
    found = reconcile(store_location, witness.ledger)
    assert found.exit_code == 7, found.output
    expected = "WITNESSED_HEAD_MISSING" if attack == "cut" else "WITNESSED_HEAD_MISMATCH"
    assert expected in found.output and f"size {checkpoints[-1].size}" in found.output
    assert f"records {kept.size + 1}.." in found.output


# The records the made-up checkpoints cover: their roots are real trees over these, so that each checkpoint
# can carry the consistency proof from the one it names (as the broker sends it).
LEAVES = [hashlib.sha256(f"record {i}".encode()).hexdigest() for i in range(64)]
SIZES: dict[str, int] = {GENESIS_HASH: 0}  # checkpoint hash -> size, as chain() made them


def proof_for(checkpoint, leaves=LEAVES) -> list[str]:
    """The honest consistency proof from the checkpoint ``checkpoint`` names to it, over ``leaves``."""
    since = SIZES.get(checkpoint.prev, 0)
    return consistency_proof(MerkleAccumulator().extend(leaves[:since]), leaves[since:checkpoint.size])


def call_witness(port: int, checkpoints, proofs=None) -> pb.WitnessCheckpointResponse:
    proofs = proofs if proofs is not None else [proof_for(c) for c in checkpoints]
    request = pb.WitnessCheckpointRequest(checkpoints=[pb.LogCheckpoint(
        size=c.size, root=c.root, prev=c.prev, sign_time=c.at, key_id=c.key_id, signature=c.signature,
        consistency_proof_hashes=proof) for c, proof in zip(checkpoints, proofs, strict=True)])
    with open_channel(f"127.0.0.1:{port}", tls=sandbox_client_tls(), options=[]) as channel:
        try:
            return pb_grpc.SandboxServiceStub(channel).WitnessCheckpoint(request, timeout=10)
        except grpc.RpcError as rpc_error:
            raise error_from_rpc_error(rpc_error) from None


def chain(key, sizes, *, start=None, leaves=LEAVES):
    """Checkpoints at ``sizes`` over the first records of ``leaves``, each naming the one before."""
    made, prev = [], start
    for size in sizes:
        checkpoint = sign_checkpoint(key, size=size, root=merkle_root(leaves[:size]),
                                     prev=prev.hash() if prev else None,
                                     at=dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc))
        SIZES[checkpoint.hash()] = size
        made.append(checkpoint)
        prev = checkpoint
    return made


def refused(port, checkpoints, proofs=None) -> DsbrokerError:
    with pytest.raises(DsbrokerError) as caught:
        call_witness(port, checkpoints, proofs)
    return caught.value


def test_a_witness_countersigns_only_checkpoints_that_extend_what_it_witnessed(witness, broker_key, sandbox):
    from dsbroker.records.checkpoints import Countersignature, countersignature_valid, load_public_key

    key = load_or_create_signing_key(broker_key)
    first, second, third = chain(key, [2, 5, 9])
    answer = call_witness(witness.port, [first])
    countersignature = Countersignature(checkpoint=answer.checkpoint_hash, size=answer.size, root=answer.root,
                                        witness=answer.witness, at=answer.witness_time, key_id=answer.key_id,
                                        signature=answer.signature)
    witness_key = witness.ledger.with_name(witness.ledger.name + ".witness.pub")
    assert (answer.size, answer.checkpoint_hash, answer.witness) == (2, first.hash(), "witness-a")
    assert countersignature_valid(countersignature, load_public_key(witness_key))
    assert witness_key.with_suffix(".key").stat().st_mode & 0o077 == 0
    assert call_witness(witness.port, [first]).checkpoint_hash == first.hash()  # again: the same answer

    gap = refused(witness.port, [third])  # the one in between is missing
    assert (gap.code, gap.reason, gap.metadata["witnessed_size"]) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                                      "WITNESS_GAP", "2")
    assert call_witness(witness.port, [second, third]).size == 9

    fork = chain(key, [12], start=second)[0]  # signed by the broker, but branching off an older head
    forked = refused(witness.port, [fork])
    assert (forked.code, forked.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CHECKPOINT_FORK")
    shorter = refused(witness.port, chain(key, [7], start=second))  # at or below the head, and not witnessed
    assert shorter.reason == "CHECKPOINT_FORK"
    anew = refused(witness.port, chain(key, [40]))  # a log started over (dropped and refilled): a fork too
    assert anew.reason == "CHECKPOINT_FORK"
    forged = refused(witness.port, chain(ed25519.Ed25519PrivateKey.generate(), [12], start=third))
    assert (forged.code, forged.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CHECKPOINT_NOT_TRUSTED")
    assert refused(witness.port, []).code == grpc.StatusCode.INVALID_ARGUMENT
    unpinned = refused(sandbox.port, [first])  # the shared test sandbox pins no broker key
    assert (unpinned.code, unpinned.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "WITNESS_NOT_CONFIGURED")

    assert call_witness(witness.port, chain(key, [12], start=third)).size == 12  # it kept serving
    from dsbroker.records.witnessed import read_witnessed

    entries = read_witnessed(witness.ledger)
    assert [(e.kind, e.size) for e in entries] == [("witnessed", 2), ("witnessed", 5), ("witnessed", 9),
                                                   ("fork", 12), ("fork", 7), ("fork", 40), ("witnessed", 12)]


REWRITTEN = LEAVES[:3] + [hashlib.sha256(b"a record rewritten").hexdigest()] + LEAVES[4:]


@pytest.mark.parametrize("proof", ["the forger's own", "none", "a node changed", "one node short"])
def test_a_witness_refuses_a_checkpoint_whose_tree_does_not_extend_the_witnessed_one(witness, broker_key, proof):
    # The broker's key signs a checkpoint that names the witnessed head and covers more records, but over a
    # tree in which a witnessed record (the 4th) was rewritten: no proof from the witnessed root verifies.
    key = load_or_create_signing_key(broker_key)
    (first,) = chain(key, [8])
    call_witness(witness.port, [first])
    (fork,) = chain(key, [13], start=first, leaves=REWRITTEN)
    honest = proof_for(fork, REWRITTEN)  # what a forger can make: consistent with its own old tree only
    sent = {"the forger's own": honest, "none": [], "a node changed": ["0" * 64] + honest[1:],
            "one node short": honest[:-1]}[proof]
    refused_fork = refused(witness.port, [fork], [sent])
    assert (refused_fork.code, refused_fork.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CHECKPOINT_FORK")
    assert refused_fork.metadata["witnessed_size"] == "8"
    (extension,) = chain(key, [13], start=first)
    assert call_witness(witness.port, [extension]).size == 13, "the head did not move; the true log extends it"
    from dsbroker.records.witnessed import read_witnessed

    assert [(e.kind, e.size) for e in read_witnessed(witness.ledger)] == [("witnessed", 8), ("fork", 13),
                                                                          ("witnessed", 13)]


def test_a_proof_longer_than_any_tree_needs_is_refused_unread(witness, broker_key):
    (first,) = chain(load_or_create_signing_key(broker_key), [8])
    too_long = refused(witness.port, [first], [["0" * 64] * 129])
    assert (too_long.code, too_long.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CHECKPOINTS_INVALID")


def test_a_witness_catches_up_on_checkpoints_signed_before_it_and_reconcile_checks_its_countersignatures(
        witness, tmp_path, store_location, broker_key):
    log = AccessLog(store_location, signing_key=load_or_create_signing_key(broker_key), checkpoint_every=EVERY)
    for i in range(10):
        log.append(AccessRecord(event="call", decision="allow", subject=f"before-{i}"))
    log.close()  # checkpoints at 4, 8 and 10 that no sandbox has seen
    serve(witness, tmp_path, store_location, broker_key, queries=1)
    from dsbroker.records.witnessed import read_witnessed

    witnessed = [e.size for e in read_witnessed(witness.ledger) if e.kind == "witnessed"]
    assert witnessed == [c.size for c in checkpoints_of(store_location)] and witnessed[:3] == [4, 8, 10]
    witness_key = str(witness.ledger.with_name(witness.ledger.name + ".witness.pub"))
    assert reconcile(store_location, witness.ledger, "--witness-key", witness_key).exit_code == 0
    other = tmp_path / "other.key"
    load_or_create_signing_key(other)
    wrong = reconcile(store_location, witness.ledger, "--witness-key", str(public_key_path(other)))
    assert wrong.exit_code == 7 and "WITNESS_SIGNATURE_INVALID" in wrong.output

    # The witness table dropped from (a copy of) the ledger: reconcile says so rather than pass.
    copy = tmp_path / "copy.sqlite"
    with closing(sqlite3.connect(witness.ledger)) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)
    with closing(sqlite3.connect(copy)) as raw:
        raw.execute("DROP TABLE witnessed_checkpoints")
        raw.commit()
    dropped = reconcile(store_location, copy)
    assert dropped.exit_code == 7 and "WITNESS_TABLE_MISSING" in dropped.output


def test_a_broker_whose_log_was_rolled_back_is_refused_by_its_witness_and_fails_closed(
        witness, tmp_path, store_location, broker_key):
    serve(witness, tmp_path, store_location, broker_key, queries=6)
    kept = checkpoints_of(store_location)[-3]
    tamper(store_location, f"DELETE FROM access_log_checkpoints WHERE size > {kept.size}",
           f"DELETE FROM access_log WHERE seq > {kept.size}")
    running = start(witness, tmp_path, store_location, broker_key)  # the broker cannot tell: it goes on
    try:
        with BrokerClient(f"127.0.0.1:{running.port}", token=token_for(), tls=client_tls()) as client:
            deadline, reason = time.monotonic() + WAIT_SECONDS, None
            while time.monotonic() < deadline:
                try:
                    client.query(GRANT, SQL)  # each adds records; at the next checkpoint the witness refuses
                except DsbrokerError as error:
                    reason = (error.code, error.reason)
                    break
            assert reason == (grpc.StatusCode.UNAVAILABLE, "ACCESS_LOG_TAMPERED")
    finally:
        running.stop()
    from dsbroker.records.witnessed import read_witnessed

    assert any(e.kind == "fork" for e in read_witnessed(witness.ledger))
    found = reconcile(store_location, witness.ledger)
    assert found.exit_code == 7 and "WITNESS_FORK" in found.output


def test_the_logs_checkpoints_deleted_from_its_database_are_found_by_reconcile(
        witness, tmp_path, store_location, broker_key):
    serve(witness, tmp_path, store_location, broker_key, queries=3)
    tamper(store_location, "DELETE FROM access_log_checkpoints")
    restore_triggers(store_location)  # a careful writer leaves no missing trigger behind
    verified = CliRunner().invoke(main, ["audit", "verify", "--log", store_location, "--pinned-key",
                                         str(public_key_path(broker_key))])
    assert verified.exit_code == 0, verified.output  # every record is still sealed; no checkpoint is only a note
    found = reconcile(store_location, witness.ledger)
    assert found.exit_code == 7 and "WITNESSED_CHECKPOINT_MISSING" in found.output


def start_witness_again(demo_db, tmp_path, broker_key):
    return start_sandbox(SandboxSettings(
        listen="127.0.0.1:0", **shared_data(demo_db), sandbox_id="witness-a", datasets=DEMO_DATASETS,
        execution_ledger=str(tmp_path / "executions.sqlite"),
        broker_log_keys=(str(public_key_path(broker_key)),), **sandbox_settings(dev_keys())))


@pytest.mark.parametrize("loss", ["table dropped", "entries deleted"])
def test_a_witness_history_lost_from_the_ledger_stays_lost_across_a_restart(witness, demo_db, tmp_path, broker_key,
                                                                            store_location, loss):
    # The next start used to create the witness table again, empty: reconcile then passed a log whose
    # witnessed end was cut off. The ledger's mark that it has witnessed outlives the table.
    serve(witness, tmp_path, store_location, broker_key, queries=2)
    witness.stop()
    with closing(sqlite3.connect(witness.ledger, isolation_level=None)) as raw:
        if loss == "table dropped":
            raw.execute("DROP TABLE witnessed_checkpoints")
        else:
            raw.execute("DROP TRIGGER witnessed_checkpoints_no_delete")
            raw.execute("DELETE FROM witnessed_checkpoints")
    restarted = start_witness_again(demo_db, tmp_path, broker_key)
    try:
        key = load_or_create_signing_key(broker_key)
        lost = refused(restarted.port, chain(key, [2]))
        assert (lost.code, lost.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "WITNESS_HISTORY_LOST")
    finally:
        restarted.stop()
    found = reconcile(store_location, witness.ledger)
    expected = "WITNESS_TABLE_MISSING" if loss == "table dropped" else "WITNESS_HISTORY_LOST"
    assert found.exit_code == 7 and expected in found.output, found.output


def test_a_ledger_witnessed_before_the_mark_existed_is_marked_and_goes_on(witness, demo_db, tmp_path, broker_key):
    key = load_or_create_signing_key(broker_key)
    first, second = chain(key, [3, 6])
    call_witness(witness.port, [first])
    witness.stop()
    with closing(sqlite3.connect(witness.ledger, isolation_level=None)) as raw:
        raw.execute("DROP TABLE ledger_marks")  # as an older dsbroker left it
    restarted = start_witness_again(demo_db, tmp_path, broker_key)
    try:
        assert call_witness(restarted.port, [second]).size == 6
    finally:
        restarted.stop()
    from dsbroker.records.witnessed import witness_marked

    assert witness_marked(witness.ledger)
