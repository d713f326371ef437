"""The auditor's blocks: the engine query that reads them (one column per distinct condition and key) gives the
same partition, and the same contributions, as grouping the rows by their cell in every coverage by hand."""

from __future__ import annotations

import random
from collections import defaultdict

import duckdb
import pytest

from sandbox.audit.blocks import block_query, read_blocks
from sandbox.engine.duckdb_engine import DuckDBEngine

# Conditions and keys that coverages share, as the guard writes them (the row filter first).
CONDITIONS = (
    ("district_code = 'd1' AND (period = 1)", lambda r: r["district_code"] == "d1" and r["period"] == 1),
    ("district_code = 'd1' AND (period = 2)", lambda r: r["district_code"] == "d1" and r["period"] == 2),
    ("district_code = 'd1' AND (period BETWEEN 1 AND 2)",
     lambda r: r["district_code"] == "d1" and r["period"] in (1, 2)),
    ("district_code = 'd1' AND (street_code IN ('s1', 's2'))",
     lambda r: r["district_code"] == "d1" and r["street_code"] in ("s1", "s2")),
    ("district_code = 'd1'", lambda r: r["district_code"] == "d1"),
    # An OR among the conjuncts: the query over combinations drops the shared row filter and ANDs the rest again.
    ("district_code = 'd1' AND (street_code = 's1' OR period = 2) AND (industry_code = 'i1')",
     lambda r: r["district_code"] == "d1" and (r["street_code"] == "s1" or r["period"] == 2)
     and r["industry_code"] == "i1"),
    # A range on a measure (NULL in some rows): as many combinations of values as the measure has values.
    ("district_code = 'd1' AND (vat_paid >= 5 AND vat_paid < 100)",
     lambda r: r["district_code"] == "d1" and r["vat_paid"] is not None and 5 <= r["vat_paid"] < 100),
)
KEYS = ((), ("street_code",), ("industry_code",), ("street_code", "industry_code"), ("industry_code", "street_code"))


def _data(path, rng: random.Random) -> list[dict]:
    rows = [{"taxpayer_id": f"t{rng.randrange(12)}", "district_code": rng.choice(("d1", "d1", "d2")),
             "street_code": rng.choice(("s1", "s2", "s3", None)), "industry_code": rng.choice(("i1", "i2")),
             "period": rng.choice((1, 2, 3)), "vat_paid": rng.choice((None, 0, 5, 70, 900))} for _ in range(60)]
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE SCHEMA tax")
        connection.execute("CREATE TABLE tax.declarations (taxpayer_id VARCHAR, district_code VARCHAR, "
                           "street_code VARCHAR, industry_code VARCHAR, period INTEGER, vat_paid BIGINT)")
        connection.executemany("INSERT INTO tax.declarations VALUES (?, ?, ?, ?, ?, ?)",
                               [tuple(r.values()) for r in rows])
    return rows


def _by_hand(rows: list[dict], coverages: list[tuple[int, tuple[str, ...]]]) -> dict[tuple, dict]:
    """Signature -> entity -> (rows, (vat total or None,), (vat count,)), grouping rows by their cell per coverage."""
    blocks: dict[tuple, dict] = defaultdict(dict)
    for row in rows:
        signature = tuple(tuple(row[k] for k in keys) if CONDITIONS[c][1](row) else None for c, keys in coverages)
        if all(part is None for part in signature):
            continue
        count, total, counted = blocks[signature].get(row["taxpayer_id"], (0, None, 0))
        vat = row["vat_paid"]
        blocks[signature][row["taxpayer_id"]] = (count + 1, total if vat is None else (total or 0) + vat,
                                                 counted + (vat is not None))
    return {s: {e: (n, (t,), (c,)) for e, (n, t, c) in b.items()} for s, b in blocks.items()}


