"""Owner-signed statements about policies: a revocation the owner signs reaches every sandbox as is.

The broker is run by a third party and may be hostile, so the owner's "this grant is revoked" cannot
be a row in the broker's store: a broker could ignore it, lose it with its store, or never tell the
sandbox. A **revocation** is therefore a small document the owner signs with the same Ed25519 key
(and trust file) as its approvals, on its own machine (``dsbroker policy revoke``). The broker checks
and keeps it and passes it on; the sandbox verifies it against its own trust file and refuses the
policy from then on, whatever the broker says. The owner can also hand the file to a sandbox directly.

A statement is one line of canonical JSON (keys sorted, no spaces), so its SHA-256 names it and no
byte can change without it failing to verify::

    {"at":"2026-11-21T09:30:00Z","by":"city-tax","key":"city-tax-1","kind":"revocation",
     "policy":"xuanwu-fgw-2026-007","reason":"report published","signature":"ed25519:...","versions":"all"}

``versions`` is ``"all"`` (the policy id is revoked for good, later versions included) or a whole
number N: every version up to and including N (a later version the owner signs stays usable).
The signature covers :data:`STATEMENT_CONTEXT` and the canonical JSON of every other field.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from dsbroker.errors import ConfigError, StatementError, StatementSignatureError
from dsbroker.policy.signing import SIGNATURE_PREFIX, Trust

STATEMENT_CONTEXT = b"dsbroker-owner-statement-v1\n"
KINDS = ("revocation",)
FIELDS = ("at", "by", "key", "kind", "policy", "reason", "signature", "versions")
ALL_VERSIONS = "all"
MAX_STATEMENT_BYTES = 4096
_POLICY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Revocation:
    """The owner's revocation of a policy's versions up to ``through_version`` (None: every version)."""

    policy_id: str
    through_version: int | None
    at: str
    reason: str
    by: str
    key: str
    signature: str

    def covers(self, version: int) -> bool:
        """Whether this revocation applies to ``version`` of its policy."""
        return self.through_version is None or version <= self.through_version

    @property
    def fields(self) -> dict:
        """Every field as it is written, signature included."""
        return {"at": self.at, "by": self.by, "key": self.key, "kind": "revocation", "policy": self.policy_id,
                "reason": self.reason, "signature": self.signature,
                "versions": ALL_VERSIONS if self.through_version is None else self.through_version}

    @property
    def text(self) -> str:
        """The statement's one canonical line (no newline)."""
        return _canonical(self.fields)

    @property
    def sha256(self) -> str:
        """The SHA-256 (hex) of :attr:`text`: the statement's name."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def versions(self) -> str:
        """For people: "every version" or "versions 1 to N"."""
        return "every version" if self.through_version is None else f"versions 1 to {self.through_version}"


def signed_bytes(fields: dict) -> bytes:
    """The bytes the owner signs: the context and the canonical JSON of every field but the signature."""
    return STATEMENT_CONTEXT + _canonical({k: v for k, v in fields.items() if k != "signature"}).encode("utf-8")


def sign_revocation(private_key: ed25519.Ed25519PrivateKey, *, key_id: str, by: str, policy_id: str, reason: str,
                    through_version: int | None = None, at: dt.datetime | None = None) -> str:
    """A revocation of ``policy_id`` (every version, or those up to ``through_version``), signed; its text."""
    if not _POLICY_ID.match(policy_id):
        raise ConfigError(f"{policy_id!r} is not a policy id")
    if not reason.strip():
        raise ConfigError("a revocation needs a reason")
    if through_version is not None and through_version < 1:
        raise ConfigError("the version to revoke through must be 1 or more")
    stamp = (at or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).strftime(_STAMP)
    unsigned = Revocation(policy_id, through_version, stamp, reason.strip(), by, key_id, "")
    signature = private_key.sign(signed_bytes(unsigned.fields))
    text = Revocation(policy_id, through_version, stamp, reason.strip(), by, key_id,
                      SIGNATURE_PREFIX + base64.b64encode(signature).decode()).text
    parse_statement(text)  # sign only what reads back
    return text


def parse_statement(text: str) -> Revocation:
    """The statement in ``text`` (unverified); StatementError unless it is one canonical statement line."""
    text = text.strip()
    if len(text.encode("utf-8")) > MAX_STATEMENT_BYTES:
        raise StatementError(f"a statement is at most {MAX_STATEMENT_BYTES} bytes")
    try:
        fields = json.loads(text)
    except ValueError:
        raise StatementError("the statement is not JSON") from None
    if not isinstance(fields, dict) or set(fields) != set(FIELDS):
        raise StatementError(f"a statement has exactly the fields {', '.join(FIELDS)}")
    if fields["kind"] not in KINDS:
        raise StatementError(f"unknown statement kind {str(fields['kind'])[:32]!r}")
    texts = [name for name in FIELDS if name != "versions" and not isinstance(fields[name], str)]
    if texts:
        raise StatementError(f"the statement's {texts[0]!r} must be text", statement_field=texts[0])
    versions = fields["versions"]
    if versions != ALL_VERSIONS and (isinstance(versions, bool) or not isinstance(versions, int) or versions < 1):
        raise StatementError("versions must be \"all\" or a version number", statement_field="versions")
    if not _POLICY_ID.match(fields["policy"]):
        raise StatementError("the statement does not name a policy id", statement_field="policy")
    if not fields["reason"].strip():
        raise StatementError("a revocation needs a reason", statement_field="reason")
    try:
        dt.datetime.strptime(fields["at"], _STAMP)
    except ValueError:
        raise StatementError("the statement's time must be YYYY-MM-DDTHH:MM:SSZ", statement_field="at") from None
    revocation = Revocation(fields["policy"], None if versions == ALL_VERSIONS else versions, fields["at"],
                            fields["reason"], fields["by"], fields["key"], fields["signature"])
    if revocation.text != text:
        raise StatementError("the statement is not in its canonical form (keys sorted, no spaces); it was edited")
    return revocation


def verify_statement(text: str, trust: Trust) -> Revocation:
    """The statement in ``text`` if the owner signed it (a key ``trust`` holds for the owner role and its
    signer); StatementSignatureError otherwise, StatementError when it is malformed."""
    revocation = parse_statement(text)
    trusted = trust.keys.get(revocation.key)
    if trusted is None or trusted.role != "owner" or trusted.by != revocation.by:
        raise StatementSignatureError(f"the revocation of {revocation.policy_id!r} is not signed with a key the "
                                      "owner trusts for the owner role", policy=revocation.policy_id,
                                      key=revocation.key[:64])
    encoded = revocation.signature.removeprefix(SIGNATURE_PREFIX)
    try:
        if not revocation.signature.startswith(SIGNATURE_PREFIX):
            raise ValueError("not ed25519")
        signature = base64.b64decode(encoded, validate=True)
        if base64.b64encode(signature).decode() != encoded:
            raise ValueError("non-canonical base64")  # one spelling only, as for approvals
        trusted.public_key.verify(signature, signed_bytes(revocation.fields))
    except (ValueError, InvalidSignature):
        raise StatementSignatureError(f"the revocation of {revocation.policy_id!r} does not verify: it was changed "
                                      "after it was signed, or signed with another key",
                                      policy=revocation.policy_id, key=revocation.key[:64]) from None
    return revocation


def _canonical(fields: dict) -> str:
    return json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
