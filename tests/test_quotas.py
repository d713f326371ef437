"""Quotas and validity with a fixed clock: a grant's queries per day and in total, counted where the access is
recorded."""

from __future__ import annotations

import datetime as dt
import threading

import grpc
import pytest
from google.rpc import error_details_pb2

from broker.access_log.log import AccessLog
from broker.client.sdk import BrokerClient
from dsbroker.errors import DsbrokerError
from broker.server import start_broker
from tests.conftest import GRANT, Clock, broker_settings_for, client_tls, policies_with, token_for

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
COUNT_SQL = "SELECT COUNT(*) AS c FROM tax.declarations"


@pytest.fixture
def limited(sandbox, tmp_path):
    """A broker whose grant allows 3 queries a day and 5 in all, on a clock the test controls."""
    policies = policies_with(tmp_path, "max_groups: 5000}", "max_groups: 5000, queries_per_day: 3, queries_total: 5}")
    clock = Clock(dt.datetime(2026, 11, 21, 9, 0, tzinfo=SHANGHAI))
    running = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", policies=policies),
                           clock=clock)
    client = BrokerClient(f"127.0.0.1:{running.port}", token=token_for(), tls=client_tls())
    yield client, clock, tmp_path / "log.sqlite"
    client.close()
    running.stop()


def quota_error(client) -> DsbrokerError:
    with pytest.raises(DsbrokerError) as caught:
        client.query(GRANT, COUNT_SQL)
    return caught.value


def test_queries_per_day_run_out_and_come_back_the_next_day(limited):
    client, clock, _ = limited
    for _ in range(3):
        assert client.query(GRANT, COUNT_SQL).rows
    error = quota_error(client)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    assert error.metadata == {"grant": GRANT, "quota": "queries_per_day", "limit": "3"}
    (failure,) = error.details
    assert isinstance(failure, error_details_pb2.QuotaFailure) and failure.violations[0].subject == f"policies/{GRANT}"
    clock.now = dt.datetime(2026, 11, 21, 23, 59, tzinfo=SHANGHAI)
    assert quota_error(client).reason == "QUOTA_EXCEEDED", "still the same day in Shanghai"
    clock.now = dt.datetime(2026, 11, 21, 16, 1, tzinfo=dt.timezone.utc)  # 00:01 the next day in Shanghai
    assert client.query(GRANT, COUNT_SQL).rows


def test_explaining_a_query_does_not_spend_the_quota(limited):
    client, _, _ = limited
    for _ in range(5):
        assert "COUNT(__e) AS __s0" in client.explain(GRANT, COUNT_SQL).rewritten_sql
    for _ in range(3):
        assert client.query(GRANT, COUNT_SQL).rows
    assert quota_error(client).metadata["quota"] == "queries_per_day"


def test_the_total_quota_holds_across_days(limited):
    client, clock, _ = limited
    for day in (21, 22):
        clock.now = dt.datetime(2026, 11, day, 10, 0, tzinfo=SHANGHAI)
        for _ in range(3 if day == 21 else 2):
            assert client.query(GRANT, COUNT_SQL).rows
    clock.now = dt.datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI)
    assert quota_error(client).metadata["quota"] == "queries_total"


def test_refused_queries_do_not_count_and_quota_refusals_are_logged(limited):
    client, _, log_path = limited
    for _ in range(5):
        with pytest.raises(DsbrokerError):
            client.query(GRANT, "SELECT vat_paid FROM tax.declarations")
    for _ in range(3):
        assert client.query(GRANT, COUNT_SQL).rows
    quota_error(client)
    log = AccessLog(log_path)
    decisions = [(r.decision, r.reason) for r in log.records() if r.event == "query.decision"]
    assert log.verify() == []
    log.close()
    assert decisions[-1] == ("deny", "QUOTA_EXCEEDED")
    assert decisions.count(("allow", "")) == 3


def test_concurrent_queries_never_overspend_the_quota(limited):
    client, _, _ = limited
    outcomes: list[str] = []

    def attempt():
        try:
            client.query(GRANT, COUNT_SQL)
            outcomes.append("ok")
        except DsbrokerError as error:
            outcomes.append(error.reason)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["QUOTA_EXCEEDED"] * 5 + ["ok"] * 3, outcomes


@pytest.mark.parametrize("now, answered", [
    (dt.datetime(2025, 12, 31, 23, 59, tzinfo=SHANGHAI), False),
    (dt.datetime(2026, 1, 1, 0, 0, tzinfo=SHANGHAI), True),
    (dt.datetime(2027, 6, 30, 23, 59, tzinfo=SHANGHAI), True),
    (dt.datetime(2027, 6, 30, 16, 0, tzinfo=dt.timezone.utc), False),  # 1 July 00:00 in Shanghai
])
def test_validity_follows_the_owners_day(sandbox, tmp_path, now, answered):
    running = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite"), clock=lambda: now)
    try:
        with BrokerClient(f"127.0.0.1:{running.port}", token=token_for(), tls=client_tls()) as client:
            if answered:
                assert client.query(GRANT, COUNT_SQL).rows
            else:
                error = quota_error(client)
                assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "GRANT_NOT_ACTIVE")
    finally:
        running.stop()