@pytest.mark.parametrize("by_values", [False, True], ids=["direct", "by-values"])
@pytest.mark.parametrize("seed", range(40))
def test_blocks_match_grouping_rows_by_their_cell_in_every_coverage(tmp_path, seed, by_values):
    """Either query (see block_query: each row's signature, or each distinct combination's of the values the
    conditions and keys read, matched back NULL-safely) groups the rows as grouping them by hand does."""
    rng = random.Random(seed)
    rows = _data(tmp_path / "data.duckdb", rng)
    # Coverages that share conditions and keys (each at most once: the ledger's coverages are distinct).
    coverages = rng.sample([(c, k) for c in range(len(CONDITIONS)) for k in KEYS], rng.randrange(1, 8))
    texts = [f"SELECT {', '.join(f'{k} AS __k{i}' for i, k in enumerate(keys)) or '1 AS __one'} "
             f"FROM tax.declarations WHERE {CONDITIONS[c][0]}" for c, keys in coverages]
    engine = DuckDBEngine(tmp_path / "data.duckdb")
    try:
        blocks = read_blocks(engine, texts, dataset="tax.declarations", entity="taxpayer_id", measures=["vat_paid"],
                             timeout_s=30, by_values=by_values)
    finally:
        engine.close()
    read = dict(zip(blocks.signatures, blocks.contributions, strict=True))
    assert len(read) == len(blocks.signatures), "a signature came back as two blocks"
    assert read == _by_hand(rows, coverages)


def test_the_block_querys_row_filter_reaches_the_engines_scan(tmp_path):
    """The WHERE names the coverages' conditions bare, not their COALESCE(..., FALSE) columns, so DuckDB filters
    (and prunes row groups) in its scan instead of reading every row of the table into a filter; the rows kept
    are the same, a NULL condition being not true either way (the test above)."""
    path = tmp_path / "plan.duckdb"
    _data(path, random.Random(0))
    sql, _ = block_query([f"SELECT street_code FROM tax.declarations WHERE {CONDITIONS[0][0]}",
                          f"SELECT industry_code FROM tax.declarations WHERE {CONDITIONS[1][0]}"],
                         dataset="tax.declarations", entity="taxpayer_id", measures=["vat_paid"], dialect="duckdb")
    with duckdb.connect(str(path), read_only=True) as connection:
        plan = connection.execute(f"EXPLAIN {sql}").fetchall()[0][1]
    scan = plan[plan.index("Scan"):]
    assert "Filters" in scan and "district_code" in scan, plan


class _Counting(DuckDBEngine):
    """The real engine, counting the queries it runs."""

    queries = 0

    def execute(self, sql, **limits):
        self.queries += 1
        return super().execute(sql, **limits)


def _text(condition: int, keys: tuple[str, ...]) -> str:
    return (f"SELECT {', '.join(f'{k} AS __k{i}' for i, k in enumerate(keys)) or '1 AS __one'} "
            f"FROM tax.declarations WHERE {CONDITIONS[condition][0]}")


def _as_read(blocks) -> dict:
    return dict(zip(blocks.signatures, blocks.contributions, strict=True))


@pytest.mark.parametrize("seed", range(20))
def test_kept_blocks_give_what_the_engine_gives_and_spare_its_query_only_where_nothing_is_new(tmp_path, seed):
    """A coverage whose condition reads as a kept one's and whose keys are some of its keys (a month's street table
    after its street x industry table), or one read before, adds no block: the cache gives the blocks the engine
    would (the same signatures, the same contributions) without asking it; any other coverage is read afresh."""
    from sandbox.audit.blocks import BlockCache

    rng = random.Random(seed)
    _data(tmp_path / "data.duckdb", rng)
    engine = _Counting(tmp_path / "data.duckdb")
    cache = BlockCache()
    try:
        first = rng.sample([(c, k) for c in range(len(CONDITIONS)) for k in KEYS], rng.randrange(1, 5))
        texts = [_text(c, k) for c, k in first]
        cache.read(engine, texts, dataset="tax.declarations", entity="taxpayer_id", measures=["vat_paid"],
                   timeout_s=30)
        assert engine.queries == 1
        condition, keys = rng.choice(first)
        derivable = _text(condition, tuple(rng.sample(keys, rng.randrange(len(keys) + 1))))
        other = _text(rng.randrange(len(CONDITIONS)), rng.choice(KEYS))
        for added in (derivable, other):
            coverages = list(dict.fromkeys(texts + [added]))
            rng.shuffle(coverages)
            before = engine.queries
            kept = cache.read(engine, coverages, dataset="tax.declarations", entity="taxpayer_id",
                              measures=["vat_paid"], timeout_s=30)
            fresh = read_blocks(engine, coverages, dataset="tax.declarations", entity="taxpayer_id",
                                measures=["vat_paid"], timeout_s=30)
            assert _as_read(kept) == _as_read(fresh)
            new = not any(c == added or (c.split(" FROM ")[1] == added.split(" FROM ")[1]
                                         and _keys(added) <= _keys(c)) for c in texts)
            assert engine.queries - before == 1 + new, "the cache asked the engine" if not new else "not read"
        before = engine.queries
        fewer = cache.read(engine, texts, dataset="tax.declarations", entity="taxpayer_id", measures=[],
                           timeout_s=30)
        assert engine.queries == before and fewer.measures == ("vat_paid",), "fewer measures: the kept blocks"
    finally:
        engine.close()


