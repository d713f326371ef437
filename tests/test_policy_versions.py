"""One body per version: a grant version means one thing, at the broker and at every sandbox that has seen it.

The owner may sign a change of a grant (here: ``queries: products``, which stops SQL of the caller's own)
without raising its version. Neither body may then answer: the stored one would serve terms the owner has
since signed otherwise, and a hostile broker would replay whichever body suits it. So the sandbox records
every owner-signed body of each version in its (durable) policy ledger and refuses every plan under a
version with two (POLICY_VERSION_REUSED), and the broker does not install a second body of a stored
version, keeps it as refused, hands it to the sandboxes and refuses queries under that version. The same
body signed again (other approvals) is one body. Every sandbox here is the test's own (its ledgers under the
test's directory): the run's shared sandbox serves variants of one grant and has the rule off.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3

import grpc
import pytest

from broker.dev.keys import DEV_SIGNERS, load_private_key, signer_key_id
from broker.server import start_broker
from broker.v1 import policy_service_pb2 as policies_pb
from dsbroker.errors import DsbrokerError
from dsbroker.policy.model import parse_policy
from dsbroker.policy.product_binding import bind_product
from dsbroker.policy.signing import body_sha256, sign_policy, split_document
from sandbox.ledgers.policies import PolicyLedger
from tests.conftest import GRANT, XUANWU, dev_keys, sign
from tests.test_hostile_broker import (SHIPPED, SQL, deployment, document, execute, own, plan_for,  # noqa: F401
                                       publish, refusal)
from tests.test_policy_registry import OWNER, REQUESTER, registry  # noqa: F401 (fixture)
from tests.test_products import PRODUCTS_ONLY, STREETS, product_plan

PRODUCT = "street-revenue-monthly"


def signed_at(text: str, when: dt.datetime) -> str:
    """``text`` signed by the development reviewer and owner at ``when``: the same body, other approvals."""
    keys = dev_keys()
    for name, role in DEV_SIGNERS:
        text = sign_policy(text, load_private_key(keys.signer_key(name)), key_id=signer_key_id(name), role=role,
                           by=name, at=when)
    return text


def products_only_plan(signed: str):
    """The honest plan of the products-only grant's street product (the one thing it answers)."""
    sql = bind_product(parse_policy(signed).products[PRODUCT], STREETS)
    return product_plan(signed, sql, PRODUCT, STREETS)


def assert_reused(error: DsbrokerError) -> None:
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "POLICY_VERSION_REUSED")
    assert (error.metadata["policy"], str(error.metadata["version"])) == (GRANT, "1")


# -- at the sandbox ------------------------------------------------------------------------------

def test_the_same_body_signed_again_is_one_body_and_still_served(own):
    sandbox = own.start()
    first, again = (signed_at(SHIPPED, dt.datetime(2026, 11, day, 8, tzinfo=dt.timezone.utc)) for day in (20, 21))
    assert first != again and split_document(first)[0] == split_document(again)[0]
    assert execute(sandbox, plan_for(first)).table.row_count == 7
    assert execute(sandbox, plan_for(again)).table.row_count == 7, "other approvals of one body are no second body"
    sandbox = own.restart(sandbox)
    assert execute(sandbox, plan_for(first)).table.row_count == 7


def test_a_broker_replaying_the_earlier_body_after_the_sandbox_saw_another_is_refused_across_a_restart(own, caplog):
    """The owner re-signs version 1 products-only. Once a plan has shown the sandbox that body, neither body of
    version 1 runs: not the products-only one, and not the earlier one a hostile broker replays (which would
    answer SQL of the caller's own). It holds after a restart, and ends with a new version."""
    sandbox = own.start()
    earlier, later = document(), sign(PRODUCTS_ONLY)
    assert execute(sandbox, plan_for(earlier)).table.row_count == 7
    with caplog.at_level(logging.ERROR, logger="sandbox.checks.policy_standing"):
        assert_reused(refusal(sandbox, products_only_plan(later)))
    assert "the owner signed a second body of this version" in caplog.text
    assert_reused(refusal(sandbox, plan_for(earlier)))
    assert_reused(refusal(sandbox, plan_for(sign(SHIPPED))))  # the earlier body signed anew is that body still
    sandbox = own.restart(sandbox)
    assert_reused(refusal(sandbox, plan_for(earlier)))
    assert_reused(refusal(sandbox, products_only_plan(later)))
    assert execute(sandbox, plan_for(document(2))).table.row_count == 7, "version 2 has one body"


