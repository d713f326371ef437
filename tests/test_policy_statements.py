"""Owner-signed revocation statements: one canonical line, signed by a key the trust file holds for the owner."""

from __future__ import annotations

import json

import pytest

from dsbroker.errors import ConfigError, DsbrokerError
from dsbroker.policy.signing import Trust
from dsbroker.policy.statements import parse_statement, verify_statement
from tests.conftest import GRANT, dev_keys, revocation


@pytest.fixture(scope="module")
def trust() -> Trust:
    return Trust.load(dev_keys().trust)


def test_a_revocation_verifies_and_says_which_versions_it_covers(trust):
    every = verify_statement(revocation(GRANT, "report published"), trust)
    assert (every.policy_id, every.reason, every.by) == (GRANT, "report published", "city-tax")
    assert every.covers(1) and every.covers(99) and every.versions == "every version"
    first_two = verify_statement(revocation(GRANT, through_version=2), trust)
    assert first_two.covers(2) and not first_two.covers(3) and first_two.versions == "versions 1 to 2"
    assert every.sha256 != first_two.sha256 and len(every.sha256) == 64


def test_a_statement_is_one_canonical_line(trust):
    text = revocation(GRANT)
    assert "\n" not in text and text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert parse_statement(text + "\n") == parse_statement(text), "a trailing newline (a file's) is not a change"


@pytest.mark.parametrize("change, reason", [
    (dict(kind="suspension"), "STATEMENT_INVALID"),
    (dict(versions=0), "STATEMENT_INVALID"),
    (dict(versions="some"), "STATEMENT_INVALID"),
    (dict(versions=True), "STATEMENT_INVALID"),
    (dict(policy="../etc"), "STATEMENT_INVALID"),
    (dict(reason=" "), "STATEMENT_INVALID"),
    (dict(at="yesterday"), "STATEMENT_INVALID"),
    (dict(extra="x"), "STATEMENT_INVALID"),
    (dict(signature="ed25519:AAAA"), "STATEMENT_SIGNATURE_INVALID"),
    (dict(signature="rsa:AAAA"), "STATEMENT_SIGNATURE_INVALID"),
    (dict(at="2030-01-01T00:00:00Z"), "STATEMENT_SIGNATURE_INVALID"),
])
def test_an_edited_or_malformed_statement_is_refused(trust, change, reason):
    fields = {**json.loads(revocation(GRANT)), **change}
    with pytest.raises(DsbrokerError) as caught:
        verify_statement(json.dumps(fields, sort_keys=True, separators=(",", ":")), trust)
    assert caught.value.reason == reason


def test_only_a_key_trusted_for_the_owner_role_signs_a_revocation(trust):
    with pytest.raises(DsbrokerError) as caught:
        verify_statement(revocation(GRANT, signer="xuanwu-tax"), trust)
    assert caught.value.reason == "STATEMENT_SIGNATURE_INVALID" and caught.value.metadata["policy"] == GRANT


@pytest.mark.parametrize("arguments", [dict(policy_id="Not An Id"), dict(reason=""), dict(through_version=0)])
def test_signing_refuses_what_would_not_read_back(arguments):
    from broker.dev.keys import load_private_key
    from dsbroker.policy.statements import sign_revocation

    fields = dict(policy_id=GRANT, reason="why", through_version=None) | arguments
    with pytest.raises(ConfigError):
        sign_revocation(load_private_key(dev_keys().signer_key("city-tax")), key_id="city-tax-1", by="city-tax",
                        **fields)
