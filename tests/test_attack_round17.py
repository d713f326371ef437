"""Attack round 17: one body per version, from a hostile broker, an operator of the broker's host and a department.

The owner re-signs its grant products-only under version 1 (body B, ``PRODUCTS_ONLY``) after the SQL-answering body
A (the shipped grant) served. A hostile broker holds both signed documents and wants A answered; an operator of the
broker's host can edit its policies directory and store and restart it. Each test is one attack: those that get
through are findings and fail until fixed; the others pin what held.

Every sandbox here is the test's own, its ledgers under the test's directory (the run's shared sandbox has the rule
off).
"""

from __future__ import annotations

import sqlite3
import threading

import grpc
import pytest

from broker.dev.keys import load_private_key, signer_key_id
from broker.server import start_broker
from dsbroker.errors import ConfigError, DsbrokerError, PolicyLedgerError
from dsbroker.policy.signing import Trust, body_sha256, sign_policy, split_document, verify_policy
from dsbroker.settings import load_settings
from dsbroker.rpc.status import error_from_rpc_error
from sandbox.settings import SandboxSettings
from tests.conftest import GRANT, dev_keys, revocation, sign
from tests.test_hostile_broker import (SHIPPED, deployment, document, execute, own, plan_for,  # noqa: F401
                                       publish, refusal)
from tests.test_policy_registry import REQUESTER, registry  # noqa: F401 (fixture)
from tests.test_policy_versions import products_only_plan
from tests.test_products import PRODUCTS_ONLY

OTHER_GRANT = "xuanwu-fgw-2026-099"


def assert_reused(error: DsbrokerError) -> None:
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "POLICY_VERSION_REUSED"), error
    assert (error.metadata["policy"], str(error.metadata["version"])) == (GRANT, "1")


def start(own, tmp_path, name: str, **overrides):
    """A sandbox of the test's own whose every ledger is under ``tmp_path`` (named ``name``), unless overridden."""
    ledgers = {"policy_ledger": str(tmp_path / f"{name}-policies.sqlite"),
               "execution_ledger": str(tmp_path / f"{name}-executions.sqlite"),
               "privacy_ledger": str(tmp_path / f"{name}-privacy.sqlite"),
               "released_cells": str(tmp_path / f"{name}-released.sqlite")}
    return own.start(**{**ledgers, **overrides})


def reattached(body: str, signed: str) -> str:
    """``body`` followed by the approvals block of ``signed``: a broker's edit of the body under the owner's
    signatures."""
    return body + signed[len(split_document(signed)[0]):]


def reviewer_only(text: str) -> str:
    """``text`` signed by the development reviewer alone (a draft the owner has not approved)."""
    return sign_policy(text, load_private_key(dev_keys().signer_key("xuanwu-tax")), key_id=signer_key_id("xuanwu-tax"),
                       role="reviewer", by="xuanwu-tax")


# -- findings -------------------------------------------------------------------------------------

def test_a_sandbox_sharing_its_policy_ledger_refuses_the_first_body_once_the_other_process_recorded_a_second(
        own, tmp_path):
    """FINDING. Two sandbox processes over one policy ledger file (the ledger's own comment says another process may
    record into it). The broker shows B to process two only, which records it in the shared file and refuses
    version 1; process one keeps its bodies in memory and re-reads the file only when it records a body it has not
    seen itself, so the A it already knows keeps answering there, although its own ledger file says version 1 has
    two bodies. A hostile broker routes its replays of A to process one."""
    shared = str(tmp_path / "shared-policies.sqlite")
    one = start(own, tmp_path, "one", policy_ledger=shared)
    two = start(own, tmp_path, "two", policy_ledger=shared)
    assert execute(one, plan_for(document())).table.row_count == 7
    publish(two, documents=[sign(PRODUCTS_ONLY)])
    assert_reused(refusal(two, plan_for(document())))
    with sqlite3.connect(shared) as raw:
        assert raw.execute("SELECT COUNT(*) FROM bodies WHERE policy_id = ? AND version = 1",
                           (GRANT,)).fetchone() == (2,), "the shared file holds both bodies"
    assert_reused(refusal(one, plan_for(document())))