def _keys(text: str) -> set[str]:
    return {part.split(" AS ")[0] for part in text.split(" FROM ")[0].removeprefix("SELECT ").split(", ")
            if not part.startswith("1 AS")}


def test_blocks_are_read_again_once_the_data_file_is_not_what_it_was(tmp_path):
    """The cache keeps blocks only while the engine vouches for the data (its stamp: the file's inode, size and
    times); a file touched past DuckDB is read afresh."""
    import os

    from sandbox.audit.blocks import BlockCache

    path = tmp_path / "data.duckdb"
    _data(path, random.Random(1))
    engine = _Counting(path)
    cache = BlockCache()
    texts = [_text(0, ("street_code",))]
    try:
        for expected in (1, 1, 2):
            if expected == 2:
                stat = path.stat()
                os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
            cache.read(engine, texts, dataset="tax.declarations", entity="taxpayer_id", measures=["vat_paid"],
                       timeout_s=30)
            assert engine.queries == expected
    finally:
        engine.close()


def test_judges_sharing_a_memo_judge_each_union_for_its_own_released_statistics():
    """The judges of one audit share their verdicts (JudgeMemo), keyed by the union and the statistics it is judged
    for: a block whose CIT sum one firm dominates fails where CIT sums were released over it, and passes for a
    judge whose cells released only counts there, whichever judge asked first."""
    from sandbox.audit.auditor import Judge, JudgeMemo, Rules
    from sandbox.audit.blocks import Blocks
    from dsbroker.policy.model import Dominance

    firms = {f"t{i}": (1, (100, 1 if i else 10_000), (1, 1)) for i in range(12)}
    blocks = Blocks(signatures=[("a",)], contributions=[firms], measures=("vat_paid", "cit_paid"))
    rules = Rules(10, Dominance(n=2, k=85))
    memo = JudgeMemo()
    statistics = ["entities", "sum:cit_paid", "sum:vat_paid"]
    counts_only = Judge(blocks, statistics, rules, "tax.declarations", {0: {"entities", "sum:vat_paid"}}, memo)
    with_cit = Judge(blocks, statistics, rules, "tax.declarations", {0: {"entities", "sum:cit_paid"}}, memo)
    assert counts_only.fails(frozenset({0})) is False
    assert with_cit.fails(frozenset({0})) is True
    assert Judge(blocks, statistics, rules, "tax.declarations", {0: {"sum:vat_paid"}}, JudgeMemo()).fails(
        frozenset({0})) is False


def _two_industry_lists(path) -> None:
    """Declarations of three industries, and two lookups both named ``industries`` (two grants' lookup tables, in
    two schemas) that put industry i1 in different sections."""
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE SCHEMA tax")
        connection.execute("CREATE SCHEMA ref")
        connection.execute("CREATE TABLE tax.declarations AS SELECT 't' || (i % 7) AS taxpayer_id, "
                           "'i' || (i % 3) AS industry_code, i * 10 AS vat_paid FROM range(30) AS r(i)")
        for schema, sections in (("tax", ("A", "A", "B")), ("ref", ("A", "B", "B"))):
            connection.execute(f"CREATE TABLE {schema}.industries (industry_code VARCHAR, section_name VARCHAR)")
            connection.executemany(f"INSERT INTO {schema}.industries VALUES (?, ?)",
                                   [(f"i{i}", s) for i, s in enumerate(sections)])


