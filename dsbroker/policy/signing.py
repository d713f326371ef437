"""Signed policies: approvers sign a policy's body with Ed25519; the sandbox runs nothing whose policy does not verify.

A signed policy file is its **body** (the exact bytes of the YAML before the ``approvals:`` line)
followed by an ``approvals:`` block in one canonical form, one line per approval::

    approvals:
      - {role: reviewer, by: xuanwu-tax, key: xuanwu-tax-1, at: "2026-11-21T08:00:00Z", signature: "ed25519:..."}

Each signature covers the SHA-256 of the body bytes together with the approval's role, signer, key
and time. Because the body is signed byte for byte and the approvals block must be in canonical
form, changing any byte of the file makes it fail to verify. Which keys are trusted, for which
role and signer, and which roles a policy needs, is the verifier's **trust file** (the owner's)::

    required_roles: [reviewer, owner]
    keys:
      city-tax-1: {by: city-tax, role: owner, ed25519: "<base64 of the raw public key>"}
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from dsbroker.errors import ConfigError, DsbrokerError, PolicyFileError, PolicySignatureError
from dsbroker.policy.model import MAX_POLICY_CHARS, Policy, parse_policy

APPROVALS_HEADER = "approvals:\n"
APPROVAL_FIELDS = ("role", "by", "key", "at", "signature")
SIGNATURE_PREFIX = "ed25519:"
SIGNED_CONTEXT = b"dsbroker-policy-approval-v1\n"
SIGNER_ROLES = ("reviewer", "owner")
# One approval per signer: a reviewer and an owner, a few more where several sign. Each costs a signature
# check to read, so a document carries no more than this.
MAX_APPROVALS = 16
# A signer, a key id or a role as an approval line holds it: a plain YAML scalar that reads as this text.
SIGNER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_QUOTED = r'"(?:[^"\\\n]|\\.){0,512}"'
_APPROVAL_LINE = re.compile(rf"  - \{{role: (?P<role>{SIGNER_NAME.pattern}), by: (?P<by>{SIGNER_NAME.pattern}), "
                            rf"key: (?P<key>{SIGNER_NAME.pattern}), at: (?P<at>{_QUOTED}), "
                            rf"signature: (?P<signature>{_QUOTED})\}}")


@dataclass(frozen=True)
class Approval:
    """One approver's signature over a policy body."""

    role: str
    by: str
    key: str
    at: str
    signature: str

    def render(self) -> str:
        """The approval's one canonical line in the approvals block."""
        return (f"  - {{role: {self.role}, by: {self.by}, key: {self.key}, at: {json.dumps(self.at)}, "
                f"signature: {json.dumps(self.signature)}}}\n")


@dataclass(frozen=True)
class TrustedKey:
    """A public key the owner trusts, for one role and one signer."""

    key_id: str
    role: str
    by: str
    public_key: ed25519.Ed25519PublicKey


@dataclass(frozen=True)
class Trust:
    """The owner's trust configuration: trusted keys and the roles every policy needs."""

    keys: dict[str, TrustedKey]
    required_roles: tuple[str, ...]

    @classmethod
    def load(cls, path: str | Path) -> Trust:
        """Read a trust file; errors name the file."""
        try:
            document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            keys = {}
            for key_id, entry in (document.get("keys") or {}).items():
                raw = base64.b64decode(entry["ed25519"], validate=True)
                if entry["role"] not in SIGNER_ROLES:
                    raise ValueError(f"key {key_id}: role must be one of {', '.join(SIGNER_ROLES)}")
                keys[str(key_id)] = TrustedKey(str(key_id), entry["role"], str(entry["by"]),
                                               ed25519.Ed25519PublicKey.from_public_bytes(raw))
            required = tuple(document.get("required_roles") or SIGNER_ROLES)
        except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{path}: not a usable trust file ({error.__class__.__name__}: {error})") from None
        unknown = set(required) - set(SIGNER_ROLES)
        if unknown or not keys:
            raise ConfigError(f"{path}: a trust file needs keys, and required_roles among {', '.join(SIGNER_ROLES)}")
        return cls(keys, required)


