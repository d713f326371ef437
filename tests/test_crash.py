"""SIGKILL in the middle of a load of queries: every result that reached a client has a durable
DECISION record, and the log verifies (noting only decisions left without a release)."""

from __future__ import annotations

import threading
import time

from broker.access_log.log import AccessLog, RecordFilter
from dsbroker.records.checkpoints import load_public_key
from broker.audit.reconcile import reconcile
from broker.audit.verify import verify_log
from broker.client.sdk import BrokerClient
from dsbroker.errors import DsbrokerError
from broker.dev.launch import ServerProcess, development_servers
from sandbox.ledgers.executions import ExecutionLedger
from tests.conftest import ANALYST, GRANT, dev_keys, signed_policies, token_for

SQL = "SELECT street_code, COUNT(DISTINCT taxpayer_id) AS n FROM tax.declarations GROUP BY 1"
CLIENTS = 8
RESULTS_BEFORE_KILL = 40


def load(target: str, tls, delivered: list[str], stop: threading.Event) -> None:
    """Query until the broker goes away; note the request id of every result that arrived."""
    with BrokerClient(target, token=token_for(), tls=tls, timeout=10) as client:
        while not stop.is_set():
            try:
                delivered.append(client.query(GRANT, SQL).request_id)
            except DsbrokerError:
                return


def test_a_killed_broker_leaves_a_decision_for_every_delivered_result(demo_db, tmp_path):
    state = tmp_path / "state"
    log_path = state / "access-log.sqlite"
    with development_servers(data=demo_db, policies=signed_policies(), state=state, layout=dev_keys(),
                             client=ANALYST) as (_sandbox, broker, tls):
        delivered: list[str] = []
        stop = threading.Event()
        threads = [threading.Thread(target=load, args=(broker.target, tls, delivered, stop)) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(delivered) < RESULTS_BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.01)
        broker.process.kill()  # SIGKILL: no shutdown, no last checkpoint
        broker.process.wait()
        stop.set()
        for thread in threads:
            thread.join()
        assert len(delivered) >= RESULTS_BEFORE_KILL

        log = AccessLog(log_path)
        for request_id in delivered:
            decisions = log.records(where=RecordFilter(request_id=request_id, event="query.decision"))
            assert [d.decision for d in decisions] == ["allow"], f"{request_id} reached a client undecided"
        found = verify_log(log.store, public_keys=[load_public_key(log_path.with_suffix(".pub"))])
        assert found.intact, found.problems
        assert {w.kind for w in found.warnings} <= {"DECISION_WITHOUT_RELEASE", "NOT_YET_CHECKPOINTED"}
        log.close()

        # Restarted on the same log, the broker continues the chain and signs it on a clean stop.
        with ServerProcess(["serve", "--config", str(state / "broker.toml")], name="broker-again", tls=tls,
                           log_path=state / "broker-again.log") as again:
            with BrokerClient(again.target, token=token_for(), tls=tls) as client:
                client.query(GRANT, SQL)
            assert again.stop() == 0
    log = AccessLog(log_path)
    found = verify_log(log.store, public_keys=[load_public_key(log_path.with_suffix(".pub"))])
    assert found.intact and {w.kind for w in found.warnings} <= {"DECISION_WITHOUT_RELEASE"}
    assert log.checkpoints()[-1].size == found.records
    ledger = ExecutionLedger(state / "sandbox-executions.sqlite")
    # A decision cut off by the kill may have run in the sandbox: it is decided, so it reconciles.
    assert reconcile(log.records(), ledger.executions()) == []
    ledger.close()
    log.close()