def _by_section(schema: str, join: str = "LEFT JOIN") -> str:
    return (f"SELECT industries.section_name AS __k0 FROM tax.declarations {join} {schema}.industries "
            "ON declarations.industry_code = industries.industry_code WHERE declarations.vat_paid > 0")


@pytest.mark.parametrize("join", ["LEFT JOIN", "JOIN"])
def test_lookups_of_one_name_in_two_schemas_are_two_lookups_to_the_block_query_and_the_cache(tmp_path, join):
    """Two grants on a dataset may each join a lookup named ``industries`` from their own schema: their coverages'
    keys (``industries.section_name``) and conditions read alike, yet give other values. The block query joins each
    lookup it is given (not the first of a name for both), and the cache derives neither from the other."""
    from sandbox.audit.blocks import BlockCache

    path = tmp_path / "data.duckdb"
    _two_industry_lists(path)
    engine = _Counting(path)
    read = {"dataset": "tax.declarations", "entity": "taxpayer_id", "measures": ["vat_paid"], "timeout_s": 30}
    try:
        both = read_blocks(engine, [_by_section("tax", join), _by_section("ref", join)], **read)
        assert set(both.signatures) == {(("A",), ("A",)), (("A",), ("B",)), (("B",), ("B",))}, "i1 is A, then B"
        cache = BlockCache()
        cache.read(engine, [_by_section("tax", join)], **read)
        derived = cache.read(engine, [_by_section("ref", join)], **read)
        assert _as_read(derived) == _as_read(read_blocks(engine, [_by_section("ref", join)], **read))
    finally:
        engine.close()


def test_the_auditor_reads_the_data_it_serves_once_its_file_is_moved_away(tmp_path):
    """DuckDB serves the file it opened, which an owner may move away (to put a new one in its place at the next
    restart): the engine still answers from it, and so must the auditor, reading afresh, without a stamp to keep
    blocks by (there is no file at the path to vouch for)."""
    from sandbox.audit.blocks import BlockCache

    path = tmp_path / "data.duckdb"
    _data(path, random.Random(2))
    engine = _Counting(path)
    read = {"dataset": "tax.declarations", "entity": "taxpayer_id", "measures": ["vat_paid"], "timeout_s": 30}
    texts = [_text(0, ("street_code",))]
    try:
        before = read_blocks(engine, texts, **read)
        path.rename(tmp_path / "old.duckdb")
        assert engine.data_stamp() is None
        cache = BlockCache()
        for expected in (2, 3):
            assert _as_read(cache.read(engine, texts, **read)) == _as_read(before)
            assert engine.queries == expected, "kept without a stamp"
    finally:
        engine.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from sandbox.demo.data import make_demo_data

    path = tmp_path_factory.mktemp("blocks") / "small.duckdb"
    make_demo_data(path, taxpayers=400, months=6)
    engine = DuckDBEngine(path)
    yield engine
    engine.close()


@pytest.mark.parametrize("seed", range(8))
def test_the_query_over_combinations_of_values_gives_the_direct_querys_blocks(demo, policy, seed):
    """Over many conditions the auditor evaluates them once per distinct combination of the values they read and
    groups the rows by the combination's signature; the blocks (signatures and every entity's contributions) are
    the direct query's, for the guard's coverages of random queries (lookups, a measure's ranges, NULL keys)."""
    from tests.block_differential import blocks_read, random_coverages

    coverages = random_coverages(demo, policy, random.Random(seed), 12)
    direct = blocks_read(demo, coverages, by_values=False)
    assert direct, "the coverages keep no row: the comparison would prove nothing"
    assert blocks_read(demo, coverages, by_values=True) == direct


