"""The Merkle tree of RFC 6962 (Certificate Transparency) over the records' hashes.

A checkpoint signs the root over the first N records; an auditor who keeps a checkpoint can
later check that the log still starts with exactly those N records, whatever was appended after.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


def leaf_hash(record_hash: str) -> bytes:
    """The tree's leaf for a record (domain-separated from inner nodes, as in RFC 6962)."""
    return hashlib.sha256(b"\x00" + bytes.fromhex(record_hash)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """An inner node of the tree."""
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleAccumulator:
    """The root of a growing tree, kept as the roots of its perfect subtrees (O(log n) memory)."""

    def __init__(self) -> None:
        self.size = 0
        self._subtrees: list[tuple[int, bytes]] = []  # (height, root), largest first

    def add(self, record_hash: str) -> None:
        """Append one record's hash."""
        height, node = 0, leaf_hash(record_hash)
        while self._subtrees and self._subtrees[-1][0] == height:
            _, left = self._subtrees.pop()
            node = node_hash(left, node)
            height += 1
        self._subtrees.append((height, node))
        self.size += 1

    def extend(self, record_hashes: Iterable[str]) -> "MerkleAccumulator":
        """Append several hashes; returns self."""
        for record_hash in record_hashes:
            self.add(record_hash)
        return self

    def root(self) -> str:
        """The RFC 6962 tree head over every hash added so far (hex)."""
        if not self._subtrees:
            return EMPTY_ROOT
        node = self._subtrees[-1][1]
        for _, left in reversed(self._subtrees[:-1]):
            node = node_hash(left, node)
        return node.hex()


def merkle_root(record_hashes: Iterable[str]) -> str:
    """The tree head over ``record_hashes`` in order."""
    return MerkleAccumulator().extend(record_hashes).root()
