"""Policies installed as files: recorded in the store once, newer versions replace the document and keep the state."""

from __future__ import annotations

import datetime as dt

import pytest

from dsbroker.identity.auth import Principal
from dsbroker.errors import DsbrokerError
from broker.workflow.policy_registry import PolicyRegistry
from broker.workflow.store import open_store
from dsbroker.policy.signing import Trust
from tests.conftest import GRANT, POLICIES, Clock, dev_keys, revocation, sign, writing_log

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
OWNER = Principal("chen", "city-tax", "320100", frozenset({"owner"}))
REQUESTER = Principal("li", "xuanwu-fgw", "320102", frozenset({"requester"}))


@pytest.fixture
def registry(tmp_path):
    log = writing_log(tmp_path / "log.sqlite")
    store = open_store(str(tmp_path / "state.sqlite"))
    yield PolicyRegistry(store, log, owner_timezone=SHANGHAI, trust=Trust.load(dev_keys().trust),
                         clock=Clock(dt.datetime(2026, 11, 21, 10, 0, tzinfo=SHANGHAI))), tmp_path, log
    store.close()
    log.close()


def install(directory, version: int) -> None:
    directory.mkdir(exist_ok=True)
    text = (POLICIES / f"{GRANT}.yaml").read_text().replace("version: 1", f"version: {version}")
    (directory / f"{GRANT}.yaml").write_text(sign(text))


def test_a_newer_file_replaces_the_document_and_keeps_a_revocation(registry):
    policies, folder, log = registry
    install(folder / "policies", 1)
    assert policies.install_files(folder / "policies") == 1
    policies.revoke(OWNER, GRANT, statement=revocation(GRANT, "misuse"), reason="", client="", request_id="")
    install(folder / "policies", 2)
    policies.install_files(folder / "policies")
    stored = policies.store.get_policy(GRANT)
    assert stored.version == 2 and stored.state.value == "REVOKED"
    with pytest.raises(DsbrokerError) as caught:
        policies.grant_for(GRANT, REQUESTER, policies.clock())
    assert caught.value.reason == "GRANT_NOT_ACTIVE"
    assert [r.event for r in log.records()] == ["policy.revoke", "policy.install"]


def test_an_older_or_equal_file_changes_nothing(registry):
    policies, folder, log = registry
    install(folder / "policies", 3)
    policies.install_files(folder / "policies")
    install(folder / "policies", 2)
    policies.install_files(folder / "policies")
    assert policies.store.get_policy(GRANT).version == 3
    assert policies.grant_for(GRANT, REQUESTER, policies.clock()).version == 3


def test_on_a_new_store_the_statement_files_beside_the_policies_install_a_revoked_policy_as_revoked(registry):
    policies, folder, log = registry
    install(folder / "policies", 1)
    policies.install_files(folder / "policies")
    statements = folder / "policies" / "statements"
    statements.mkdir()
    (statements / "kept.json").write_text(revocation(GRANT, "misuse") + "\n")
    (statements / "forged.json").write_text(revocation("xuanwu-fgw-2026-099", signer="xuanwu-tax") + "\n")
    fresh = PolicyRegistry(open_store(str(folder / "new-state.sqlite")), log, owner_timezone=SHANGHAI,
                           trust=Trust.load(dev_keys().trust), clock=policies.clock)
    fresh.install_files(folder / "policies")
    assert fresh.store.get_policy(GRANT).state.value == "REVOKED"
    assert fresh.all_statements() == [revocation_line(statements / "kept.json")], "the forged one is not kept"
    with pytest.raises(DsbrokerError) as caught:
        fresh.grant_for(GRANT, REQUESTER, fresh.clock())
    assert caught.value.reason == "GRANT_NOT_ACTIVE"


def test_a_revocation_through_a_version_leaves_a_newer_file_in_force_on_a_new_store(registry):
    policies, folder, _log = registry
    install(folder / "policies", 2)
    statements = folder / "policies" / "statements"
    statements.mkdir()
    (statements / "v1.json").write_text(revocation(GRANT, "v1 misused", through_version=1) + "\n")
    policies.install_files(folder / "policies")
    assert policies.grant_for(GRANT, REQUESTER, policies.clock()).version == 2


def revocation_line(path) -> str:
    return path.read_text().strip()
