"""Seals: each broker's Ed25519 signature on the last record of every batch it commits.

A seal signs the record's hash, which names the hash of the record before it, so one seal per
batch covers the whole chain up to it. Someone who can write the log's database but holds no
broker key cannot seal a record: a broker refuses to extend a chain whose last record is not
sealed by a key it trusts (its own, and its peers' when several brokers share one log), and
``dsbroker audit verify`` reports every record that no seal from a pinned key covers.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from dsbroker.records.checkpoints import Checkpoint, key_id, load_public_key, signature_valid
from dsbroker.records.access_record import StoredRecord

# Domain separation: a seal can never be taken for a checkpoint signature, or the other way round.
SEAL_CONTEXT = b"dsbroker access-log seal v1\n"


class Sealer:
    """Seals record hashes with one broker's key."""

    def __init__(self, private_key: ed25519.Ed25519PrivateKey) -> None:
        self.private_key = private_key
        self.key_id = key_id(private_key.public_key())

    def __call__(self, record_hash: str) -> tuple[str, str]:
        """(key id, base64 signature) sealing the record whose hash is ``record_hash``."""
        signature = self.private_key.sign(SEAL_CONTEXT + bytes.fromhex(record_hash))
        return self.key_id, base64.b64encode(signature).decode()


class TrustedKeys:
    """The broker keys whose seals and checkpoints are trusted, by key id."""

    def __init__(self, keys: Iterable[ed25519.Ed25519PublicKey] = ()) -> None:
        self.by_id = {key_id(key): key for key in keys}

    @classmethod
    def load(cls, paths: Iterable[str | Path], *, also: Iterable[ed25519.Ed25519PublicKey] = ()) -> TrustedKeys:
        """The keys in the PEM files ``paths`` (ConfigError naming a file that is not one), and ``also``."""
        return cls([*also, *(load_public_key(path) for path in paths)])

    def __bool__(self) -> bool:
        return bool(self.by_id)

    def sealed(self, record: StoredRecord) -> bool:
        """Whether ``record`` carries a seal over its stored hash by one of these keys.

        The caller checks that the hash is the record's (:func:`dsbroker.records.access_record.record_hash`)."""
        key = self.by_id.get(record.seal_key_id)
        if key is None or not record.seal:
            return False
        try:
            key.verify(base64.b64decode(record.seal, validate=True), SEAL_CONTEXT + bytes.fromhex(record.hash))
            return True
        except (InvalidSignature, ValueError):
            return False

    def signed(self, checkpoint: Checkpoint) -> bool:
        """Whether one of these keys signed ``checkpoint``."""
        key = self.by_id.get(checkpoint.key_id)
        return key is not None and signature_valid(checkpoint, key)
