"""RFC 6962 consistency proofs (dsbroker/records/merkle.py): every proof the broker makes verifies, and none
verifies for a tree in which one of the old records was changed, or with a node missing, changed or added."""

from __future__ import annotations

import hashlib

import pytest

from dsbroker.records.merkle import (ConsistencyProver, MerkleAccumulator, consistency_proof, merkle_root,
                                 verify_consistency)

LEAVES = [hashlib.sha256(f"record {i}".encode()).hexdigest() for i in range(40)]
OTHER = hashlib.sha256(b"another record").hexdigest()


def proof(old: int, new: int, leaves=LEAVES) -> list[str]:
    return consistency_proof(MerkleAccumulator().extend(leaves[:old]), leaves[old:new])


def test_every_proof_between_two_sizes_verifies():
    for new in range(1, len(LEAVES) + 1):
        for old in range(1, new + 1):
            assert verify_consistency(old, new, merkle_root(LEAVES[:old]), merkle_root(LEAVES[:new]), proof(old, new))


def test_no_proof_verifies_a_tree_whose_old_records_were_changed():
    for new in range(2, 24):
        for old in range(1, new):
            for changed in range(old):
                forged = LEAVES[:changed] + [OTHER] + LEAVES[changed + 1:new]
                # Neither the honest proof, nor the forger's own (consistent with its own old tree only).
                for attempt in (proof(old, new), proof(old, new, forged)):
                    assert not verify_consistency(old, new, merkle_root(LEAVES[:old]), merkle_root(forged), attempt)


@pytest.mark.parametrize("old, new", [(1, 2), (3, 7), (4, 8), (5, 13), (16, 17), (31, 40)])
def test_a_proof_with_a_node_missing_changed_or_added_does_not_verify(old, new):
    good = proof(old, new)
    old_root, new_root = merkle_root(LEAVES[:old]), merkle_root(LEAVES[:new])
    for bad in (good[:-1], good[1:], ["0" * 64] + good[1:], good + [LEAVES[0]], [], ["zz" * 32] + good[1:],
                good[:-1] + [good[-1][:-2]]):
        assert not verify_consistency(old, new, old_root, new_root, bad)


def test_sizes_out_of_order_or_roots_that_are_not_hashes_are_not_proofs():
    assert not verify_consistency(0, 4, merkle_root([]), merkle_root(LEAVES[:4]), [])
    assert not verify_consistency(5, 4, merkle_root(LEAVES[:5]), merkle_root(LEAVES[:4]), proof(4, 5))
    assert not verify_consistency(3, 5, "not hex", merkle_root(LEAVES[:5]), proof(3, 5))
    assert verify_consistency(4, 4, merkle_root(LEAVES[:4]), merkle_root(LEAVES[:4]), [])


def test_the_prover_reads_only_what_lies_between_the_sizes_it_has_proved_to():
    reads: list[tuple[int, int]] = []

    def hashes(after: int, upto: int):
        reads.append((after, upto))
        return LEAVES[after:upto]

    prover = ConsistencyProver(hashes)
    assert prover.proof(0, 4) == []
    for old, new in ((4, 9), (9, 16), (16, 30)):
        assert verify_consistency(old, new, merkle_root(LEAVES[:old]), merkle_root(LEAVES[:new]),
                                  prover.proof(old, new))
    assert reads == [(0, 4), (4, 9), (9, 16), (16, 30)], "each record read once"
    assert verify_consistency(9, 40, merkle_root(LEAVES[:9]), merkle_root(LEAVES), prover.proof(9, 40))
