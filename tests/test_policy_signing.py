"""Signed policies: the sandbox runs nothing under a policy whose approvals do not verify, whoever edited it."""

from __future__ import annotations

import base64
import re
import datetime as dt
import zoneinfo

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.access_log.log import AccessLog
from broker.client.sdk import BrokerClient
from dsbroker.errors import ConfigError, DsbrokerError
from broker.dev.keys import load_private_key, sign_as, signer_key_id
from dsbroker.policy.signing import (APPROVALS_HEADER, PolicySignatureError, Trust, approval_message, sign_policy,
                                     split_document, verify_policy, with_approval)
from dsbroker.rpc.status import error_from_rpc_error
from broker.server import start_broker
from dsbroker.identity.tls import open_channel
from sandbox.checks.policy import PlanPolicyChecker
from sandbox.ledgers.policies import PolicyLedger
from sandbox.checks.policy_standing import PolicyStanding
from sandbox.v1 import sandbox_service_pb2 as pb
from sandbox.v1 import sandbox_service_pb2_grpc as pb_grpc
from tests.conftest import (GRANT, POLICIES, broker_settings_for, client_tls, dev_keys, sandbox_client_tls, sign,
                            token_for)

UNSIGNED = (POLICIES / f"{GRANT}.yaml").read_text(encoding="utf-8")
COUNT_SQL = "SELECT COUNT(*) AS c FROM tax.declarations"


@pytest.fixture(scope="module")
def trust() -> Trust:
    return Trust.load(dev_keys().trust)


def refusal(text: str, trust: Trust) -> PolicySignatureError:
    with pytest.raises(PolicySignatureError) as caught:
        verify_policy(text, trust)
    return caught.value


def test_a_policy_signed_by_reviewer_and_owner_verifies_and_keeps_its_body(trust):
    signed = sign(UNSIGNED)
    assert signed.startswith(UNSIGNED) and signed.count("ed25519:") == 2
    policy = verify_policy(signed, trust)
    assert (policy.id, policy.min_entities) == (GRANT, 10) and policy.document == signed


def test_changing_any_byte_of_a_signed_policy_is_refused(trust):
    signed = sign(UNSIGNED)
    for position, char in enumerate(signed):
        tampered = signed[:position] + ("x" if char != "x" else "y") + signed[position + 1:]
        with pytest.raises(PolicySignatureError):
            verify_policy(tampered, trust)


@pytest.mark.parametrize("edit", [
    pytest.param(lambda t: t.replace("min_entities: 10", "min_entities: 2"), id="lower the threshold"),
    pytest.param(lambda t: t.replace("  revenue: measure\n", "  revenue: measure\n  legal_person: group\n"),
                 id="add a column"),
    pytest.param(lambda t: t.replace("valid_until: 2027-06-30", "valid_until: 2099-06-30"), id="extend validity"),
    pytest.param(lambda t: t + "  # a comment\n", id="append a comment"),
    pytest.param(lambda t: t.replace("\n  - {role: owner", "\n  -  {role: owner"), id="reformat an approval"),
])
def test_an_edited_policy_is_refused(trust, edit):
    signed = sign(UNSIGNED)
    assert edit(signed) != signed
    assert refusal(edit(signed), trust).reason == "POLICY_SIGNATURE_INVALID"


def test_an_unsigned_policy_is_refused(trust):
    assert "no approvals" in refusal(UNSIGNED, trust).message


def test_the_owners_approval_is_required(trust):
    reviewed_only = sign_as(dev_keys(), UNSIGNED, "xuanwu-tax")
    assert "owner" in refusal(reviewed_only, trust).message


def test_a_key_the_owner_does_not_trust_is_refused(trust):
    forged = sign_policy(sign_as(dev_keys(), UNSIGNED, "xuanwu-tax"), ed25519.Ed25519PrivateKey.generate(),
                         key_id=signer_key_id("city-tax"), role="owner", by="city-tax")
    assert refusal(forged, trust).metadata["key"] == signer_key_id("city-tax")