def trust_document(signers: list[tuple[str, str, str, ed25519.Ed25519PublicKey]],
                   required_roles: tuple[str, ...] = SIGNER_ROLES) -> str:
    """A trust file's text for (key id, role, signer, public key) entries."""
    keys = {key_id: {"by": by, "role": role, "ed25519": base64.b64encode(public_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()}
        for key_id, role, by, public_key in signers}
    return yaml.safe_dump({"required_roles": list(required_roles), "keys": keys}, sort_keys=False)


def split_document(text: str) -> tuple[str, list[Approval]]:
    """The body and the approvals of a policy document; the approvals block must be canonical.

    The block is read line by line in the one form :meth:`Approval.render` writes, not as YAML: it
    comes with documents anyone may send (an approval, a plan from a hostile broker), and is read
    before any signature is checked, so it must cost no more than its length (no anchors and aliases
    to expand, no nesting), and it is held to the bound of every policy first."""
    if len(text) > MAX_POLICY_CHARS:
        raise PolicyFileError(f"a policy document is at most {MAX_POLICY_CHARS} characters, approvals included",
                              path="<policy>", line=1)
    if text.startswith(APPROVALS_HEADER):
        body, block = "", text
    elif f"\n{APPROVALS_HEADER}" in text:
        cut = text.index(f"\n{APPROVALS_HEADER}") + 1
        body, block = text[:cut], text[cut:]
    else:
        return text, []
    lines = block[len(APPROVALS_HEADER):].split("\n")
    if lines[-1] != "":
        raise _malformed_approvals()
    if len(lines) - 1 > MAX_APPROVALS:
        raise PolicySignatureError(f"a policy carries at most {MAX_APPROVALS} approvals")
    approvals = []
    for line in lines[:-1]:
        match = _APPROVAL_LINE.fullmatch(line)
        if match is None:
            raise _malformed_approvals()
        try:
            at, signature = json.loads(match["at"]), json.loads(match["signature"])
        except ValueError:
            raise _malformed_approvals() from None
        approvals.append(Approval(match["role"], match["by"], match["key"], at, signature))
    if block != APPROVALS_HEADER + "".join(a.render() for a in approvals):
        raise PolicySignatureError("the approvals block is not in its canonical form; it was edited by hand")
    return body, approvals


def _malformed_approvals() -> PolicySignatureError:
    return PolicySignatureError("the approvals block is malformed; it must be the last key of the file, "
                                "one approval per line as written by 'dsbroker policy sign'")


def body_sha256(text: str) -> str:
    """The SHA-256 (hex) of a policy document's body: what its approvals sign, the same however often it is signed.

    One version of a policy has one body (README: one body per version); two documents of a version that differ
    only in their approvals are one body signed twice."""
    return _sha256(split_document(text)[0])


def signed_message(body: str, *, role: str, by: str, key: str, at: str) -> bytes:
    """The bytes an approver signs: the body's SHA-256 with the approval's role, signer, key and time."""
    return digest_message(_sha256(body), role=role, by=by, key=key, at=at)


def digest_message(body_sha256: str, *, role: str, by: str, key: str, at: str) -> bytes:
    """The signed bytes for a body known by its SHA-256 (hex)."""
    claims = {"body_sha256": body_sha256, "role": role, "by": by, "key": key, "at": at}
    return SIGNED_CONTEXT + json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()


def sign_policy(text: str, private_key: ed25519.Ed25519PrivateKey, *, key_id: str, role: str, by: str,
                at: dt.datetime | None = None) -> str:
    """Return ``text`` with one more approval, signed by ``private_key`` as ``role`` for ``by``."""
    stamp, message = approval_message(text, key_id=key_id, role=role, by=by, at=at)
    return with_approval(text, key_id=key_id, role=role, by=by, stamp=stamp, signature=private_key.sign(message))


def approval_message(text: str, *, key_id: str, role: str, by: str, at: dt.datetime | None = None) -> tuple[str, bytes]:
    """The time stamp and the exact bytes an approver signs to add an approval to ``text``, for a signer whose
    key is elsewhere (the web console hands them to the browser, which signs with WebCrypto)."""
    if role not in SIGNER_ROLES:
        raise ConfigError(f"role must be one of {', '.join(SIGNER_ROLES)}")
    for name, value in (("key id", key_id), ("signer", by)):
        if not SIGNER_NAME.fullmatch(value):
            raise ConfigError(f"the {name} must be letters, digits and . _ - (at most 128), starting with a letter "
                              "or digit")
    body, approvals = split_document(text)
    parse_policy(body, source="<policy body>")  # sign only what loads
    if any(a.key == key_id for a in approvals):
        raise ConfigError(f"key {key_id!r} has already signed this policy")
    stamp = (at or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return stamp, signed_message(body, role=role, by=by, key=key_id, at=stamp)


def with_approval(text: str, *, key_id: str, role: str, by: str, stamp: str, signature: bytes) -> str:
    """``text`` with one more approval carrying ``signature`` over :func:`approval_message`'s bytes (not checked
    here: the broker and every sandbox check it against the owner's trust file)."""
    body, approvals = split_document(text)
    approval = Approval(role, by, key_id, stamp, SIGNATURE_PREFIX + base64.b64encode(signature).decode())
    if body and not body.endswith("\n"):
        body += "\n"
    return body + APPROVALS_HEADER + "".join(a.render() for a in (*approvals, approval))


def verify_policy(text: str, trust: Trust, *, source: str = "<policy>") -> Policy:
    """The policy in ``text`` if its approvals verify against ``trust``; PolicySignatureError otherwise."""
    body, approvals = split_document(text)
    if not approvals:
        raise PolicySignatureError("the policy carries no approvals; it must be signed by the owner")
    _require_roles([a.role for a in approvals], trust)  # carried at all: said before any signature is checked
    _require_roles(verify_approvals(body, approvals, trust), trust)
    return parse_policy(text, source=source)


def _require_roles(roles: list[str], trust: Trust) -> None:
    missing = [role for role in trust.required_roles if role not in roles]
    if missing:
        raise PolicySignatureError(f"the policy lacks the {missing[0]} approval", role=missing[0])


def verify_approvals(body: str, approvals: list[Approval], trust: Trust) -> list[str]:
    """The roles of ``approvals``, each verified against ``trust``; PolicySignatureError at the first that fails.

    The owner signs the body itself. An earlier approver may have signed the draft that the owner
    narrowed: the body then names that draft's SHA-256 under ``narrows``, and the owner's signature
    over the body vouches for the link. So the body is parsed (for ``narrows``) only once an owner's
    signature over its raw bytes verifies: nothing anyone else sent is parsed before a signature
    vouches for it.
    """
    digest = _sha256(body)
    narrowed_from, owner_signed = None, None
    roles = []
    for approval in approvals:
        trusted, signature = _signature(approval, trust)
        verified = _verifies(trusted, signature, digest, approval)
        if not verified and approval.role != "owner" and owner_signed is None:
            owner_signed = _owner_signed(digest, approvals, trust)  # once per document, whatever it carries
        if not verified and approval.role != "owner" and owner_signed:
            if narrowed_from is None:
                narrowed_from = _narrowed_from(body)
            verified = bool(narrowed_from) and _verifies(trusted, signature, narrowed_from, approval)
        if not verified:
            raise PolicySignatureError(f"the {approval.role} signature of {approval.by!r} does not verify: the "
                                       "policy was changed after it was signed", key=approval.key)
        roles.append(approval.role)
    return roles


def _signature(approval: Approval, trust: Trust) -> tuple[TrustedKey, bytes]:
    """The key ``trust`` holds for ``approval``'s signer and role, and its decoded signature; refused otherwise."""
    trusted = trust.keys.get(approval.key)
    if trusted is None or trusted.role != approval.role or trusted.by != approval.by:
        raise PolicySignatureError(f"approval by {approval.by!r} uses a key the owner does not trust for "
                                   f"the {approval.role} role", key=approval.key)
    if not approval.signature.startswith(SIGNATURE_PREFIX):
        raise PolicySignatureError("an approval's signature is not an ed25519 signature", key=approval.key)
    encoded = approval.signature[len(SIGNATURE_PREFIX):]
    try:
        signature = base64.b64decode(encoded, validate=True)
        if base64.b64encode(signature).decode() != encoded:
            # Base64 has spare bits in its last character: accept one spelling only, so that
            # no byte of a signed file can change without the file failing to verify.
            raise ValueError("non-canonical base64")
    except ValueError:
        raise PolicySignatureError(f"the {approval.role} signature of {approval.by!r} is malformed",
                                   key=approval.key) from None
    return trusted, signature


def _owner_signed(digest: str, approvals: list[Approval], trust: Trust) -> bool:
    """Whether an owner's approval among ``approvals`` verifies over the body whose SHA-256 is ``digest``."""
    for approval in approvals:
        if approval.role == "owner":
            try:
                trusted, signature = _signature(approval, trust)
            except PolicySignatureError:
                continue
            if _verifies(trusted, signature, digest, approval):
                return True
    return False


def _verifies(trusted: TrustedKey, signature: bytes, digest: str, approval: Approval) -> bool:
    try:
        trusted.public_key.verify(signature, digest_message(digest, role=approval.role, by=approval.by,
                                                           key=approval.key, at=approval.at))
        return True
    except InvalidSignature:
        return False


def _narrowed_from(body: str) -> str:
    try:
        narrows = parse_policy(body, source="<policy body>").narrows
    except DsbrokerError:
        return ""
    return narrows.removeprefix("sha256:") if narrows else ""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
