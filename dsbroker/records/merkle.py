"""The Merkle tree of RFC 6962 (Certificate Transparency) over the records' hashes.

A checkpoint signs the root over the first N records; an auditor who keeps a checkpoint can
later check that the log still starts with exactly those N records, whatever was appended after.

A **consistency proof** (RFC 6962 section 2.1.2, verified as RFC 9162 section 2.1.4.2 says) shows
that the tree of M records is the first M records of the tree of N: a few inner nodes (at most two
per level) from which both roots are computed. The broker sends one with each checkpoint, from the
checkpoint before it; the sandbox, which holds only the roots it witnessed, checks it before it
countersigns, so a log rewritten under the broker's key is refused at once rather than found by a
later reconcile. This module imports nothing of the broker's, so the sandbox uses it as it is.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable, Sequence

# A proof has at most two nodes per level of a tree of up to 2**63 records.
MAX_PROOF_NODES = 128

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

    def copy(self) -> MerkleAccumulator:
        """Another accumulator at the same size, to grow apart from this one."""
        made = MerkleAccumulator()
        made.size, made._subtrees = self.size, list(self._subtrees)
        return made

    def perfect_subtrees(self) -> dict[tuple[int, int], bytes]:
        """The roots of the perfect subtrees the tree is made of, by the records they cover (start, end):
        the binary decomposition of its size, largest first. These are the only nodes wholly within the
        old tree that a consistency proof from this size needs."""
        found, start = {}, 0
        for height, root in self._subtrees:
            found[(start, start + (1 << height))] = root
            start += 1 << height
        return found

    def add(self, record_hash: str) -> None:
        """Append one record's hash."""
        height, node = 0, leaf_hash(record_hash)
        while self._subtrees and self._subtrees[-1][0] == height:
            _, left = self._subtrees.pop()
            node = node_hash(left, node)
            height += 1
        self._subtrees.append((height, node))
        self.size += 1

    def extend(self, record_hashes: Iterable[str]) -> MerkleAccumulator:
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


def consistency_proof(old: MerkleAccumulator, appended: Sequence[str]) -> list[str]:
    """The RFC 6962 consistency proof (hex nodes) from the tree ``old`` holds to that tree with ``appended``
    (record hashes) added: empty when nothing is appended or ``old`` is empty. It costs the hashing of
    ``appended`` only: the nodes of the old tree it needs are the ones ``old`` keeps."""
    m, n = old.size, old.size + len(appended)
    if m == 0 or m == n:
        return []
    kept = old.perfect_subtrees()

    def node(start: int, end: int) -> bytes:
        if end <= m:
            return kept[(start, end)]  # by RFC 6962's recursion, a node left of m is one of these
        if start < m:
            raise AssertionError("a consistency proof never needs a node across the old tree's end")
        return _tree_hash(appended[start - m:end - m])

    def subproof(start: int, end: int, complete: bool) -> list[bytes]:
        # RFC 6962 SUBPROOF(m, D[start:end], b), with m as an absolute position.
        if m - start == end - start:
            return [] if complete else [node(start, end)]
        split = _largest_power_below(end - start)
        if m - start <= split:
            return subproof(start, start + split, complete) + [node(start + split, end)]
        return subproof(start + split, end, False) + [node(start, start + split)]

    return [hashed.hex() for hashed in subproof(0, n, True)]


def verify_consistency(old_size: int, new_size: int, old_root: str, new_root: str, proof: Sequence[str]) -> bool:
    """Whether ``proof`` shows the tree of ``old_size`` records with root ``old_root`` to be the start of
    the tree of ``new_size`` with root ``new_root`` (RFC 9162 section 2.1.4.2). Anything malformed is
    simply not a proof: sizes out of order, roots or nodes that are not 32 bytes of hex, too many nodes."""
    decoded = _decoded_proof(old_root, new_root, proof)
    if decoded is None:
        return False
    first, second, path = decoded
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not path and first == second
    if not path:
        return False
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is itself a node of the path
        path = [first, *path]
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(node, fr), node_hash(node, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, node)
        fn, sn = fn >> 1, sn >> 1
    return fr == first and sr == second and sn == 0


def _decoded_proof(old_root: str, new_root: str, proof: Sequence[str]) -> tuple[bytes, bytes, list[bytes]] | None:
    """The two roots and the proof's nodes as bytes; None unless each is 32 bytes of hex and the nodes are few."""
    try:
        first, second = bytes.fromhex(old_root), bytes.fromhex(new_root)
        path = [bytes.fromhex(node) for node in proof]
    except (TypeError, ValueError):
        return None
    if (len(first), len(second)) != (32, 32) or any(len(node) != 32 for node in path) or len(path) > MAX_PROOF_NODES:
        return None
    return first, second, path


class ConsistencyProver:
    """Makes the consistency proof between two sizes of a log, reading record hashes as it needs them.

    It keeps the tree at the sizes it proved to (a few roots each), so that the proof from one checkpoint
    to the next reads only the records between them, and a sandbox that lags behind costs one read of
    the records up to where it stands."""

    def __init__(self, hashes: Callable[[int, int], Iterable[str]], *, kept: int = 64) -> None:
        """``hashes(after, upto)`` gives the hashes of records after..upto, in order."""
        self._hashes = hashes
        self._kept = kept
        self._trees: dict[int, MerkleAccumulator] = {}

    def proof(self, old_size: int, new_size: int) -> list[str]:
        """The proof from the first ``old_size`` records to the first ``new_size`` (hex nodes)."""
        tree = self._tree_at(old_size)
        appended = list(self._hashes(old_size, new_size))
        proof = consistency_proof(tree, appended)
        self._keep(tree.copy().extend(appended))
        return proof

    def _tree_at(self, size: int) -> MerkleAccumulator:
        if size in self._trees:
            return self._trees[size].copy()
        if size == 0:
            return MerkleAccumulator()
        below = max((kept for kept in self._trees if kept < size), default=0)
        tree = self._trees[below].copy() if below else MerkleAccumulator()
        tree.extend(self._hashes(below, size))
        self._keep(tree.copy())
        return tree

    def _keep(self, tree: MerkleAccumulator) -> None:
        self._trees[tree.size] = tree
        while len(self._trees) > self._kept:
            del self._trees[min(self._trees)]


def _tree_hash(record_hashes: Sequence[str]) -> bytes:
    """MTH over a non-empty run of records."""
    return bytes.fromhex(merkle_root(record_hashes))


def _largest_power_below(size: int) -> int:
    """The largest power of two smaller than ``size`` (RFC 6962's k; ``size`` > 1)."""
    return 1 << ((size - 1).bit_length() - 1)