def _amounts(path, count: int) -> None:
    """A table of ``count`` rows of one district, each with its own amount: as many combinations of values as rows
    for conditions that read the amount."""
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE SCHEMA tax")
        connection.execute(f"CREATE TABLE tax.declarations AS SELECT 't' || (i % 50) AS taxpayer_id, 'd1' AS "
                           f"district_code, 's' || (i % 7) AS street_code, i AS vat_paid FROM range({count}) AS t(i)")


def test_conditions_over_a_column_of_many_values_are_refused_past_the_bound_not_evaluated(tmp_path, monkeypatch):
    """Ranges on a measure read a column of nearly as many values as rows, so their combinations of values are
    about as many as the rows: past MOST_SIGNATURE_VALUES (combinations x signature columns) the audit is refused
    (AUDIT_TOO_LARGE) rather than evaluating every condition on each; under it the blocks are the direct query's."""
    from dsbroker.errors import DsbrokerError
    from sandbox.audit import blocks

    _amounts(tmp_path / "data.duckdb", 2_000)
    ranges = [f"SELECT street_code AS __k0 FROM tax.declarations WHERE district_code = 'd1' AND "
              f"(vat_paid >= {low} AND vat_paid < {low + 200})" for low in range(0, 2_000, 50)]
    assert len(ranges) > blocks.DIRECT_CONDITIONS  # the auditor reads these by their combinations
    engine = DuckDBEngine(tmp_path / "data.duckdb")
    try:
        def read(**how):
            found = read_blocks(engine, ranges, dataset="tax.declarations", entity="taxpayer_id",
                                measures=["vat_paid"], timeout_s=30, **how)
            return dict(zip(found.signatures, found.contributions, strict=True))

        assert read() == read(by_values=False) != {}
        blocks._block_query.cache_clear()
        monkeypatch.setattr(blocks, "MOST_SIGNATURE_VALUES", (len(ranges) + 1) * 1_999)  # one combination short
        with pytest.raises(DsbrokerError) as refused:
            read()
        assert refused.value.reason == "AUDIT_TOO_LARGE" and "combinations" in str(refused.value)
        assert read(bounded=False) == read(by_values=False)  # the owner's summary of the ledger waits for it
    finally:
        blocks._block_query.cache_clear()
        engine.close()


def test_more_distinct_conditions_than_the_auditor_plans_are_refused(tmp_path, monkeypatch):
    """The engine plans every distinct condition however few the rows (each spelling of a WHERE is one): past
    MOST_CONDITIONS_AND_KEYS the audit is refused (AUDIT_TOO_LARGE), so the answer that would add one more is not
    released and the ledger's part stops growing; up to it the audit runs."""
    from dsbroker.errors import DsbrokerError
    from sandbox.audit import blocks

    _amounts(tmp_path / "data.duckdb", 100)
    spelt = [f"SELECT street_code AS __k0 FROM tax.declarations WHERE district_code = 'd1' AND "
             f"(street_code IN ('s1', 'x{i}'))" for i in range(40)]
    monkeypatch.setattr(blocks, "MOST_CONDITIONS_AND_KEYS", 41)  # 40 conditions and their one key
    engine = DuckDBEngine(tmp_path / "data.duckdb")
    try:
        found = read_blocks(engine, spelt, dataset="tax.declarations", entity="taxpayer_id", measures=["vat_paid"],
                            timeout_s=30)
        assert len(found.signatures) == 1  # the street's rows, in all 40 cells
        more = spelt + [spelt[0].replace("'x0'", "'y'")]
        with pytest.raises(DsbrokerError) as refused:
            read_blocks(engine, more, dataset="tax.declarations", entity="taxpayer_id", measures=["vat_paid"],
                        timeout_s=30)
        assert refused.value.reason == "AUDIT_TOO_LARGE"
        assert read_blocks(engine, more, dataset="tax.declarations", entity="taxpayer_id", measures=["vat_paid"],
                           timeout_s=30, bounded=False).signatures  # the owner's summary of the ledger
    finally:
        blocks._block_query.cache_clear()
        engine.close()
