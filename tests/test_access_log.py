"""The access log: append-only, chained, and any edit, deletion or reordering is found."""

from __future__ import annotations

import sqlite3

import pytest

from broker.access_log import AccessLog, AccessRecord
from broker.errors import AccessLogError


@pytest.fixture
def log(tmp_path):
    log = AccessLog(tmp_path / "log.sqlite")
    for i in range(5):
        log.append(AccessRecord(event="query.decision", decision="allow", department="d", sql=f"SELECT {i}"))
    yield log
    log.close()


def tamper(log: AccessLog, *statements: str) -> None:
    raw = sqlite3.connect(log.path)
    raw.executescript("DROP TRIGGER access_log_no_update; DROP TRIGGER access_log_no_delete;" + ";".join(statements))
    raw.commit()
    raw.close()


def test_intact_log_verifies(log):
    assert log.verify() == [] and [r.seq for r in log.records()] == [1, 2, 3, 4, 5]


def test_store_refuses_update_and_delete(log):
    raw = sqlite3.connect(log.path)
    for statement in ("UPDATE access_log SET decision = 'deny' WHERE seq = 2", "DELETE FROM access_log WHERE seq = 2"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute(statement)
    raw.close()


@pytest.mark.parametrize("statement, first_bad", [
    ("UPDATE access_log SET sql = 'SELECT 99' WHERE seq = 3", "seq 3"),
    ("DELETE FROM access_log WHERE seq = 2", "seq 3"),
    ("UPDATE access_log SET seq = seq + 10 WHERE seq = 4", "seq 5"),
    ("INSERT INTO access_log SELECT 6, 'x', at, event, subject, department, client, request_id, grant_id, "
     "policy_version, policy_sha256, sql, rewritten_sql, decision, reason, detail, prev_hash, hash "
     "FROM access_log WHERE seq = 5", "seq 6"),
])
def test_tampering_is_found_at_the_first_bad_record(tmp_path, log, statement, first_bad):
    tamper(log, statement)
    problems = AccessLog(log.path).verify()
    assert problems and problems[0].startswith(first_bad + ":")


def test_reopening_continues_the_chain(log):
    log.close()
    reopened = AccessLog(log.path)
    assert reopened.append(AccessRecord(event="auth.failure", decision="deny")) == 6
    assert reopened.verify() == []
    reopened.close()


def test_a_failed_write_raises_so_the_access_is_refused(log):
    log._db.close()  # the file is gone from under the log
    with pytest.raises(AccessLogError) as caught:
        log.append(AccessRecord(event="query.decision", decision="allow"))
    assert caught.value.code.name == "UNAVAILABLE"
