"""The auditor's kept blocks (``sandbox.audit.blocks.BlockCache``) change no decision: random sequences of queries
whose coverages the cache derives from kept ones (the same condition with fewer keys, asked again, through lookups
joined or not, with cells withheld that never reach the ledger) release the same cells, query by query, as an auditor
that keeps nothing and asks the engine every time."""

from __future__ import annotations

import random

import pytest

from sandbox.audit.auditor import Auditor
from sandbox.audit.blocks import BlockCache
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.engine.interface import EngineLimits
from sandbox.ledgers.released_cells import ReleasedCellLedger
from tests.engine_cells import released

CONDITIONS = ["", "WHERE period = DATE '2024-03-01'", "WHERE industry_section IN ('C', 'F', 'I')",
              "WHERE period BETWEEN DATE '2024-01-01' AND DATE '2024-03-31' AND size_class = 'small'"]
KEYS = [(), ("street_code",), ("industry_section",), ("street_code", "industry_section"),
        ("industry_section", "size_class"), ("street_code", "size_class")]
JOINED = [("JOIN", "i.section_name = 'C'"), ("LEFT JOIN", ""), ("JOIN", "")]
STATISTICS = ["SUM(vat_paid) AS vat", "COUNT(*) AS c", "SUM(revenue) AS r, COUNT(DISTINCT taxpayer_id) AS n",
              "SUM(cit_paid) AS cit"]


def _query(rng: random.Random) -> str:
    statistic = rng.choice(STATISTICS)
    if rng.random() < 0.3:
        join, where = rng.choice(JOINED)
        keys = rng.choice([("i.industry_name",), ("street_code", "i.industry_name"), ("street_code",), ()])
        condition = f"WHERE {where}" if where else ""
        source = f"tax.declarations d {join} tax.industries i ON d.industry_code = i.industry_code"
    else:
        keys, condition, source = rng.choice(KEYS), rng.choice(CONDITIONS), "tax.declarations"
    listed = ", ".join([*keys, statistic])
    group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(keys)))}" if keys else ""
    return f"SELECT {listed} FROM {source} {condition}{group}"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from sandbox.demo.data import make_demo_data

    path = tmp_path_factory.mktemp("cache") / "small.duckdb"
    make_demo_data(path, taxpayers=400, months=6)
    engine = DuckDBEngine(path, EngineLimits(pool_size=2))
    yield engine
    engine.close()


@pytest.mark.parametrize("seed", range(12))
def test_kept_blocks_release_what_fresh_reads_release_query_by_query(small, policy, tmp_path, seed):
    rng = random.Random(seed)
    kept = Auditor(small, ReleasedCellLedger(tmp_path / "kept.sqlite"))
    fresh = Auditor(small, ReleasedCellLedger(tmp_path / "fresh.sqlite"))
    fresh._blocks = BlockCache(entries=0)  # keeps nothing: every audit asks the engine
    try:
        asked = [_query(rng) for _ in range(5)]
        asked += [rng.choice(asked) if rng.random() < 0.3 else _query(rng) for _ in range(7)]
        for sql in asked:
            assert released(small, sql, policy, "k3-dominance", auditor=kept)[:2] == \
                released(small, sql, policy, "k3-dominance", auditor=fresh)[:2], sql
    finally:
        kept.ledger.close()
        fresh.ledger.close()