def test_a_sandbox_sharing_its_policy_ledger_refuses_a_version_the_other_process_saw_superseded(own, tmp_path):
    """FINDING (same cause, older than one body per version). Version 2 reaches process two only; process one, over
    the same ledger file, keeps answering version 1 (POLICY_SUPERSEDED is read from memory)."""
    shared = str(tmp_path / "shared-policies.sqlite")
    one = start(own, tmp_path, "one", policy_ledger=shared)
    two = start(own, tmp_path, "two", policy_ledger=shared)
    assert execute(one, plan_for(document(1))).table.row_count == 7
    publish(two, documents=[document(2)])
    assert refusal(two, plan_for(document(1))).reason == "POLICY_SUPERSEDED"
    assert refusal(one, plan_for(document(1))).reason == "POLICY_SUPERSEDED"


def test_a_sandbox_sharing_its_policy_ledger_refuses_a_version_the_other_process_learnt_revoked(own, tmp_path):
    """FINDING (same cause, older than one body per version). The owner's revocation reaches process two only (the
    push, or the owner's directory of that process); process one, over the same ledger file, keeps answering the
    revoked grant for a broker that sends it plans without the statement."""
    shared = str(tmp_path / "shared-policies.sqlite")
    one = start(own, tmp_path, "one", policy_ledger=shared)
    two = start(own, tmp_path, "two", policy_ledger=shared)
    assert execute(one, plan_for(document())).table.row_count == 7
    publish(two, statements=[revocation(GRANT)])
    assert refusal(two, plan_for(document())).reason == "POLICY_REVOKED"
    assert refusal(one, plan_for(document())).reason == "POLICY_REVOKED"


@pytest.mark.parametrize("staged", ["unsigned", "signed by the reviewer only"])
def test_one_unverifiable_stored_policy_does_not_keep_the_second_body_from_the_sandbox(deployment, staged):
    """FINDING. The broker hands the sandboxes its stored documents and then the refused second bodies, in batches of
    which the sandbox refuses a whole one if any document in it does not verify, and the broker stops at the first
    refused batch. Stored documents are not verified when installed (only the refused bodies are filtered), so one
    policy file nobody signed, or one signed with keys the sandbox's trust file no longer holds, in the broker's
    directory keeps every second body (and every newer version after it) from every sandbox at each start. The
    honest broker refuses the version itself, but the sandbox never learns B and answers A for the broker once it
    turns hostile (or for an operator who also edits the store)."""
    other = SHIPPED.replace(f"id: {GRANT}", f"id: {OTHER_GRANT}", 1)  # another grant, staged before the owner signs
    other = other if staged == "unsigned" else reviewer_only(other)
    (deployment.policies / f"{OTHER_GRANT}.yaml").write_text(other, encoding="utf-8")
    (deployment.policies / f"{GRANT}.yaml").write_text(sign(PRODUCTS_ONLY), encoding="utf-8")
    deployment.broker.stop()
    deployment.broker = start_broker(deployment.settings)
    assert_reused(deployment.query_refusal())  # the broker itself refuses the version: that holds
    assert_reused(refusal(deployment.sandbox, plan_for(document())))


def test_an_unsigned_stored_body_does_not_make_the_owners_signed_body_of_its_version_a_refused_second_one(registry):
    """FINDING. An operator (by mistake or on purpose) installs an unsigned draft of the grant (here: the draft
    before the owner raised the threshold), then the owner's signed file of version 1, the only body of it the
    owner ever signed. Files are installed without being verified, so the draft is the stored body; the owner's
    body is then "another body of the stored version", verifies, and is kept as refused: the broker refuses the
    grant POLICY_VERSION_REUSED for good (until a new version), and its access log records the owner's only body
    as a second one. The README says an edit nobody signed changes nothing."""
    policies, folder, _log = registry
    directory = folder / "policies"
    directory.mkdir()
    draft = SHIPPED.replace("min_entities: 10", "min_entities: 20", 1)
    assert draft != SHIPPED
    (directory / f"{GRANT}.yaml").write_text(draft, encoding="utf-8")  # nobody signed it
    policies.install_files(directory)
    (directory / f"{GRANT}.yaml").write_text(document(), encoding="utf-8")
    policies.install_files(directory)
    assert policies.reused_body_of(policies.store.get_policy(GRANT)) == "", \
        "the owner's only signed body of version 1 is no second body"
    assert policies.grant_for(GRANT, REQUESTER, policies.clock()).version == 1


