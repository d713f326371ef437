"""Both servers as real processes: the CLI answers as a table and as JSON, errors exit non-zero, SIGTERM is graceful."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from broker.launch import ServerProcess
from tests.conftest import GRANT, POLICIES, token_for


@pytest.fixture(scope="module")
def servers(demo_db, tmp_path_factory):
    log = tmp_path_factory.mktemp("proc") / "log.sqlite"
    sandbox = ServerProcess(["sandbox", "serve", "--data", str(demo_db)], name="sandbox")
    broker = ServerProcess(["serve", "--sandbox", sandbox.target, "--policies", str(POLICIES),
                            "--access-log", str(log)], name="broker")
    yield sandbox, broker, log
    assert broker.stop() == 0 and sandbox.stop() == 0, "servers must exit cleanly on SIGTERM"


def cli(broker, *args):
    env = {**os.environ, "DSBROKER_BROKER": broker.target, "DSBROKER_TOKEN": token_for()}
    return subprocess.run([sys.executable, "-m", "broker.cli.main", *args], capture_output=True, text=True, env=env)


def test_query_prints_json(servers):
    _, broker, _ = servers
    run = cli(broker, "query", "--grant", GRANT, "--json",
              "--sql", "SELECT street_code, COUNT(DISTINCT taxpayer_id) AS n FROM tax.declarations GROUP BY 1")
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert body["columns"] == ["street_code", "n"] and len(body["rows"]) == 7
    assert all(n >= 10 for _, n in body["rows"])


def test_query_prints_a_table(servers):
    _, broker, _ = servers
    run = cli(broker, "query", "--grant", GRANT, "--sql", "SELECT COUNT(*) AS declarations FROM tax.declarations")
    assert run.returncode == 0 and "declarations" in run.stdout and "access record" in run.stdout


def test_refusal_is_one_line_and_exits_non_zero(servers):
    _, broker, _ = servers
    run = cli(broker, "query", "--grant", GRANT, "--sql", "SELECT * FROM tax.declarations")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().count("\n") == 0 and "RAW_ROWS" in run.stderr
    run = cli(broker, "query", "--grant", GRANT, "--json", "--sql", "SELECT vat_paid FROM tax.declarations")
    assert json.loads(run.stdout)["error"] == {"code": "INVALID_ARGUMENT", "reason": "RAW_ROWS", "message": json.loads(
        run.stdout)["error"]["message"], "metadata": {"rule": "reject_raw_rows", "table": "tax.declarations"}}


def test_unreachable_broker_is_one_clear_line():
    env = {**os.environ, "DSBROKER_TOKEN": token_for()}
    run = subprocess.run([sys.executable, "-m", "broker.cli.main", "query", "--broker", "127.0.0.1:1", "--timeout",
                          "2", "--grant", GRANT, "--sql", "SELECT COUNT(*) FROM tax.declarations"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 1 and run.stderr.startswith("error: UNAVAILABLE") and "Traceback" not in run.stderr


def test_audit_commands_read_and_verify_the_log(servers):
    _, broker, log = servers
    cli(broker, "query", "--grant", GRANT, "--sql", "SELECT COUNT(*) AS c FROM tax.declarations")
    listed = cli(broker, "audit", "list", "--log", str(log), "--json")
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert records and {"query.decision", "query.result"} <= {r["event"] for r in records}
    verified = cli(broker, "audit", "verify", "--log", str(log))
    assert verified.returncode == 0 and "intact" in verified.stdout
