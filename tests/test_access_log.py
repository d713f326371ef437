"""The access log on both stores: append-only, chained, checkpointed, and every kind of tampering is
found at the first bad sequence number."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import asdict, replace

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.access_log.log import AccessLog, AccessRecord, RecordFilter
from dsbroker.records.checkpoints import (Checkpoint, load_or_create_signing_key, load_public_key, public_key_path,
                                      sign_checkpoint, signature_valid)
from dsbroker.database import is_postgres
from dsbroker.records.merkle import MerkleAccumulator, merkle_root
from dsbroker.records.access_record import record_hash, seal, to_row
from broker.audit.verify import verify_log
from broker.cli.main import main
from dsbroker.errors import AccessLogError, ConfigError

RECORDS = 10
EVERY = 4  # checkpoints at 4, 8 and (on close) 10


@pytest.fixture
def location(store_location):
    """A SQLite file or a fresh PostgreSQL schema (the store suite's fixture)."""
    return store_location


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "audit.key"
    load_or_create_signing_key(path)
    return path


def fill(location, key_file, n: int = RECORDS) -> None:
    log = AccessLog(location, signing_key=load_or_create_signing_key(key_file), checkpoint_every=EVERY)
    for i in range(n):
        log.append(AccessRecord(event="query.decision", decision="deny", department="d", sql=f"SELECT {i}"))
    log.close()


def report(location, key_file, kept=()):
    log = AccessLog(location)
    try:
        return verify_log(log.store, public_keys=[load_public_key(public_key_path(key_file))], kept_checkpoints=kept)
    finally:
        log.close()


def raw(location):
    """A connection that bypasses the append-only triggers, as an attacker with the database would."""
    if is_postgres(location):
        import psycopg

        connection = psycopg.connect(location, autocommit=True)
        connection.execute("SET session_replication_role = replica")
        return connection
    connection = sqlite3.connect(location, isolation_level=None)
    for table in ("access_log", "access_log_checkpoints"):
        connection.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
        connection.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    return connection


def tamper(location, *statements: str, parameters=()) -> None:
    """Edit the log around its append-only triggers, as a writer without a key would (they stay off on
    SQLite: :func:`restore_triggers` puts them back, as a careful writer would)."""
    with closing(raw(location)) as connection:
        for statement in statements:
            connection.execute(statement.replace("?", "%s") if is_postgres(location) else statement, parameters)


def restore_triggers(location) -> None:
    """Put the log's append-only triggers back, as opening it to write does."""
    AccessLog(location).close()


def stored_records(location):
    log = AccessLog(location)
    try:
        return log.records()
    finally:
        log.close()


def test_an_intact_log_verifies_with_its_checkpoints(location, key_file):
    fill(location, key_file)
    found = report(location, key_file)
    assert found.intact and found.records == RECORDS
    assert [c.size for c in AccessLog(location).checkpoints()] == [4, 8, 10]


def test_the_store_refuses_update_delete_and_truncate(location, key_file):
    fill(location, key_file)
    statements = ["UPDATE access_log SET decision = 'allow' WHERE seq = 2", "DELETE FROM access_log WHERE seq = 2",
                  "DELETE FROM access_log_checkpoints WHERE size = 4"]
    if is_postgres(location):
        import psycopg

        statements.append("TRUNCATE access_log")
        errors = psycopg.Error
        connect = lambda: psycopg.connect(location, autocommit=True)  # noqa: E731
    else:
        errors = sqlite3.DatabaseError
        connect = lambda: sqlite3.connect(location, isolation_level=None)  # noqa: E731
    for statement in statements:
        with closing(connect()) as connection, pytest.raises(errors, match="append-only"):
            connection.execute(statement)
    assert report(location, key_file).intact


# Each way of tampering, and the first sequence number verify must name.
TAMPERING = {
    "a record edited": (["UPDATE access_log SET sql = 'SELECT 99' WHERE seq = 3"], 3, "RECORD_ALTERED"),
    "a record deleted": (["DELETE FROM access_log WHERE seq = 6"], 6, "RECORDS_MISSING"),
    "two records swapped": (["UPDATE access_log SET seq = -seq WHERE seq IN (2, 3)",
                             "UPDATE access_log SET seq = 3 WHERE seq = -2",
                             "UPDATE access_log SET seq = 2 WHERE seq = -3"], 2, "CHAIN_BROKEN"),
    "a record inserted in the middle": (["UPDATE access_log SET seq = -seq WHERE seq >= 5",
                                         "UPDATE access_log SET seq = 1 - seq WHERE seq < 0",
                                         "INSERT INTO access_log SELECT 5, 'forged-event', at, event, decision, "
                                         "subject, department, token_id, client, request_id, grant_id, "
                                         "policy_version, policy_sha256, sql, sql_sha256, rewritten_sql, "
                                         "rewritten_sql_sha256, reason, detail, prev_hash, hash, sql_bytes, "
                                         "rewritten_sql_bytes, seal_key_id, seal FROM access_log "
                                         "WHERE seq = 4"], 5, "CHAIN_BROKEN"),
    "the last records cut off": (["DELETE FROM access_log WHERE seq > 7"], 8, "LOG_TRUNCATED"),
    "a checkpoint's root replaced": (["UPDATE access_log_checkpoints SET root = "
                                      "'0000000000000000000000000000000000000000000000000000000000000000' "
                                      "WHERE size = 8"], 8, "CHECKPOINT_FORGED"),
    "a checkpoint removed": (["DELETE FROM access_log_checkpoints WHERE size = 4"], 8, "CHECKPOINT_CHAIN_BROKEN"),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_tampering_is_found_at_the_first_bad_record(location, key_file, case):
    statements, first_bad, kind = TAMPERING[case]
    fill(location, key_file)
    tamper(location, *statements)
    found = report(location, key_file)
    assert not found.intact
    assert (found.problems[0].seq, found.problems[0].kind) == (first_bad, kind), found.problems


def rewrite_consistently(location, seq: int) -> None:
    """Edit record ``seq`` and recompute every hash after it: the chain alone no longer shows the edit."""
    records = stored_records(location)
    prev = records[seq - 2].hash if seq > 1 else records[0].prev_hash
    with closing(raw(location)) as connection:
        for record in records[seq - 1:]:
            changed = replace(record, sql="SELECT 'nothing to see'" if record.seq == seq else record.sql,
                              prev_hash=prev)
            changed = replace(changed, hash=record_hash(changed))
            row = to_row(changed)
            placeholder = "%s" if is_postgres(location) else "?"
            connection.execute(f"UPDATE access_log SET sql = {placeholder}, prev_hash = {placeholder}, "
                               f"hash = {placeholder} WHERE seq = {placeholder}",
                               (row["sql"], row["prev_hash"], row["hash"], record.seq))
            prev = changed.hash
    restore_triggers(location)


def test_a_consistently_rewritten_chain_is_caught_by_the_signed_checkpoint(location, key_file):
    fill(location, key_file)
    rewrite_consistently(location, 6)
    found = report(location, key_file)
    # The records verify one by one, but their seals do not from 6 on; the checkpoint at 8 no longer
    # matches, the one at 4 still does.
    assert [(p.seq, p.kind) for p in found.problems] == [(6, "RECORD_UNSEALED"), (6, "CHECKPOINT_MISMATCH"),
                                                         (6, "CHECKPOINT_MISMATCH")]
    assert "5..8" in found.problems[1].message


def test_a_checkpoint_signed_with_another_key_is_forged(location, key_file):
    fill(location, key_file)
    log = AccessLog(location)
    latest = log.checkpoints()[-1]
    log.close()
    forged = sign_checkpoint(ed25519.Ed25519PrivateKey.generate(), size=latest.size, root=latest.root,
                             prev=latest.prev, at=dt.datetime.now(dt.timezone.utc))
    values = asdict(forged)
    with closing(raw(location)) as connection:
        placeholder = "%s" if is_postgres(location) else "?"
        connection.execute("DELETE FROM access_log_checkpoints WHERE size = 10")
        connection.execute(f"INSERT INTO access_log_checkpoints (size, root, prev, at, key_id, signature) VALUES "
                           f"({', '.join([placeholder] * 6)})",
                           tuple(values[c] for c in ("size", "root", "prev", "at", "key_id", "signature")))
    found = report(location, key_file)
    assert (found.problems[0].seq, found.problems[0].kind) == (10, "CHECKPOINT_FORGED")
    assert "a different key" in found.problems[0].message


def test_a_kept_checkpoint_catches_a_rollback_that_also_removed_the_checkpoints(location, key_file):
    fill(location, key_file)
    log = AccessLog(location)
    kept = log.checkpoints()[-1]  # the auditor's copy at size 10
    log.close()
    tamper(location, "DELETE FROM access_log WHERE seq > 6", "DELETE FROM access_log_checkpoints WHERE size > 4")
    assert report(location, key_file).intact  # without the kept copy, a clean cut is invisible
    found = report(location, key_file, kept=[kept])
    assert (found.problems[0].seq, found.problems[0].kind) == (7, "LOG_TRUNCATED")


def test_a_kept_checkpoint_catches_a_log_shown_differently(location, key_file):
    fill(location, key_file)
    log = AccessLog(location)
    kept = log.checkpoints()[-1]
    log.close()
    rewrite_consistently(location, 9)
    tamper(location, "DELETE FROM access_log_checkpoints WHERE size = 10")
    found = report(location, key_file, kept=[kept])
    assert [(p.seq, p.kind) for p in found.problems] == [(9, "RECORD_UNSEALED"), (9, "CHECKPOINT_MISMATCH")]


def test_a_kept_checkpoint_not_signed_by_the_pinned_key_is_refused(location, key_file):
    fill(location, key_file)
    log = AccessLog(location)
    kept = replace(log.checkpoints()[-1], root="ab" * 32)
    log.close()
    found = report(location, key_file, kept=[kept])
    assert {p.kind for p in found.problems} == {"CHECKPOINT_FORGED", "CHECKPOINT_MISMATCH"}


def test_reopening_continues_the_chain_and_the_checkpoints(location, key_file):
    fill(location, key_file)
    fill(location, key_file, n=3)
    found = report(location, key_file)
    assert found.intact and found.records == RECORDS + 3 and found.checkpoints == 4


def test_a_checkpoint_is_signed_when_its_interval_passes(location, key_file):
    log = AccessLog(location, signing_key=load_or_create_signing_key(key_file), checkpoint_seconds=0.2)
    log.append(AccessRecord(event="call", decision="allow"))
    deadline = time.monotonic() + 10
    while not log.checkpoints() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [c.size for c in log.checkpoints()] == [1]
    assert log.checkpoint().size == 1  # nothing new: the same checkpoint
    log.append(AccessRecord(event="call", decision="allow"))
    assert log.checkpoint().size == 2  # on request, at once
    log.close()


def test_a_record_committed_without_its_own_flush_is_visible_at_once_and_chained(location, key_file):
    log = AccessLog(location, signing_key=load_or_create_signing_key(key_file))
    decision = log.append(AccessRecord(event="query.decision", decision="allow"))
    result = log.append(AccessRecord(event="query.result", decision="released", detail={"decision_seq": decision}),
                        synced=False)
    reader = AccessLog(location)
    assert [r.seq for r in reader.records()] == [decision, result]
    reader.close()
    log.close()
    found = report(location, key_file)
    assert found.intact and not [w for w in found.warnings if w.kind == "DECISION_WITHOUT_RELEASE"]


def test_concurrent_appends_make_one_gapless_chain(location, key_file):
    log = AccessLog(location, signing_key=load_or_create_signing_key(key_file), checkpoint_every=50)
    seqs: list[int] = []

    def client(i: int) -> None:
        for j in range(25):
            seqs.append(log.append(AccessRecord(event="call", decision="allow", subject=f"c{i}", sql=f"{j}")))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert sorted(seqs) == list(range(1, 401))
    found = report(location, key_file)
    assert found.intact and found.records == 400


def test_two_brokers_sharing_one_store_build_one_chain(location, key_file):
    key = load_or_create_signing_key(key_file)
    first, second = (AccessLog(location, signing_key=key, checkpoint_every=7) for _ in range(2))
    threads = [threading.Thread(target=lambda log=log: [log.append(AccessRecord(event="call", decision="allow"))
                                                        for _ in range(30)]) for log in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first.close()
    second.close()
    found = report(location, key_file)
    assert found.intact and found.records == 60


def test_a_failed_write_refuses_the_access_and_the_log_recovers(location, key_file):
    log = AccessLog(location, signing_key=load_or_create_signing_key(key_file))
    log.append(AccessRecord(event="call", decision="allow"))
    tamper(location, "ALTER TABLE access_log RENAME TO access_log_gone")
    with pytest.raises(AccessLogError) as caught:
        log.append(AccessRecord(event="query.decision", decision="allow"))
    assert caught.value.code.name == "UNAVAILABLE" and "refused" in caught.value.message
    tamper(location, "ALTER TABLE access_log_gone RENAME TO access_log")
    assert log.append(AccessRecord(event="call", decision="allow")) == 2
    log.close()
    assert report(location, key_file).intact


def test_filters_and_pages(location, key_file):
    log = AccessLog(location, signing_key=load_or_create_signing_key(key_file))
    for i in range(6):
        log.append(AccessRecord(event="query.decision" if i % 2 else "call", decision="allow",
                                department="a" if i < 3 else "b", grant_id=f"g{i % 3}"))
    assert [r.seq for r in log.records(where=RecordFilter(department="b"))] == [4, 5, 6]
    assert [r.seq for r in log.records(where=RecordFilter(event="call", department="a"))] == [1, 3]
    assert [r.seq for r in log.records(after=2, limit=2)] == [3, 4]
    assert [r.seq for r in log.records(where=RecordFilter(grant_id="g1"))] == [2, 5]
    first = log.records()[0].at
    assert log.records(where=RecordFilter(until=first)) == []
    log.close()


def test_records_hash_the_sql_and_never_hold_anything_but_what_they_were_given(location, key_file):
    log = AccessLog(location, signing_key=load_or_create_signing_key(key_file))
    log.append(AccessRecord(event="query.decision", decision="allow", sql="SELECT 1", rewritten_sql="SELECT 2"))
    record = log.records()[0]
    log.close()
    assert record.sql_sha256 == hashlib.sha256(b"SELECT 1").hexdigest()
    assert record.rewritten_sql_sha256 == hashlib.sha256(b"SELECT 2").hexdigest()


def test_a_log_from_another_version_is_refused_clearly(tmp_path):
    path = tmp_path / "old.sqlite"
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE access_log (seq INTEGER PRIMARY KEY, hash TEXT)")
    with pytest.raises(ConfigError, match="another version"):
        AccessLog(path)


def test_the_merkle_root_matches_rfc_6962_splitting():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(13)]

    def reference(items):
        if len(items) == 1:
            return hashlib.sha256(b"\x00" + bytes.fromhex(items[0])).digest()
        split = 1 << ((len(items) - 1).bit_length() - 1)
        return hashlib.sha256(b"\x01" + reference(items[:split]) + reference(items[split:])).digest()

    for n in range(1, 14):
        assert merkle_root(hashes[:n]) == reference(hashes[:n]).hex()
    assert MerkleAccumulator().root() == hashlib.sha256(b"").hexdigest()


def test_checkpoints_round_trip_and_a_changed_field_breaks_the_signature():
    key = ed25519.Ed25519PrivateKey.generate()
    checkpoint = sign_checkpoint(key, size=3, root="aa" * 32, prev=None, at=dt.datetime.now(dt.timezone.utc))
    again = Checkpoint.from_json(checkpoint.to_json())
    assert again == checkpoint and signature_valid(again, key.public_key())
    assert not signature_valid(replace(again, size=4), key.public_key())
    with pytest.raises(ConfigError):
        Checkpoint.from_json("{}")


def test_the_cli_verify_names_the_first_bad_record_and_exits_non_zero(tmp_path, key_file):
    location = str(tmp_path / "log.sqlite")
    fill(location, key_file)
    runner = CliRunner()
    pub = str(public_key_path(key_file))
    ok = runner.invoke(main, ["audit", "verify", "--log", location, "--pinned-key", pub])
    assert ok.exit_code == 0 and "intact" in ok.output
    tamper(location, "UPDATE access_log SET reason = 'X' WHERE seq = 5")
    bad = runner.invoke(main, ["audit", "verify", "--log", location, "--pinned-key", pub])
    assert bad.exit_code == 7 and "seq 5:" in bad.output


# -- a database writer without a broker key --------------------------------------------------------

def insert_rows(location, records) -> None:
    """Insert ``records`` as rows, the way anyone who can write the log's database could."""
    placeholder = "%s" if is_postgres(location) else "?"
    with closing(raw(location)) as connection:
        for record in records:
            row = to_row(record)
            connection.execute(f"INSERT INTO access_log ({', '.join(row)}) VALUES "
                               f"({', '.join([placeholder] * len(row))})", tuple(row.values()))


def forged(seq: int, prev_hash: str, **fields):
    """A record no broker wrote, with a hash that chains it correctly after ``prev_hash``."""
    return seal(AccessRecord(event="query.decision", decision="allow", department="d",
                             sql="SELECT 'written by the DBA'", **fields),
                seq=seq, event_id=f"forged-{seq}", at=dt.datetime.now(dt.timezone.utc).isoformat(), prev_hash=prev_hash)


def writing_log(location, key_file, *, every: int = EVERY) -> AccessLog:
    log = AccessLog(location, signing_key=load_or_create_signing_key(key_file), checkpoint_every=every)
    for i in range(5):
        log.append(AccessRecord(event="query.decision", decision="deny", department="d", sql=f"SELECT {i}"))
    return log


def reopened(location, key_file, log: AccessLog, broker: str) -> AccessLog:
    """The log as the broker goes on with it: the same one, or after a restart (which forgets what it wrote)."""
    if broker == "running":
        return log
    log.close()
    return AccessLog(location, signing_key=load_or_create_signing_key(key_file), checkpoint_every=EVERY)


def assert_tampered(log: AccessLog) -> None:
    with pytest.raises(AccessLogError) as refused:
        log.append(AccessRecord(event="query.decision", decision="allow", department="d"))
    assert (refused.value.code.name, refused.value.reason) == ("UNAVAILABLE", "ACCESS_LOG_TAMPERED")


@pytest.mark.parametrize("broker", ["running", "restarted"])
def test_a_record_inserted_at_the_tail_is_not_chained_onto_and_verify_finds_it(location, key_file, broker):
    log = writing_log(location, key_file)
    tail = log.records()[-1]
    insert_rows(location, [forged(tail.seq + 1, tail.hash)])
    log = reopened(location, key_file, log, broker)
    assert_tampered(log)
    assert log.checkpoint() is None or log.checkpoint().size <= tail.seq  # nor signed into a checkpoint
    log.close()
    assert max(c.size for c in AccessLog(location).checkpoints()) <= tail.seq
    found = report(location, key_file)
    assert (found.problems[0].seq, found.problems[0].kind) == (tail.seq + 1, "RECORD_UNSEALED"), found.problems


@pytest.mark.parametrize("broker", ["running", "restarted"])
def test_a_record_inserted_in_the_middle_with_every_later_hash_recomputed_is_refused_and_found(location, key_file,
                                                                                              broker):
    log = writing_log(location, key_file)
    records = log.records()
    tamper(location, "UPDATE access_log SET seq = -seq WHERE seq >= 3",
           "UPDATE access_log SET seq = 1 - seq WHERE seq < 0")
    # Every record from the inserted one on, re-chained with recomputed hashes (seals, if any, are kept as they were).
    rechained, prev = [forged(3, records[1].hash)], None
    prev = rechained[0].hash
    for record in records[2:]:
        moved = replace(record, seq=record.seq + 1, prev_hash=prev)
        moved = replace(moved, hash=record_hash(moved))
        rechained.append(moved)
        prev = moved.hash
    tamper(location, "DELETE FROM access_log WHERE seq >= 3")
    insert_rows(location, rechained)
    log = reopened(location, key_file, log, broker)
    assert_tampered(log)
    log.close()
    found = report(location, key_file)
    assert (found.problems[0].seq, found.problems[0].kind) == (3, "RECORD_UNSEALED"), found.problems


@pytest.mark.parametrize("broker", ["running", "restarted"])
def test_a_seal_copied_from_another_record_does_not_seal_an_inserted_one(location, key_file, broker):
    log = writing_log(location, key_file)
    records = log.records()
    copied = {"seal_key_id": records[-1].seal_key_id, "seal": records[-1].seal}
    assert copied["seal"], "the broker seals its records"
    insert_rows(location, [replace(forged(records[-1].seq + 1, records[-1].hash), **copied)])
    log = reopened(location, key_file, log, broker)
    assert_tampered(log)
    log.close()
    found = report(location, key_file)
    assert (found.problems[0].seq, found.problems[0].kind) == (records[-1].seq + 1, "RECORD_UNSEALED")


def test_records_removed_from_under_a_running_broker_are_not_written_over(location, key_file):
    log = writing_log(location, key_file)
    tamper(location, "DELETE FROM access_log WHERE seq = 5")  # the last batch
    assert_tampered(log)
    log.close()


def test_a_broker_refuses_a_log_shorter_than_its_checkpoint(location, key_file):
    fill(location, key_file)
    tamper(location, "DELETE FROM access_log WHERE seq > 9")
    log = AccessLog(location, signing_key=load_or_create_signing_key(key_file), checkpoint_every=EVERY)
    assert_tampered(log)
    log.close()


def test_verify_without_a_pinned_key_does_not_call_attacker_signed_checkpoints_intact(tmp_path, key_file):
    location = str(tmp_path / "log.sqlite")
    fill(location, key_file)
    attacker = ed25519.Ed25519PrivateKey.generate()
    resigned, prev = [], None
    for checkpoint in AccessLog(location).checkpoints():
        again = sign_checkpoint(attacker, size=checkpoint.size, root=checkpoint.root, prev=prev,
                                at=dt.datetime.now(dt.timezone.utc))
        resigned.append(again)
        prev = again.hash()
    tamper(location, "DELETE FROM access_log_checkpoints")
    with closing(raw(location)) as connection:
        for checkpoint in resigned:
            values = asdict(checkpoint)
            connection.execute("INSERT INTO access_log_checkpoints (size, root, prev, at, key_id, signature) "
                               "VALUES (?, ?, ?, ?, ?, ?)",
                               tuple(values[c] for c in ("size", "root", "prev", "at", "key_id", "signature")))
    AccessLog(location).close()  # a careful attacker puts the append-only triggers back (opening the log does)
    runner = CliRunner()
    unpinned = runner.invoke(main, ["audit", "verify", "--log", location], env={"DSBROKER_AUDIT_KEY": ""})
    assert unpinned.exit_code != 0 and "NOT verified" in unpinned.output and "intact" not in unpinned.stdout
    as_json = runner.invoke(main, ["audit", "verify", "--log", location, "--json"], env={"DSBROKER_AUDIT_KEY": ""})
    assert as_json.exit_code == unpinned.exit_code and json.loads(as_json.stdout)["verified"] is False
    pinned = runner.invoke(main, ["audit", "verify", "--log", location, "--pinned-key",
                                  str(public_key_path(key_file))])
    assert pinned.exit_code == 7 and "CHECKPOINT_FORGED" in pinned.output


def test_a_long_sql_text_is_stored_cut_with_the_digest_of_the_whole(location, key_file):
    sql = "SELECT COUNT(*) FROM tax.declarations -- " + "片" * 400_000  # 1.2 MB of UTF-8
    rewritten = sql.replace("COUNT(*)", "COUNT(DISTINCT taxpayer_id)")
    log = AccessLog(location, signing_key=load_or_create_signing_key(key_file))
    seq = log.append(AccessRecord(event="query.decision", decision="deny", sql=sql, rewritten_sql=rewritten))
    record = log.store.record(seq)
    log.close()
    for text, stored, digest, size, cut in ((sql, record.sql, record.sql_sha256, record.sql_bytes, record.sql_cut),
                                            (rewritten, record.rewritten_sql, record.rewritten_sql_sha256,
                                             record.rewritten_sql_bytes, record.rewritten_sql_cut)):
        assert len(stored.encode()) <= 16 * 1024 and text.startswith(stored) and cut
        assert digest == hashlib.sha256(text.encode()).hexdigest() and size == len(text.encode())
    assert report(location, key_file).intact
    shown = CliRunner().invoke(main, ["audit", "show", str(seq), "--log", location])
    assert shown.exit_code == 0 and "cut" in shown.output and f"{len(sql.encode()):,}" in shown.output
    as_json = json.loads(CliRunner().invoke(main, ["audit", "show", str(seq), "--log", location, "--json"]).output)
    assert as_json["sql_cut"] is True and as_json["sql_bytes"] == len(sql.encode())


def test_brokers_with_keys_of_their_own_share_one_log_when_each_pins_the_others(location, tmp_path):
    a, b = (load_or_create_signing_key(tmp_path / f"{name}.key") for name in "ab")
    first = AccessLog(location, signing_key=a, peer_keys=[b.public_key()], checkpoint_every=7)
    second = AccessLog(location, signing_key=b, peer_keys=[a.public_key()], checkpoint_every=7)
    threads = [threading.Thread(target=lambda log=log: [log.append(AccessRecord(event="call", decision="allow"))
                                                        for _ in range(30)]) for log in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first.close()
    second.append(AccessRecord(event="call", decision="allow"))  # the tail is b's
    second.close()
    log = AccessLog(location)
    both = verify_log(log.store, public_keys=[a.public_key(), b.public_key()])
    only_a = verify_log(log.store, public_keys=[a.public_key()])
    log.close()
    assert both.intact and both.records == 61
    assert {p.kind for p in only_a.problems} >= {"RECORD_UNSEALED"}
    # A broker that does not pin b's key will not chain onto b's records.
    lone = AccessLog(location, signing_key=a)
    assert_tampered(lone)
    lone.close()


LEGACY_TABLE = ("CREATE TABLE access_log (seq BIGINT PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, at TEXT, event TEXT, "
                "decision TEXT, subject TEXT, department TEXT, token_id TEXT, client TEXT, request_id TEXT, "
                "grant_id TEXT, policy_version INTEGER, policy_sha256 TEXT, sql TEXT, sql_sha256 TEXT, "
                "rewritten_sql TEXT, rewritten_sql_sha256 TEXT, reason TEXT, detail TEXT, prev_hash TEXT, hash TEXT)")
LEGACY_CHECKPOINTS = ("CREATE TABLE access_log_checkpoints (size BIGINT PRIMARY KEY, root TEXT, prev TEXT, at TEXT, "
                      "key_id TEXT, signature TEXT)")


def legacy_log(location, key, n: int, *, checkpointed: int):
    """A log as dsbroker wrote it before seals and bounded SQL: ``n`` records, a checkpoint at ``checkpointed``."""
    from dsbroker.records.access_record import LEGACY_COLUMNS

    records, prev = [], "0" * 64
    for i in range(n):
        record = replace(seal(AccessRecord(event="call", decision="allow", sql=f"SELECT {i}"), seq=i + 1,
                              event_id=f"old-{i}", at="2026-11-01T00:00:00.000000+00:00", prev_hash=prev),
                         sql_bytes=None, rewritten_sql_bytes=None)
        record = replace(record, hash=record_hash(record))
        records.append(record)
        prev = record.hash
    checkpoint = sign_checkpoint(key, size=checkpointed, root=merkle_root(r.hash for r in records[:checkpointed]),
                                 prev=None, at=dt.datetime.now(dt.timezone.utc))
    placeholder = "%s" if is_postgres(location) else "?"
    with closing(raw(location)) as connection:
        connection.execute(LEGACY_TABLE)
        connection.execute(LEGACY_CHECKPOINTS)
        for record in records:
            row = {name: to_row(record)[name] for name in LEGACY_COLUMNS}
            connection.execute(f"INSERT INTO access_log ({', '.join(row)}) VALUES "
                               f"({', '.join([placeholder] * len(row))})", tuple(row.values()))
        values = asdict(checkpoint)
        connection.execute(f"INSERT INTO access_log_checkpoints (size, root, prev, at, key_id, signature) VALUES "
                           f"({', '.join([placeholder] * 6)})",
                           tuple(values[c] for c in ("size", "root", "prev", "at", "key_id", "signature")))
        if not is_postgres(location):
            connection.commit()


def test_a_log_written_before_seals_is_migrated_and_its_checkpoint_vouches_for_its_old_records(location, key_file):
    key = load_or_create_signing_key(key_file)
    legacy_log(location, key, 6, checkpointed=6)  # a broker that stopped cleanly left a checkpoint at its end
    log = AccessLog(location, signing_key=key, checkpoint_every=EVERY)
    for i in range(5):
        log.append(AccessRecord(event="call", decision="allow", sql=f"SELECT new {i}"))
    log.close()
    assert [r.sql_bytes for r in stored_records(location)][5:7] == [None, len("SELECT new 0")]
    found = report(location, key_file)
    assert found.intact and found.records == 11, found.problems
    # Rewritten, the old records are no longer what the checkpoint covers, and nothing seals them (old
    # records are vouched for a checkpoint at a time, so the range starts at the checkpoint before).
    rewrite_consistently(location, 3)
    found = report(location, key_file)
    assert {(p.seq, p.kind) for p in found.problems} >= {(1, "RECORD_UNSEALED"), (1, "CHECKPOINT_MISMATCH")}


def test_a_log_written_before_seals_whose_end_no_checkpoint_covers_is_refused(location, key_file):
    key = load_or_create_signing_key(key_file)
    legacy_log(location, key, 6, checkpointed=4)  # records 5 and 6: a crash, or a DBA's
    log = AccessLog(location, signing_key=key)
    assert_tampered(log)
    log.close()
    found = report(location, key_file)
    assert (found.problems[0].seq, found.problems[0].kind) == (5, "RECORD_UNSEALED")


@pytest.mark.parametrize("size", ["beyond the log", "at its end"])
def test_a_checkpoint_forged_into_the_database_is_not_built_on_and_verify_finds_it(location, key_file, size):
    log = writing_log(location, key_file, every=1000)
    tail = log.records()[-1]
    at = tail.seq + 10 if size == "beyond the log" else tail.seq
    forged_checkpoint = sign_checkpoint(ed25519.Ed25519PrivateKey.generate(), size=at, root="ab" * 32, prev=None,
                                        at=dt.datetime.now(dt.timezone.utc))
    values = asdict(forged_checkpoint)
    placeholder = "%s" if is_postgres(location) else "?"
    with closing(raw(location)) as connection:
        connection.execute(f"INSERT INTO access_log_checkpoints (size, root, prev, at, key_id, signature) VALUES "
                           f"({', '.join([placeholder] * 6)})",
                           tuple(values[c] for c in ("size", "root", "prev", "at", "key_id", "signature")))
    assert log.checkpoint() is None  # it signs no checkpoint after one it did not sign
    assert_tampered(log)
    log.close()
    found = report(location, key_file)
    assert ("CHECKPOINT_FORGED", at) in {(p.kind, p.seq) for p in found.problems}


def test_verify_reports_a_log_whose_append_only_triggers_were_dropped(location, key_file):
    fill(location, key_file, 5)
    with closing(raw(location)) as connection:  # what a writer without a key does before editing rows
        if is_postgres(location):
            connection.execute("DROP TRIGGER access_log_no_change ON access_log")
        # (on SQLite, raw() has dropped every trigger already)
    log = AccessLog(location, read_only=True)  # as an auditor reads a copy: nothing is put back
    try:
        found = verify_log(log.store, public_keys=[load_public_key(public_key_path(key_file))])
    finally:
        log.close()
    missing = [p for p in found.problems if p.kind == "APPEND_ONLY_GUARD_MISSING"]
    expected = (["access_log_no_change"] if is_postgres(location)
                else [f"{table}_{kind}" for table in ("access_log", "access_log_checkpoints")
                      for kind in ("no_update", "no_delete")])
    assert len(missing) == 1 and all(name in missing[0].message for name in expected), found.problems
    assert not found.intact
    assert not any(p.kind == "APPEND_ONLY_GUARD_MISSING" for p in report(location, key_file).problems)  # put back