def test_the_owners_signature_of_an_unsigned_stored_body_is_what_the_broker_serves(registry):
    """FINDING (low). The operator copies the grant into the policies directory before the owner signed it (or
    before anyone did); then the owner's signed file of the same body. "The stored body signed again" keeps the
    stored document, so the broker serves the unsigned one for good: every plan carries a document without the
    owner's approval, refused POLICY_SIGNATURE_INVALID by every sandbox, until a new version."""
    policies, folder, _log = registry
    directory = folder / "policies"
    directory.mkdir()
    (directory / f"{GRANT}.yaml").write_text(SHIPPED, encoding="utf-8")  # nobody signed it yet
    policies.install_files(directory)
    signed = document()
    assert body_sha256(signed) == body_sha256(SHIPPED)
    (directory / f"{GRANT}.yaml").write_text(signed, encoding="utf-8")
    policies.install_files(directory)
    served = policies.grant_for(GRANT, REQUESTER, policies.clock())
    verify_policy(served.document, Trust.load(dev_keys().trust))


# -- what held: canonicalisation of the body bytes --------------------------------------------------

def _edits(body: str) -> dict[str, str]:
    """Edits of a signed body that YAML reads alike (or nearly), as a broker would try them."""
    return {
        "a comment appended": body + "# re-signed products-only\n",
        "a trailing space": body.replace("\n", " \n", 1),
        "a blank line": body + "\n",
        "CRLF line endings": body.replace("\n", "\r\n"),
        "a byte order mark": "\ufeff" + body,
        "results as a block list": body.replace("results: [aggregate]\n", "results:\n  - aggregate\n"),
        "the version in hex": body.replace("\nversion: 1\n", "\nversion: 0x1\n"),
        "an inline approvals key": body + "approvals: []\n",
    }


@pytest.mark.parametrize("edit", list(_edits("")))
def test_an_edited_body_under_the_owners_approvals_is_refused_and_recorded_nowhere(own, tmp_path, edit):
    """A broker cannot make a second body without the owner's key: the body is signed byte for byte, so a comment,
    whitespace, line endings, a BOM or a YAML equivalent under the owner's approvals is refused, pushed or in a
    plan, and A, the only body signed, keeps answering (no POLICY_VERSION_REUSED)."""
    sandbox = start(own, tmp_path, "s")
    signed = document()
    forged = reattached(_edits(split_document(signed)[0])[edit], signed)
    assert forged != signed
    with pytest.raises(grpc.RpcError) as caught:
        publish(sandbox, documents=[forged])
    assert error_from_rpc_error(caught.value).reason == "POLICY_SIGNATURE_INVALID"
    assert refusal(sandbox, plan_for(signed, policy_document=forged)).reason == "POLICY_SIGNATURE_INVALID"
    assert execute(sandbox, plan_for(signed)).table.row_count == 7


@pytest.mark.parametrize("layout", ["approvals first", "a second approvals block", "CRLF approvals block",
                                    "approvals before the last key"])
def test_an_approvals_block_moved_or_doubled_does_not_verify(own, tmp_path, layout):
    sandbox = start(own, tmp_path, "s")
    signed = document()
    body, block = split_document(signed)[0], signed[len(split_document(signed)[0]):]
    forged = {"approvals first": block + body,
              "a second approvals block": signed + block,
              "CRLF approvals block": body + block.replace("\n", "\r\n"),
              "approvals before the last key": body.replace("results: [aggregate]\n", "") + block
              + "results: [aggregate]\n"}[layout]
    assert refusal(sandbox, plan_for(signed, policy_document=forged)).reason == "POLICY_SIGNATURE_INVALID"
    assert execute(sandbox, plan_for(signed)).table.row_count == 7


