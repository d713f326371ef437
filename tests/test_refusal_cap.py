"""Refused calls are recorded one by one up to a cap per client certificate and second; past it the
client gets RESOURCE_EXHAUSTED and its refusals are counted in one record: none goes unaccounted."""

from __future__ import annotations

import uuid

import grpc
import pytest

from broker.access_log.log import AccessLog
from broker.client.sdk import BrokerClient
from dsbroker.errors import DsbrokerError
from broker.server import start_broker
from tests.conftest import GRANT, broker_settings_for, client_tls, token_for

CAP = 3
SQL = "SELECT COUNT(*) AS c FROM tax.declarations"


class Seconds:
    """Seconds since the epoch, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.25

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def capped(sandbox, tmp_path):
    clock = Seconds()
    log = tmp_path / "log.sqlite"
    running = start_broker(broker_settings_for(sandbox.port, log, max_refusals_per_client=CAP), refusal_clock=clock)
    yield running, log, clock
    running.stop()


def forged_query(port: int, client: str = "analyst") -> DsbrokerError:
    with BrokerClient(f"127.0.0.1:{port}", token=token_for()[:-4] + "AAAA", tls=client_tls(client)) as forger:
        with pytest.raises(DsbrokerError) as caught:
            forger.query(GRANT, SQL, request_id=f"forged-{uuid.uuid4().hex[:8]}")
    return caught.value


def records(log_path):
    log = AccessLog(log_path)
    try:
        return log.records()
    finally:
        log.close()


def test_refusals_past_the_cap_are_counted_in_one_record_and_valid_calls_pass(capped):
    running, log_path, clock = capped
    answers = [forged_query(running.port) for _ in range(CAP + 7)]
    assert [(e.code, e.reason) for e in answers[:CAP]] == [(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")] * CAP
    assert {(e.code, e.reason) for e in answers[CAP:]} == {(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                            "TOO_MANY_FAILED_CALLS")}
    assert answers[-1].details[0].violations[0].subject.startswith("clients/certificate:")
    # The same certificate with a token that verifies is served; another certificate has a cap of its own.
    with BrokerClient(f"127.0.0.1:{running.port}", token=token_for(), tls=client_tls()) as honest:
        assert honest.query(GRANT, SQL).rows[0][0] > 0
    assert forged_query(running.port, "other-analyst").reason == "TOKEN_INVALID"
    one_by_one = [r for r in records(log_path) if r.event == "auth.failure"]
    assert [r.reason for r in one_by_one] == ["TOKEN_INVALID"] * (CAP + 1), "past the cap nothing is written yet"

    clock.now += 1  # the second is over: the next refusal writes the count first, then is recorded itself
    assert forged_query(running.port).reason == "TOKEN_INVALID"
    failures = [r for r in records(log_path) if r.event == "auth.failure"]
    counted = [r for r in failures if r.reason == "TOO_MANY_FAILED_CALLS"]
    assert len(counted) == 1 and counted[0].detail["refused"] == 7
    assert counted[0].detail["reasons"] == {"TOKEN_INVALID": 7}
    assert counted[0].detail["methods"] == {"/broker.v1.QueryService/RunQuery": 7}
    assert failures[-1].reason == "TOKEN_INVALID" and failures.index(counted[0]) == len(failures) - 2
    assert len({r.detail["caller"] for r in failures if r.request_id or r.detail.get("refused")}) == 2


def test_counts_still_held_are_written_when_the_broker_stops(sandbox, tmp_path):
    log_path = tmp_path / "log.sqlite"
    running = start_broker(broker_settings_for(sandbox.port, log_path, max_refusals_per_client=1),
                           refusal_clock=Seconds())
    for _ in range(5):
        forged_query(running.port)
    with BrokerClient(f"127.0.0.1:{running.port}", tls=client_tls()) as tokenless:
        with pytest.raises(DsbrokerError) as caught:
            tokenless.query(GRANT, SQL)
    assert caught.value.reason == "TOO_MANY_FAILED_CALLS"
    running.stop()
    written = records(log_path)
    individual = [r for r in written if r.event == "auth.failure" and r.reason != "TOO_MANY_FAILED_CALLS"]
    [counted] = [r for r in written if r.reason == "TOO_MANY_FAILED_CALLS"]
    assert len(individual) == 1 and counted.detail["refused"] == 5
    assert counted.detail["reasons"] == {"TOKEN_INVALID": 4, "TOKEN_MISSING": 1}
    reader = AccessLog(log_path)
    assert reader.verify() == []
    reader.close()


def test_the_cap_must_be_at_least_one(sandbox, tmp_path):
    from dsbroker.errors import ConfigError

    with pytest.raises(ConfigError, match="max_refusals_per_client"):
        start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", max_refusals_per_client=0))
