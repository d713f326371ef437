"""Signed checkpoints: the broker's Ed25519 signature over the log's size and Merkle root.

A checkpoint also names the hash of the checkpoint before it, so checkpoints form their own chain.
Handed to the owner and to auditors (``dsbroker audit checkpoint``), a checkpoint pins the log:
a later log that does not start with the same records, or that is shorter, no longer verifies
against it, so the log cannot be rolled back or shown differently to different readers.

Each sandbox **witnesses** the checkpoints too: it checks the broker's signature and that each one
extends the chain it witnessed before, keeps it in its own ledger and answers with a
:class:`Countersignature` under its own key. The sandbox imports this module (and only the
records' canonical JSON with it), so both sides agree on the bytes signed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from dsbroker.records.access_record import GENESIS_HASH, canonical_json
from dsbroker.errors import ConfigError


@dataclass(frozen=True)
class Checkpoint:
    """The broker's signed statement that its log had ``size`` records with this Merkle ``root``."""

    size: int
    root: str
    prev: str  # hash of the previous checkpoint; GENESIS_HASH for the first
    at: str
    key_id: str
    signature: str = ""  # base64 Ed25519 signature over the canonical JSON of the other fields

    def signed_body(self) -> bytes:
        """The bytes the signature covers."""
        return canonical_json({k: v for k, v in asdict(self).items() if k != "signature"}).encode()

    def hash(self) -> str:
        """The hash the next checkpoint names as ``prev`` (covers the signature too)."""
        return hashlib.sha256(canonical_json(asdict(self)).encode()).hexdigest()

    def to_json(self) -> str:
        """One line of JSON, for a file handed to the owner or an auditor."""
        return canonical_json(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        """Read a checkpoint; ConfigError when the text is not one."""
        try:
            values = json.loads(text)
            return cls(size=int(values["size"]), root=str(values["root"]), prev=str(values["prev"]),
                       at=str(values["at"]), key_id=str(values["key_id"]), signature=str(values["signature"]))
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"not a dsbroker checkpoint ({error.__class__.__name__})") from None


def key_id(public_key: ed25519.Ed25519PublicKey) -> str:
    """A short id of a public key: the first 16 hex digits of SHA-256 over its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_checkpoint(private_key: ed25519.Ed25519PrivateKey, *, size: int, root: str, prev: str | None,
                    at: dt.datetime) -> Checkpoint:
    """A checkpoint over the first ``size`` records, signed with the broker's key."""
    unsigned = Checkpoint(size=size, root=root, prev=prev or GENESIS_HASH,
                          at=at.astimezone(dt.timezone.utc).isoformat(timespec="microseconds"),
                          key_id=key_id(private_key.public_key()))
    signature = base64.b64encode(private_key.sign(unsigned.signed_body())).decode()
    return Checkpoint(**{**asdict(unsigned), "signature": signature})


def signature_valid(checkpoint: Checkpoint, public_key: ed25519.Ed25519PublicKey) -> bool:
    """Whether ``public_key`` signed exactly this checkpoint."""
    try:
        public_key.verify(base64.b64decode(checkpoint.signature, validate=True), checkpoint.signed_body())
        return True
    except (InvalidSignature, ValueError):
        return False


def load_or_create_signing_key(path: str | Path) -> ed25519.Ed25519PrivateKey:
    """The Ed25519 key at ``path`` (the broker's log key, a sandbox's witness key); created (mode 0600,
    public half beside it as .pub) if absent."""
    from dsbroker.private_files import load_private_key, write_private_key
    from dsbroker.private_files import write_private

    path = Path(path)
    if path.exists():
        key = load_private_key(path)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigError(f"{path}: the key must be Ed25519")
        return key
    key = ed25519.Ed25519PrivateKey.generate()
    write_private_key(path, key)
    write_private(public_key_path(path), key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


def public_key_path(signing_key_path: str | Path) -> Path:
    """Where the public half of a signing key is written: the same name with ``.pub``."""
    return Path(signing_key_path).with_suffix(".pub")


def load_public_key(path: str | Path) -> ed25519.Ed25519PublicKey:
    """An auditor's pinned copy of the broker's checkpoint key (PEM)."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: cannot read a public key ({error.__class__.__name__})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"{path}: the access log's checkpoint key must be Ed25519")
    return key


# Domain separation: a countersignature can never be taken for a checkpoint's or a seal's signature.
WITNESS_CONTEXT = b"dsbroker checkpoint witness v1\n"


@dataclass(frozen=True)
class Countersignature:
    """A witness's signed statement that it saw checkpoint ``checkpoint`` (its hash) of ``size`` records."""

    checkpoint: str
    size: int
    root: str
    witness: str  # the sandbox id
    at: str
    key_id: str
    signature: str = ""  # base64 Ed25519 over WITNESS_CONTEXT and the canonical JSON of the other fields

    def signed_body(self) -> bytes:
        """The bytes the signature covers."""
        return WITNESS_CONTEXT + canonical_json({k: v for k, v in asdict(self).items() if k != "signature"}).encode()


def countersign(private_key: ed25519.Ed25519PrivateKey, checkpoint: Checkpoint, *, witness: str,
                at: dt.datetime) -> Countersignature:
    """The witness ``witness``'s countersignature over ``checkpoint``."""
    unsigned = Countersignature(checkpoint=checkpoint.hash(), size=checkpoint.size, root=checkpoint.root,
                                witness=witness,
                                at=at.astimezone(dt.timezone.utc).isoformat(timespec="microseconds"),
                                key_id=key_id(private_key.public_key()))
    return Countersignature(**{**asdict(unsigned),
                               "signature": base64.b64encode(private_key.sign(unsigned.signed_body())).decode()})


def countersignature_valid(countersignature: Countersignature, public_key: ed25519.Ed25519PublicKey) -> bool:
    """Whether ``public_key`` made exactly this countersignature."""
    try:
        public_key.verify(base64.b64decode(countersignature.signature, validate=True), countersignature.signed_body())
        return True
    except (InvalidSignature, ValueError):
        return False