def test_the_same_body_with_its_approvals_reordered_or_repeated_is_one_body(own, tmp_path):
    """The documents a broker can make from one signed body (approvals in another order, one repeated) hash as one
    body: none of them turns the version into a reused one."""
    sandbox = start(own, tmp_path, "s")
    signed = document()
    body = split_document(signed)[0]
    header, reviewer, owner = signed[len(body):].splitlines(keepends=True)
    for variant in (signed, body + header + owner + reviewer, body + header + reviewer + owner + owner):
        assert body_sha256(variant) == body_sha256(signed)
        assert execute(sandbox, plan_for(variant)).table.row_count == 7


def test_a_draft_the_owner_did_not_approve_is_no_body_of_the_version(own, tmp_path):
    """A broker holds every reviewer-signed draft; without the owner's approval it verifies nowhere, so it cannot be
    shown to the sandbox as a second body to take the owner's grant out of service."""
    sandbox = start(own, tmp_path, "s")
    draft = reviewer_only(PRODUCTS_ONLY)
    with pytest.raises(grpc.RpcError) as caught:
        publish(sandbox, documents=[draft])
    assert error_from_rpc_error(caught.value).reason == "POLICY_SIGNATURE_INVALID"
    assert refusal(sandbox, plan_for(document(), policy_document=draft)).reason == "POLICY_SIGNATURE_INVALID"
    assert execute(sandbox, plan_for(document())).table.row_count == 7


# -- what held: ordering, races, restarts, the directory -------------------------------------------

def test_the_second_body_shown_first_to_a_fresh_sandbox_refuses_the_first_body_after_it(own, tmp_path):
    """Order does not matter: a sandbox shown B first (it answers B, the owner's newest) refuses A once it sees it,
    and B from then on."""
    sandbox = start(own, tmp_path, "s")
    assert publish(sandbox, documents=[sign(PRODUCTS_ONLY)]).policy_versions_added == 1
    assert_reused(refusal(sandbox, plan_for(document())))
    assert_reused(refusal(sandbox, products_only_plan(sign(PRODUCTS_ONLY))))


def test_two_plans_of_two_bodies_at_once_leave_at_most_one_answered_and_both_refused_after(own, tmp_path):
    sandbox = start(own, tmp_path, "s")
    plans = [plan_for(document()), products_only_plan(sign(PRODUCTS_ONLY))]
    outcomes: list[str] = [""] * len(plans)
    ready = threading.Barrier(len(plans))

    def run(index: int) -> None:
        ready.wait()
        try:
            execute(sandbox, plans[index])
            outcomes[index] = "answered"
        except grpc.RpcError as error:
            outcomes[index] = error_from_rpc_error(error).reason

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(plans))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("answered") <= 1 and set(outcomes) <= {"answered", "POLICY_VERSION_REUSED",
                                                                 "AD_HOC_QUERY_NOT_GRANTED"}, outcomes
    for plan in (plan_for(document()), products_only_plan(sign(PRODUCTS_ONLY))):
        assert_reused(refusal(sandbox, plan))


def test_a_deleted_policy_ledger_learns_the_second_body_again_from_the_owners_directory(own, tmp_path):
    directory = tmp_path / "owner"
    directory.mkdir()
    (directory / f"{GRANT}.yaml").write_text(sign(PRODUCTS_ONLY), encoding="utf-8")
    sandbox = start(own, tmp_path, "s", statements=str(directory))
    assert_reused(refusal(sandbox, plan_for(document())))
    sandbox.stop()
    for path in tmp_path.glob("s-policies.sqlite*"):
        path.unlink()
    sandbox = start(own, tmp_path, "s", statements=str(directory))
    assert_reused(refusal(sandbox, plan_for(document())))