def test_a_second_body_the_broker_publishes_refuses_the_version(own):
    sandbox = own.start()
    assert execute(sandbox, plan_for(document())).table.row_count == 7
    answer = publish(sandbox, documents=[sign(PRODUCTS_ONLY)])
    assert answer.policy_versions_added == 0, "the version is not new: its body is"
    assert_reused(refusal(sandbox, plan_for(document())))


def test_a_second_body_in_the_owners_directory_refuses_the_version_a_broker_never_showed(own, tmp_path):
    """A hostile broker never shows the sandbox the products-only body. The owner places it in the sandbox's own
    directory (setting ``statements``), read while the sandbox serves: the earlier body is refused from then on."""
    directory = tmp_path / "owner"
    directory.mkdir()
    sandbox = own.start(statements=str(directory))
    assert execute(sandbox, plan_for(document())).table.row_count == 7
    (directory / f"{GRANT}.yaml").write_text(sign(PRODUCTS_ONLY), encoding="utf-8")
    assert_reused(refusal(sandbox, plan_for(document())))
    sandbox = own.restart(sandbox, statements=str(directory))
    assert_reused(refusal(sandbox, plan_for(document())))


def test_a_sandbox_that_never_saw_the_second_body_answers_until_the_owner_hands_it_the_file(own, tmp_path):
    """Two sandboxes, each with its own ledger: a broker shows the products-only body to one of them only. The
    other cannot know of it (README: what holds against a hostile broker) until the owner hands it the file."""
    one = own.start(policy_ledger=str(tmp_path / "one.sqlite"), execution_ledger=str(tmp_path / "one-x.sqlite"))
    directory = tmp_path / "owner-two"
    directory.mkdir()
    two = own.start(policy_ledger=str(tmp_path / "two.sqlite"), execution_ledger=str(tmp_path / "two-x.sqlite"),
                    statements=str(directory))
    for sandbox in (one, two):
        assert execute(sandbox, plan_for(document())).table.row_count == 7
    assert_reused(refusal(one, products_only_plan(sign(PRODUCTS_ONLY))))
    assert_reused(refusal(one, plan_for(document())))
    assert execute(two, plan_for(document())).table.row_count == 7, "it has seen one body of version 1"
    (directory / f"{GRANT}.yaml").write_text(sign(PRODUCTS_ONLY), encoding="utf-8")
    assert_reused(refusal(two, plan_for(document())))


def test_with_the_rule_off_each_body_is_served_but_recorded_so_that_turning_it_on_refuses(own):
    sandbox = own.start(one_body_per_version=False)
    assert execute(sandbox, plan_for(document())).table.row_count == 7
    assert execute(sandbox, products_only_plan(sign(PRODUCTS_ONLY))).table.row_count == 6
    sandbox = own.restart(sandbox)
    assert_reused(refusal(sandbox, plan_for(document())))