def test_a_reviewers_key_cannot_sign_as_owner(trust):
    reviewer = load_private_key(dev_keys().signer_key("xuanwu-tax"))
    twice = sign_policy(sign_as(dev_keys(), UNSIGNED, "xuanwu-tax"), reviewer, key_id="xuanwu-tax-1b",
                        role="owner", by="xuanwu-tax")
    assert refusal(twice, trust).reason == "POLICY_SIGNATURE_INVALID"
    with pytest.raises(ConfigError, match="already signed"):
        sign_as(dev_keys(), sign_as(dev_keys(), UNSIGNED, "xuanwu-tax"), "xuanwu-tax")


def test_signing_keeps_earlier_approvals_and_their_times():
    at = dt.datetime(2026, 11, 21, 8, 0, tzinfo=dt.timezone.utc)
    text = sign_policy(UNSIGNED, load_private_key(dev_keys().signer_key("xuanwu-tax")), key_id="xuanwu-tax-1",
                       role="reviewer", by="xuanwu-tax", at=at)
    body, approvals = split_document(sign_as(dev_keys(), text, "city-tax"))
    assert body == UNSIGNED and [a.role for a in approvals] == ["reviewer", "owner"]
    assert approvals[0].at == "2026-11-21T08:00:00Z"


def test_a_broken_trust_file_is_a_clear_error(tmp_path):
    path = tmp_path / "trust.yaml"
    path.write_text("keys: {k: {role: owner, by: x, ed25519: not-base64!}}\n")
    with pytest.raises(ConfigError, match="trust.yaml"):
        Trust.load(path)


@pytest.fixture
def tampering_broker(sandbox, tmp_path):
    """A broker whose operator lowered a signed grant's threshold, beside a second grant left intact."""
    policies = tmp_path / "policies"
    policies.mkdir()
    signed = sign(UNSIGNED)
    (policies / f"{GRANT}.yaml").write_text(signed.replace("min_entities: 10", "min_entities: 2"))
    (policies / "intact.yaml").write_text(sign(UNSIGNED.replace(f"id: {GRANT}", "id: xuanwu-fgw-2026-008")))
    running = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", policies=str(policies)))
    running.log_path = tmp_path / "log.sqlite"
    yield running
    running.stop()


def test_the_sandbox_refuses_a_grant_the_broker_edited_and_the_broker_keeps_serving(tampering_broker):
    with BrokerClient(f"127.0.0.1:{tampering_broker.port}", token=token_for(), tls=client_tls()) as client:
        with pytest.raises(DsbrokerError) as caught:
            client.query(GRANT, COUNT_SQL)
        assert client.query("xuanwu-fgw-2026-008", COUNT_SQL).rows[0][0] > 0
    error = caught.value
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "POLICY_SIGNATURE_INVALID")
    assert "Traceback" not in error.message
    log = AccessLog(tampering_broker.log_path)
    refused = [r for r in log.records() if r.reason == "POLICY_SIGNATURE_INVALID"]
    log.close()
    assert [(r.event, r.decision) for r in refused] == [("query.result", "error")]


def execute(sandbox, plan: pb.Plan) -> DsbrokerError:
    with open_channel(f"127.0.0.1:{sandbox.port}", tls=sandbox_client_tls(), options=[]) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.SandboxServiceStub(channel).ExecutePlan(pb.ExecutePlanRequest(plan=plan), timeout=10)
    return error_from_rpc_error(caught.value)


@pytest.mark.parametrize("changes, reason", [
    ({"policy_document": ""}, "POLICY_SIGNATURE_INVALID"),
    ({"policy_document": UNSIGNED}, "POLICY_SIGNATURE_INVALID"),
    ({"policy_id": "another-grant"}, "PLAN_POLICY_MISMATCH"),
    ({"policy_version": 2}, "PLAN_POLICY_MISMATCH"),
    ({"dataset": "tax.streets"}, "PLAN_POLICY_MISMATCH"),
])
def test_the_sandbox_checks_the_plan_against_its_signed_policy(sandbox, changes, reason):
    plan = {"dataset": "tax.declarations", "sql": COUNT_SQL, "policy_id": GRANT, "policy_version": 1,
            "max_rows": 10, "policy_document": sign(UNSIGNED), **changes}
    error = execute(sandbox, pb.Plan(**plan))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, reason)


