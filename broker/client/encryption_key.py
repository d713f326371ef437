"""The requester's encryption key: a TenSEAL BFV context whose secret key never leaves the requester.

It lives in two files: ``KEY`` (the context with its secret key, mode 0600) and ``KEY.pub`` (the
public context, the bytes every encrypted query sends). The key id is the SHA-256 of the public
bytes; an encrypted result names the key it was encrypted under, and decrypting refuses any other
(decrypting with the wrong key gives garbage, not an error).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import tenseal as ts

from dsbroker.errors import DsbrokerError, KeyMismatchError
from dsbroker.private_files import write_secret
from dsbroker.private_files import write_private
from dsbroker.results.bfv import check_public_context, key_id, new_secret_context, public_bytes
from dsbroker.results.table import group_keys
from dsbroker.v1 import results_pb2 as pb

DEFAULT_PATH = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "dsbroker" / "encryption-key.bfv"


@dataclass(frozen=True)
class Decrypted:
    """An encrypted result, decrypted: column names, rows, and per row how many partitions left their cell out."""

    columns: list[str]
    rows: list[list]
    partitions: int
    partitions_withheld: list[int]  # empty without partitions


class EncryptionKey:
    """A requester's BFV key pair: the public context to send, the secret context to decrypt with."""

    def __init__(self, context: ts.Context, public_context: bytes) -> None:
        self.context = context
        self.public_context = public_context
        self.key_id = key_id(public_context)

    @classmethod
    def generate(cls) -> EncryptionKey:
        """A fresh key (about 60 ms)."""
        context = new_secret_context()
        return cls(context, public_bytes(context))

    @classmethod
    def load(cls, path: str | Path) -> EncryptionKey:
        """Load ``path`` and ``path.pub``; DsbrokerError when either is unreadable or they do not belong together."""
        path = Path(path)
        try:
            secret, public = path.read_bytes(), _public_path(path).read_bytes()
        except OSError as error:
            raise DsbrokerError(f"cannot read encryption key {path} ({error.__class__.__name__})",
                                reason="ENCRYPTION_KEY_UNREADABLE") from None
        try:
            context = ts.context_from(secret)
        except ValueError:
            context = None
        if context is None or not context.has_secret_key():
            raise DsbrokerError(f"{path} is not a TenSEAL context with a secret key",
                                reason="ENCRYPTION_KEY_UNREADABLE")
        probe = ts.bfv_vector(check_public_context(public), [1, -2, 3])
        if probe.decrypt(context.secret_key()) != [1, -2, 3]:
            raise DsbrokerError(f"{_public_path(path)} is not the public half of {path}",
                                reason="ENCRYPTION_KEY_UNREADABLE")
        return cls(context, public)

    @classmethod
    def load_or_create(cls, path: str | Path) -> tuple[EncryptionKey, bool]:
        """The key at ``path``, made (and saved) first if there is none; the flag says whether it was made."""
        path = Path(path)
        if path.exists():
            return cls.load(path), False
        key = cls.generate()
        key.save(path)
        return key, True

    def save(self, path: str | Path) -> None:
        """Write the secret context to ``path`` (0600) and the public context to ``path.pub``."""
        path = Path(path)
        secret = self.context.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False,
                                        save_relin_keys=False)
        write_secret(path, secret)
        write_private(_public_path(path), self.public_context)

    def encryption(self) -> pb.Encryption:
        """The public context an encrypted query sends (``BrokerClient.encryption_for`` adds the signature that
        binds it to the query)."""
        return pb.Encryption(public_context=self.public_context)

    def decrypt(self, table: pb.EncryptedTable) -> Decrypted:
        """Decrypt an encrypted result; KeyMismatchError when it names another key."""
        if table.key_id != self.key_id:
            raise KeyMismatchError(f"the result is encrypted under key {table.key_id or '(none)'}, not this one "
                                   f"({self.key_id}); refusing to decrypt", key_id=table.key_id)
        count = table.groups.row_count
        keys = group_keys(table.groups)
        width = len(table.groups.columns) + len(table.columns)
        encrypted = {column.position: column for column in table.columns}
        key_positions = [p for p in range(width) if p not in encrypted]
        names = [""] * width
        cells: list[list] = [[None] * count for _ in range(width)]
        for index, (position, column) in enumerate(zip(key_positions, table.groups.columns, strict=False)):
            names[position] = column.name
            cells[position] = [key[index] for key in keys]
        for position, column in encrypted.items():
            names[position] = column.name
            if not count:
                continue
            values = self._vector(column.ciphertext, count)
            if column.kind == pb.ENCRYPTED_COLUMN_KIND_AVERAGE:
                counts = self._vector(column.count_ciphertext, count)
                values = [total / n if n else None for total, n in zip(values, counts, strict=True)]
            cells[position] = values
        withheld = self._vector(table.partitions_withheld, count) if table.partitions_withheld else []
        rows = [list(row) for row in zip(*cells, strict=False)] if width else [[] for _ in range(count)]
        return Decrypted(names, rows, table.partitions, withheld)

    def _vector(self, ciphertext: bytes, count: int) -> list[int]:
        try:
            values = ts.bfv_vector_from(self.context, ciphertext).decrypt()
        except ValueError:
            raise DsbrokerError("an encrypted column does not load as a BFV vector",
                                reason="ENCRYPTED_RESULT_INVALID") from None
        if len(values) != count:
            raise DsbrokerError("an encrypted column does not hold one cell per group",
                                reason="ENCRYPTED_RESULT_INVALID")
        return values


def _public_path(path: Path) -> Path:
    return path.with_name(path.name + ".pub")
