"""The state store, the same suite on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from broker.workflow.request_states import State
from broker.workflow.store import StoredPolicy, StoredRequest, StoreError, open_store


def request(number: int, *, department: str = "xuanwu-fgw", district: str = "320102",
            state: State = State.SUBMITTED) -> StoredRequest:
    stamp = f"2026-11-21T08:00:{number:02d}.000000+00:00"
    return StoredRequest(id=f"req-{number:04d}", department=department, district=district, state=state, version=0,
                         created_at=stamp, updated_at=stamp, body={"purpose": f"purpose {number}", "approvals": []})


def policy(policy_id: str = "xuanwu-fgw-0001", *, request_id: str = "req-0001") -> StoredPolicy:
    return StoredPolicy(id=policy_id, version=1, state=State.ACTIVE, department="xuanwu-fgw", document="id: x\n",
                        sha256="ab" * 32, request_id=request_id, state_reason="",
                        updated_at="2026-11-21T09:00:00+00:00")


@pytest.fixture
def store(store_location):
    opened = open_store(store_location)
    yield opened
    opened.close()


def test_a_request_comes_back_as_it_was_stored(store):
    created = store.create_request(request(1))
    assert created.version == 1
    assert store.get_request("req-0001") == created
    assert store.get_request("req-9999") is None


def test_requests_list_newest_first_in_pages_and_by_state(store):
    for number in range(1, 8):
        store.create_request(request(number, state=State.REVIEWED if number % 2 else State.SUBMITTED))
    first = store.list_requests(limit=3)
    assert [r.id for r in first] == ["req-0007", "req-0006", "req-0005"]
    after = (first[-1].created_at, first[-1].id)
    assert [r.id for r in store.list_requests(limit=3, after=after)] == ["req-0004", "req-0003", "req-0002"]
    assert {r.id for r in store.list_requests(state=State.SUBMITTED)} == {"req-0002", "req-0004", "req-0006"}


def test_requests_list_by_department_and_district(store):
    store.create_request(request(1))
    store.create_request(request(2, department="gulou-fgw", district="320106"))
    assert [r.id for r in store.list_requests(department="gulou-fgw")] == ["req-0002"]
    assert [r.id for r in store.list_requests(district="320102")] == ["req-0001"]


def test_a_stale_version_changes_nothing(store):
    created = store.create_request(request(1))
    assert store.replace_request(created.moved(State.REVIEWED, "2026-11-21T09:00:00+00:00")) is not None
    assert store.replace_request(created.moved(State.REJECTED, "2026-11-21T09:00:01+00:00")) is None
    assert store.get_request("req-0001").state is State.REVIEWED


def test_racing_writers_leave_exactly_one_outcome(store):
    created = store.create_request(request(1))
    winners = []
    barrier = threading.Barrier(8)

    def move(state):
        barrier.wait()
        if store.replace_request(created.moved(state, "2026-11-21T09:00:00+00:00")) is not None:
            winners.append(state)
    threads = [threading.Thread(target=move, args=(s,)) for s in [State.REVIEWED, State.REJECTED] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert store.get_request("req-0001").state is winners[0]
    assert store.get_request("req-0001").version == 2


def test_activation_stores_the_request_and_its_policy_together(store):
    created = store.create_request(request(1, state=State.REVIEWED))
    activated = store.activate(dataclasses.replace(created.moved(State.ACTIVE, "t"), policy_id="xuanwu-fgw-0001"),
                               policy())
    assert activated.state is State.ACTIVE and activated.policy_id == "xuanwu-fgw-0001"
    assert store.get_policy("xuanwu-fgw-0001").request_id == "req-0001"


def test_a_failed_activation_leaves_the_request_as_it_was(store):
    store.register_policy(policy())  # the id is taken
    created = store.create_request(request(1, state=State.REVIEWED))
    with pytest.raises(StoreError) as caught:
        store.activate(created.moved(State.ACTIVE, "t"), policy())
    assert caught.value.reason == "POLICY_EXISTS"
    assert store.get_request("req-0001") == created


def test_moving_a_policy_moves_its_request(store):
    created = store.create_request(request(1, state=State.REVIEWED))
    store.activate(dataclasses.replace(created.moved(State.ACTIVE, "t"), policy_id="xuanwu-fgw-0001"), policy())
    stored = store.get_policy("xuanwu-fgw-0001")
    moved = store.move_policy(stored, State.SUSPENDED, reason="audit pending", at="2026-11-22T00:00:00+00:00")
    assert moved.state is State.SUSPENDED and moved.revision == 1
    assert store.move_policy(stored, State.REVOKED, reason="stale read", at="t") is None
    assert store.get_request("req-0001").state is State.SUSPENDED
    assert store.get_request("req-0001").body["state_reason"] == "audit pending"


def test_registering_a_known_policy_keeps_the_stored_one(store):
    first = store.register_policy(policy())
    store.move_policy(first, State.SUSPENDED, reason="r", at="t")
    again = store.register_policy(dataclasses.replace(policy(), sha256="cd" * 32))
    assert again.state is State.SUSPENDED and again.sha256 == "ab" * 32


def test_policies_list_by_id_in_pages_and_by_department(store):
    for number in range(1, 5):
        store.register_policy(dataclasses.replace(policy(f"p-{number}"), department="a" if number < 3 else "b"))
    assert [p.id for p in store.list_policies(limit=2)] == ["p-1", "p-2"]
    assert [p.id for p in store.list_policies(after="p-2")] == ["p-3", "p-4"]
    assert [p.id for p in store.list_policies(department="b")] == ["p-3", "p-4"]


def test_the_store_reopens_with_its_data(store_location):
    first = open_store(store_location)
    first.create_request(request(1))
    first.close()
    second = open_store(store_location)
    assert second.get_request("req-0001").body["purpose"] == "purpose 1"
    second.close()


def test_a_new_policy_version_keeps_its_state(store):
    stored = store.register_policy(policy())
    suspended = store.move_policy(stored, State.SUSPENDED, reason="r", at="t")
    replaced = store.replace_policy_document(suspended, version=2, document="id: y\n", sha256="cd" * 32, at="t2")
    assert replaced.version == 2 and replaced.state is State.SUSPENDED
    assert store.get_policy(stored.id) == replaced
    assert store.replace_policy_document(suspended, version=3, document="z", sha256="ef" * 32, at="t3") is None


def test_a_refused_body_of_a_version_is_kept_once_and_found_by_its_version(store):
    """One body per version: another body the owner signed of a stored version is kept as refused (broker.workflow
    .policy_registry), once, and looked up by policy and version."""
    kept = {"policy_id": "xuanwu-fgw-0001", "version": 1, "body_sha256": "cd" * 32, "document": "id: y\n",
            "at": "2026-11-21T10:00:00+00:00", "source": "policies/x.yaml"}
    assert store.refuse_body(**kept)
    assert not store.refuse_body(**kept), "kept once"
    assert store.refuse_body(**{**kept, "version": 2, "body_sha256": "ef" * 32})
    assert store.refused_bodies("xuanwu-fgw-0001", 1) == [("xuanwu-fgw-0001", 1, "cd" * 32, "id: y\n")]
    assert store.refused_bodies("xuanwu-fgw-0001", 3) == []
    assert len(store.refused_bodies()) == 2


def test_an_unreachable_postgres_store_is_a_clear_configuration_error():
    from dsbroker.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        open_store("postgresql://dsbroker:secret@127.0.0.1:9/test")
    assert "cannot open the PostgreSQL store" in caught.value.message and "secret" not in caught.value.message


def test_lists_keep_to_the_callers_scope(store):
    from broker.permissions import Scope

    for number, (department, district) in enumerate([("xuanwu-fgw", "320102"), ("gulou-fgw", "320106"),
                                                     ("xuanwu-tax", "320106"), ("city-fgw", "")], start=1):
        store.create_request(request(number, department=department, district=district))
        store.register_policy(dataclasses.replace(policy(f"p-{number}"), department=department, district=district))
    reviewer = Scope(department="xuanwu-tax", district="320102")
    assert [r.id for r in store.list_requests(scope=reviewer)] == ["req-0003", "req-0001"]
    assert [p.id for p in store.list_policies(scope=reviewer)] == ["p-1", "p-3"]
    assert store.get_policy("p-1").district == "320102" and store.get_policy("p-4").district == ""
    assert [p.id for p in store.list_policies(scope=Scope(department="city-fgw", district=""))] == ["p-4"]
    assert len(store.list_policies(scope=Scope(everything=True))) == 4


def test_a_store_made_before_policies_named_their_district_gains_the_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE policies (id TEXT PRIMARY KEY, version INTEGER NOT NULL, state TEXT NOT NULL, "
                    "department TEXT NOT NULL, document TEXT NOT NULL, sha256 TEXT NOT NULL, request_id TEXT NOT NULL, "
                    "state_reason TEXT NOT NULL, updated_at TEXT NOT NULL, revision INTEGER NOT NULL)")
        old.execute("INSERT INTO policies VALUES ('p-old', 1, 'ACTIVE', 'xuanwu-fgw', 'id: x', 'ab', '', '', 't', 0)")
    store = open_store(str(path))
    try:
        assert store.get_policy("p-old").district == ""
        store.register_policy(dataclasses.replace(policy("p-new"), district="320102"))
        assert store.get_policy("p-new").district == "320102"
    finally:
        store.close()
    reopened = open_store(str(path))  # the second open finds the column and adds nothing
    assert [p.id for p in reopened.list_policies()] == ["p-new", "p-old"]
    reopened.close()
