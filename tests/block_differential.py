"""The auditor's two block queries give the same blocks: the direct one (conditions and keys evaluated on every
row) and the one over the distinct combinations of the values they read (``by_values``), which the auditor takes
over many conditions. Shared by the engines' tests: the coverages are the guard's, of random queries on the demo
data (lookups joined inner and left, ranges on a measure's grid, IN lists that spell one condition many ways)."""

from __future__ import annotations

import dataclasses
import random

from sandbox.audit.blocks import read_blocks
from tests.engine_cells import guarded
from tests.test_audit_block_cache import _query

MEASURES = ["cit_paid", "revenue", "vat_paid"]


def _asked(rng: random.Random) -> str:
    """A random query of the kinds the auditor's coverages come from."""
    roll = rng.random()
    if roll < 0.2:  # a range on a measure: its combinations are as many as the measure's values
        low = rng.randrange(0, 40) * 50_000
        return (f"SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations "
                f"WHERE revenue >= {low} AND revenue < {low + rng.randrange(1, 20) * 50_000} GROUP BY 1")
    if roll < 0.35:  # one condition spelt another way, as an attacker would add them
        return (f"SELECT size_class, COUNT(*) AS c FROM tax.declarations "
                f"WHERE registration_type IN ('173', '{rng.choice(['110', '120', '151'])}') GROUP BY 1")
    return _query(rng)


def random_coverages(served, policy, rng: random.Random, count: int) -> list[str]:
    """``count`` distinct coverages of random queries guarded for ``served``, the last one an answer's."""
    grant = dataclasses.replace(policy, ranges={"revenue": 50_000})
    found: dict[str, None] = {}
    while len(found) < count:
        found.setdefault(guarded(served, _asked(rng), grant).coverage)
    return list(found)


def blocks_read(engine, coverages: list[str], *, by_values: bool) -> dict:
    """Signature -> contributions, as the auditor reads them from ``engine`` by one query or the other."""
    blocks = read_blocks(engine, coverages, dataset="tax.declarations", entity="taxpayer_id", measures=MEASURES,
                         timeout_s=120, by_values=by_values)
    read = dict(zip(blocks.signatures, blocks.contributions, strict=True))
    assert len(read) == len(blocks.signatures), "a signature came back as two blocks"
    return read