def test_a_second_body_in_the_owners_directory_with_crlf_line_endings_is_still_read(own, tmp_path):
    """A file copied through a tool that writes CRLF is read in text mode, as the owner signed it."""
    directory = tmp_path / "owner"
    directory.mkdir()
    sandbox = start(own, tmp_path, "s", statements=str(directory))
    assert execute(sandbox, plan_for(document())).table.row_count == 7
    (directory / f"{GRANT}.yaml").write_bytes(sign(PRODUCTS_ONLY).replace("\n", "\r\n").encode("utf-8"))
    assert_reused(refusal(sandbox, plan_for(document())))


def test_a_corrupted_policy_ledger_stops_the_start(own, tmp_path):
    """Fail closed: a ledger file that is not a database is not replaced by an empty one that forgot B."""
    (tmp_path / "s-policies.sqlite").write_bytes(b"not a database" * 512)
    with pytest.raises(PolicyLedgerError) as raised:  # naming the file, not SQLite's bare error
        start(own, tmp_path, "s")
    assert "s-policies.sqlite" in raised.value.message and raised.value.reason == "POLICY_LEDGER_UNAVAILABLE"


# -- what held: revocations and versions, the setting, the refusal ---------------------------------

def test_a_reused_version_revoked_is_refused_as_revoked_and_a_new_version_ends_the_reuse(own, tmp_path):
    sandbox = start(own, tmp_path, "s")
    publish(sandbox, documents=[document(), sign(PRODUCTS_ONLY)])
    assert_reused(refusal(sandbox, plan_for(document())))
    publish(sandbox, statements=[revocation(GRANT, through_version=1)])
    assert refusal(sandbox, plan_for(document())).reason == "POLICY_REVOKED"
    assert execute(sandbox, plan_for(document(2))).table.row_count == 7
    assert refusal(sandbox, products_only_plan(sign(PRODUCTS_ONLY))).reason == "POLICY_REVOKED"


def test_a_newer_version_supersedes_a_reused_one(own, tmp_path):
    sandbox = start(own, tmp_path, "s")
    publish(sandbox, documents=[document(), sign(PRODUCTS_ONLY), document(2)])
    assert refusal(sandbox, plan_for(document())).reason == "POLICY_SUPERSEDED"
    assert execute(sandbox, plan_for(document(2))).table.row_count == 7


def test_the_rule_is_the_owners_setting_and_a_text_does_not_turn_it_off(tmp_path):
    config = tmp_path / "sandbox.toml"
    config.write_text('one_body_per_version = "false"\n', encoding="utf-8")
    with pytest.raises(ConfigError):
        load_settings(SandboxSettings, config)
    assert SandboxSettings().one_body_per_version is True


def test_the_refusal_names_the_policy_and_version_only_and_is_the_same_for_either_body(own, tmp_path):
    """Nothing in the refusal tells a department (or a broker) which body came first, or either body's digest."""
    sandbox = start(own, tmp_path, "s")
    publish(sandbox, documents=[document(), sign(PRODUCTS_ONLY)])
    first, second = refusal(sandbox, plan_for(document())), refusal(sandbox, products_only_plan(sign(PRODUCTS_ONLY)))
    for error in (first, second):
        assert_reused(error)
        assert set(error.metadata) <= {"policy", "version"}, error.metadata
        for digest in (body_sha256(document()), body_sha256(sign(PRODUCTS_ONLY))):
            assert digest[:8] not in error.message
    assert first.message == second.message


def test_a_version_past_what_a_ledger_keeps_is_refused_where_the_policy_is_read():
    """A version of 2^63 or more overflowed SQLite's INTEGER in the sandbox's ledger (OverflowError, no reason);
    only the owner can sign one, but the policy's loader refuses it, naming the file and line."""
    from dsbroker.policy.model import parse_policy

    with pytest.raises(DsbrokerError) as raised:
        parse_policy(SHIPPED.replace("version: 1", f"version: {2 ** 63}", 1), source="huge.yaml")
    assert raised.value.reason == "POLICY_INVALID" and "version" in raised.value.message