def test_the_bodies_the_ledger_saw_are_kept_in_order_and_cannot_be_edited_or_deleted(tmp_path):
    path = tmp_path / "policies.sqlite"
    ledger = PolicyLedger(path)
    assert ledger.see_version(GRANT, 1, "d1", body_sha256="b1", source="plan")
    assert not ledger.see_version(GRANT, 1, "d2", body_sha256="b2", source="plan")
    assert not ledger.see_version(GRANT, 1, "d3", body_sha256="b1", source="plan")
    assert ledger.bodies_of(GRANT, 1) == ("b1", "b2") and ledger.bodies_of(GRANT, 2) == ()
    ledger.close()
    with sqlite3.connect(path) as raw:
        for edit in ("UPDATE bodies SET body_sha256 = 'b1' WHERE body_sha256 = 'b2'", "DELETE FROM bodies"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                raw.execute(edit)
    assert PolicyLedger(path).bodies_of(GRANT, 1) == ("b1", "b2")


def test_a_ledger_written_before_bodies_were_recorded_takes_the_first_body_seen_after(tmp_path):
    """A ledger of versions only (before one body per version): it opens, and the first body seen of a version it
    knows is that version's first body, a second one then refused as anywhere."""
    path = tmp_path / "policies.sqlite"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE versions (seq INTEGER PRIMARY KEY, policy_id TEXT NOT NULL, version INTEGER NOT "
                    "NULL, sha256 TEXT NOT NULL, seen_at TEXT NOT NULL, source TEXT NOT NULL, UNIQUE (policy_id, "
                    "version))")
        old.execute("INSERT INTO versions (policy_id, version, sha256, seen_at, source) VALUES (?, 1, 'd0', '', "
                    "'plan')", (GRANT,))
    ledger = PolicyLedger(path)
    assert ledger.newest_version(GRANT) == 1 and ledger.bodies_of(GRANT, 1) == ()
    assert not ledger.see_version(GRANT, 1, "d1", body_sha256="b1", source="plan")
    assert not ledger.see_version(GRANT, 1, "d2", body_sha256="b2", source="plan")
    ledger.close()
    assert PolicyLedger(path).bodies_of(GRANT, 1) == ("b1", "b2")


def test_a_ledger_shared_by_two_sandbox_processes_reads_the_bodies_the_other_recorded(tmp_path):
    """Each keeps its copy in memory; recording a body it has not seen, it reads the version's bodies back from the
    file, so the other's first body is not taken for its own first (nor its own for the only one)."""
    path = tmp_path / "policies.sqlite"
    one, two = PolicyLedger(path), PolicyLedger(path)
    one.see_version(GRANT, 1, "d1", body_sha256="b1", source="plan")
    two.see_version(GRANT, 1, "d2", body_sha256="b2", source="plan")
    assert two.bodies_of(GRANT, 1) == ("b1", "b2")


# -- at the broker -------------------------------------------------------------------------------

def test_a_second_body_of_the_stored_version_is_not_installed_and_queries_under_it_are_refused(registry, caplog):
    policies, folder, log = registry
    directory = folder / "policies"
    directory.mkdir()
    (directory / f"{GRANT}.yaml").write_text(document(), encoding="utf-8")
    policies.install_files(directory)
    stored = policies.store.get_policy(GRANT)
    second = sign(PRODUCTS_ONLY)
    (directory / f"{GRANT}.yaml").write_text(second, encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="broker.workflow.policy_registry"):
        policies.install_files(directory)
    assert f"is a second body of {GRANT} v1" in caplog.text
    assert policies.store.get_policy(GRANT).sha256 == stored.sha256, "the second body is not installed"
    with pytest.raises(DsbrokerError) as caught:
        policies.grant_for(GRANT, REQUESTER, policies.clock())
    assert_reused(caught.value)
    assert policies.reused_body_of(stored) == body_sha256(second)
    denied = [r for r in log.records() if r.event == "policy.install" and r.decision == "deny"]
    assert [r.reason for r in denied] == ["POLICY_VERSION_REUSED"]
    assert denied[0].detail["body_sha256"] == body_sha256(second)
    assert second in policies.current_documents(), "handed to the sandboxes, so that they refuse the version too"
    policies.install_files(directory)
    assert len([r for r in log.records() if r.event == "policy.install"]) == 1, "recorded once, not per start"


def test_the_refusal_outlives_the_file_and_ends_when_the_owner_raises_the_version(registry):
    policies, folder, _log = registry
    directory = folder / "policies"
    directory.mkdir()
    for text in (document(), sign(PRODUCTS_ONLY), document()):  # the operator puts the earlier file back
        (directory / f"{GRANT}.yaml").write_text(text, encoding="utf-8")
        policies.install_files(directory)
    with pytest.raises(DsbrokerError) as caught:
        policies.grant_for(GRANT, REQUESTER, policies.clock())
    assert_reused(caught.value)
    (directory / f"{GRANT}.yaml").write_text(sign(PRODUCTS_ONLY.replace("version: 1", "version: 2", 1)),
                                             encoding="utf-8")
    policies.install_files(directory)
    granted = policies.grant_for(GRANT, REQUESTER, policies.clock())
    assert (granted.version, granted.products_only) == (2, True)


def test_the_same_body_signed_again_in_the_file_is_still_served(registry):
    policies, folder, _log = registry
    directory = folder / "policies"
    directory.mkdir()
    for day in (20, 21):
        (directory / f"{GRANT}.yaml").write_text(signed_at(SHIPPED, dt.datetime(2026, 11, day, tzinfo=dt.timezone.utc)),
                                                 encoding="utf-8")
        policies.install_files(directory)
    assert policies.grant_for(GRANT, REQUESTER, policies.clock()).version == 1
    assert policies.reused_body_of(policies.store.get_policy(GRANT)) == ""


def test_another_body_the_owner_did_not_sign_changes_nothing(registry, caplog):
    """An edit of the file nobody signed (the stored body's approvals under another body) neither installs nor
    takes the grant out of service: it is logged and ignored."""
    policies, folder, _log = registry
    directory = folder / "policies"
    directory.mkdir()
    signed = document()
    (directory / f"{GRANT}.yaml").write_text(signed, encoding="utf-8")
    policies.install_files(directory)
    body, approvals = signed.split("approvals:\n", 1)
    forged = split_document(sign(PRODUCTS_ONLY))[0] + "approvals:\n" + approvals
    (directory / f"{GRANT}.yaml").write_text(forged, encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="broker.workflow.policy_registry"):
        policies.install_files(directory)
    assert "is not signed by the owner" in caplog.text
    assert not policies.grant_for(GRANT, REQUESTER, policies.clock()).products_only


def test_end_to_end_the_broker_refuses_says_so_and_the_sandbox_it_told_refuses_a_hostile_brokers_replay(
        deployment, caplog):
    """The owner re-signs the grant products-only under version 1 and the broker restarts: the query is refused
    POLICY_VERSION_REUSED (not served under the stored body), ``dsbroker policy show`` and ``list`` say the version
    is reused, and the sandbox, handed the second body at the broker's start, refuses the earlier body that a
    broker turned hostile would send it."""
    from tests.test_cli_workflow import as_actor, run
    with deployment.client() as client:
        assert client.query(GRANT, SQL).rows
    second = sign(PRODUCTS_ONLY)
    (deployment.policies / f"{GRANT}.yaml").write_text(second, encoding="utf-8")
    deployment.broker.stop()
    with caplog.at_level(logging.ERROR, logger="broker.workflow.policy_registry"):
        deployment.broker = start_broker(deployment.settings)
    assert "one version has one body" in caplog.text
    assert_reused(deployment.query_refusal())
    with deployment.client() as client:
        for ask, arguments in ((client.explain, (GRANT, SQL)), (client.run_product, (GRANT, PRODUCT, STREETS))):
            with pytest.raises(DsbrokerError) as caught:
                ask(*arguments)
            assert_reused(caught.value)
    with deployment.owner() as owner:
        shown = owner.get_policy(GRANT)
    assert (shown.state, shown.reused_version_body_sha256) == (policies_pb.POLICY_STATE_ACTIVE, body_sha256(second))
    assert_reused(refusal(deployment.sandbox, plan_for(document())))
    owner_env = as_actor(f"127.0.0.1:{deployment.broker.port}", "city-tax", "320100", "owner")
    said = run({**owner_env, "LANG": "en_US.UTF-8"}, "policy", "show", GRANT)
    assert said.exit_code == 0 and "version 1 is reused" in " ".join(said.output.split())
    listed = run({**owner_env, "LANG": "en_US.UTF-8"}, "policy", "list", "--json")
    assert [p["reused_version_body_sha256"] for p in json.loads(listed.output)["policies"]] == [body_sha256(second)]
    assert "reused" in run({**owner_env, "LANG": "en_US.UTF-8"}, "policy", "list").output  # the table folds it
    requester_env = as_actor(f"127.0.0.1:{deployment.broker.port}", "xuanwu-fgw", XUANWU, "requester")
    from tests.test_cli_chinese import NO_LOCALE
    for language, said in (("en_US.UTF-8", f"grant '{GRANT}' v1 is reused"),
                           ("zh_CN.UTF-8", f"授权 {GRANT} 第 1 版被重复使用")):
        refused = run({**requester_env, **NO_LOCALE, "LANG": language}, "query", "--grant", GRANT, "--sql", SQL)
        assert refused.exit_code != 0 and "POLICY_VERSION_REUSED" in refused.output
        assert said in " ".join(refused.output.split()), refused.output