def test_a_signature_respelled_in_base64_is_refused(trust):
    # Regression: the last base64 character of a 64-byte signature carries 4 spare bits, so
    # flipping one of them changed a byte of the file without changing the decoded signature.
    signed = sign(UNSIGNED)
    end = signed.rindex('=="}')
    last = signed[end - 1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    respelled = alphabet[alphabet.index(last) ^ 1]
    tampered = signed[:end - 1] + respelled + signed[end:]
    assert base64.b64decode(tampered[tampered.rindex("ed25519:") + 8:end + 2]) == \
        base64.b64decode(signed[signed.rindex("ed25519:") + 8:end + 2]), "same signature bytes, another spelling"
    assert refusal(tampered, trust).reason == "POLICY_SIGNATURE_INVALID"


@pytest.mark.parametrize("now, active", [
    (dt.datetime(2027, 6, 30, 15, 59, tzinfo=dt.timezone.utc), True),   # 23:59 on 30 June in Shanghai
    (dt.datetime(2027, 6, 30, 16, 0, tzinfo=dt.timezone.utc), False),   # 00:00 on 1 July in Shanghai
])
def test_the_sandbox_checks_validity_on_the_owners_day(trust, now, active, tmp_path):
    standing = PolicyStanding(trust, PolicyLedger(tmp_path / "policies.sqlite"))
    checker = PlanPolicyChecker(trust, standing=standing, owner_timezone=zoneinfo.ZoneInfo("Asia/Shanghai"),
                                clock=lambda: now)
    plan = pb.Plan(dataset="tax.declarations", sql=COUNT_SQL, policy_id=GRANT, policy_version=1,
                   policy_document=sign(UNSIGNED))
    if active:
        assert checker.check(plan).id == GRANT
    else:
        with pytest.raises(DsbrokerError) as caught:
            checker.check(plan)
        assert caught.value.reason == "GRANT_NOT_ACTIVE"


def narrowed_pair():
    """A draft signed by the reviewer, and the owner's narrowing of it carrying that approval."""
    from broker.workflow.policy_draft import narrow_policy

    draft = UNSIGNED.split(APPROVALS_HEADER)[0]
    reviewed = sign_as(dev_keys(), draft, "xuanwu-tax")
    _, approvals = split_document(reviewed)
    narrowed = narrow_policy(draft, min_entities=15)
    carried = narrowed + APPROVALS_HEADER + "".join(a.render() for a in approvals)
    owner_key = load_private_key(dev_keys().signer_key("city-tax"))
    return draft, carried, lambda text: sign_policy(text, owner_key, key_id=signer_key_id("city-tax"), role="owner",
                                                     by="city-tax")


def test_the_owner_may_narrow_a_reviewed_draft(trust):
    _, carried, owner_signs = narrowed_pair()
    policy = verify_policy(owner_signs(carried), trust)
    assert policy.min_entities == 15 and policy.narrows.startswith("sha256:")


def test_a_narrowing_without_the_owners_signature_over_it_is_refused(trust):
    draft, carried, owner_signs = narrowed_pair()
    # The owner signed the draft; a broker swaps in another body naming the draft: the owner's signature fails.
    owner_signed_draft = owner_signs(sign_as(dev_keys(), draft, "xuanwu-tax"))
    _, approvals = split_document(owner_signed_draft)
    swapped = carried.split(APPROVALS_HEADER)[0] + APPROVALS_HEADER + "".join(a.render() for a in approvals)
    assert refusal(swapped, trust).reason == "POLICY_SIGNATURE_INVALID"
    assert "lacks the owner" in refusal(carried, trust).message


def test_a_reviewer_signature_does_not_follow_a_body_that_names_another_draft(trust):
    _, carried, owner_signs = narrowed_pair()
    other = re.sub(r'narrows: "sha256:[0-9a-f]{64}"', 'narrows: "sha256:' + "0" * 64 + '"', carried)
    assert other != carried
    assert refusal(owner_signs(other), trust).reason == "POLICY_SIGNATURE_INVALID"


# -- documents anyone may send are not parsed as YAML before a signature vouches for them --------------------

def laughs(levels: int = 6) -> str:
    """A YAML alias bomb: ``levels`` lines of anchors, each ten aliases of the one before (10**levels values)."""
    lines = ['a0: &a0 ["laugh"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def flow_laughs(levels: int = 6) -> str:
    """The same bomb on one line, as a flow sequence: it fits where an approval's value goes."""
    chain = ["&a0 [laugh]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return f"[{', '.join(chain)}]"


def test_an_alias_bomb_in_the_approvals_block_is_refused_unread(trust):
    # The block was read with yaml.safe_load and each value turned to text: an alias there stood for a
    # million values before anything was checked (and the block was then refused as not canonical). It is
    # now read line by line in the one canonical form, and refused as malformed without expanding anything.
    body = sign(UNSIGNED).split(APPROVALS_HEADER)[0]
    line = f"  - {{role: reviewer, by: xuanwu-tax, key: xuanwu-tax-1, at: {flow_laughs()}, signature: x}}\n"
    for block in (APPROVALS_HEADER + line, APPROVALS_HEADER + "  - *a6\n" + laughs()):
        with pytest.raises(PolicySignatureError) as caught:
            split_document(body + block)
        assert "malformed" in caught.value.message
        assert refusal(body + block, trust).reason == "POLICY_SIGNATURE_INVALID"


def test_a_policy_with_anchors_or_aliases_does_not_parse_and_names_the_line():
    from dsbroker.errors import PolicyFileError
    from dsbroker.policy.model import parse_policy

    body = UNSIGNED.split(APPROVALS_HEADER)[0]
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(body + laughs())
    assert "aliases" in caught.value.message and caught.value.line == body.count("\n") + 1


def test_a_reviewers_approval_is_followed_to_a_narrowed_body_only_when_the_owner_signed_that_body(trust):
    # A reviewer's signature over a draft is followed to a narrowed body (through its ``narrows``) only when
    # the owner signed that body; before, the body was parsed for ``narrows`` first, so under a trust that
    # requires the reviewer only, any body naming the draft took the reviewer's signature with it.
    draft, carried, owner_signs = narrowed_pair()
    reviewer_only = Trust(trust.keys, ("reviewer",))
    error = refusal(carried, reviewer_only)
    assert error.reason == "POLICY_SIGNATURE_INVALID" and "does not verify" in error.message
    assert verify_policy(owner_signs(carried), trust).narrows, "with the owner's signature the link holds"


def test_the_sandbox_refuses_a_plan_whose_policy_carries_an_alias_bomb_and_keeps_serving(sandbox):
    signed = sign(UNSIGNED)
    body = signed.split(APPROVALS_HEADER)[0]
    plan = {"dataset": "tax.declarations", "sql": COUNT_SQL, "policy_id": GRANT, "policy_version": 1, "max_rows": 10,
            "policy_document": body + APPROVALS_HEADER + f"  - {{role: owner, by: city-tax, key: city-tax-1, at: "
                                                         f"{flow_laughs()}, signature: x}}\n"}
    error = execute(sandbox, pb.Plan(**plan))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "POLICY_SIGNATURE_INVALID")
    assert execute(sandbox, pb.Plan(**{**plan, "policy_document": signed, "policy_id": "x"})).reason == \
        "PLAN_POLICY_MISMATCH", "it keeps serving"


def test_signer_names_and_key_ids_are_ones_an_approval_line_reads_back():
    with pytest.raises(ConfigError):
        sign_policy(UNSIGNED.split(APPROVALS_HEADER)[0], ed25519.Ed25519PrivateKey.generate(), key_id="a key, {x}",
                    role="reviewer", by="xuanwu-tax")


def test_signing_elsewhere_the_bytes_approval_message_hands_out_gives_what_sign_policy_gives(trust):
    # The web console hands these bytes to the browser, which signs them with WebCrypto; the result must be the
    # document the CLI would have sent, and verify.
    at = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.timezone.utc)
    document = UNSIGNED
    for signer, role in (("xuanwu-tax", "reviewer"), ("city-tax", "owner")):
        key = load_private_key(dev_keys().signer_key(signer))
        stamp, message = approval_message(document, key_id=signer_key_id(signer), role=role, by=signer, at=at)
        elsewhere = with_approval(document, key_id=signer_key_id(signer), role=role, by=signer, stamp=stamp,
                                  signature=key.sign(message))
        assert elsewhere == sign_policy(document, key, key_id=signer_key_id(signer), role=role, by=signer, at=at)
        document = elsewhere
    assert verify_policy(document, trust).id == GRANT
    forged = with_approval(UNSIGNED, key_id=signer_key_id("city-tax"), role="owner", by="city-tax", stamp=stamp,
                           signature=bytes(64))
    assert "does not verify" in str(refusal(sign_as(dev_keys(), forged, "xuanwu-tax"), trust))
