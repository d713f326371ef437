"""What the engine tests compare across engines: the grants, the queries, and the cells an engine releases for
them (the threshold's, the dominance rules' and the auditor's withholdings, noise mode's bounded cells), so that
each engine's test compares its cells with DuckDB's the same way."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from pathlib import Path

from dsbroker.guard import guard
from dsbroker.policy.model import Dominance, Noise
from dsbroker.results.table import encode_table
from sandbox.audit.auditor import Auditor
from sandbox.disclosure.encryption import encrypted_release
from sandbox.disclosure.release import run
from sandbox.ledgers.released_cells import ReleasedCellLedger
from tests.conftest import ENCRYPTED, TOTALS, XUANWU, asks_totals
from tests.guard_fixtures import read_cases

# The company names stay unserved: an engine may not read them, and each lockdown checks it.
SERVED = {"tax.declarations", "tax.streets", "tax.industries", "tax.registration_types"}
ROLLUPS = [
    "SELECT street_code, size_class, SUM(vat_paid) AS vat FROM tax.declarations "
    "GROUP BY ROLLUP (street_code, size_class) ORDER BY 1, 2",
    "SELECT street_code, COUNT(*) AS c FROM tax.declarations GROUP BY ROLLUP (street_code)",
    "SELECT industry_section, SUM(vat_paid + cit_paid) AS tax, COUNT(DISTINCT taxpayer_id) AS n "
    "FROM tax.declarations GROUP BY ROLLUP (industry_section)",
]
# A threshold of 2 keeps most cells of the small data; the dominance grants withhold some sums besides (the
# dominance rule does not combine with totals, so the ROLLUPs run under the first grant only, the shipped
# grant with its dominance rule off).
GRANTS = {"k2": {"min_entities": 2, "dominance": None, "dominance_waiver": TOTALS},
          "k3-dominance": {"min_entities": 3, "dominance": Dominance(n=1, k=50.0)},
          "k2-dominance-p": {"min_entities": 2, "dominance": Dominance(n=2, k=80.0, p=20.0)}}
CASES = [(grant, case.title, case.sql) for grant in GRANTS for case in read_cases("accepted.sql")
         if grant == "k2" or not asks_totals(case.sql)] + [("k2", sql, sql) for sql in ROLLUPS]
# Spark plans each query in about a second: every fixture runs under the grant that exercises the most (the
# threshold, and the dominance rule's n largest and its p% test), those with ROLLUP under the grant that allows them,
# and the other grants on the query that withholds cells (test_the_comparison_covers_withheld_cells).
FEWER_CASES = [case for case in CASES if case[0] == "k2-dominance-p" or asks_totals(case[2])]
# Differencing, street by street: the cells by street and section first, then totals that the withheld cells
# are the difference of (a street's total, a street's total less one section, the district's). The auditor
# withholds the second kind wherever, with what was released before, it would give a small cell away.
AUDITED = [
    "SELECT street_code, industry_section, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY 1, 2",
    "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY 1",
    "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations WHERE industry_section IN ('C', 'F', 'I', 'L', "
    "'M') GROUP BY 1",
    "SELECT industry_section, SUM(vat_paid) AS vat, COUNT(*) AS c FROM tax.declarations GROUP BY 1",
    "SELECT size_class, SUM(vat_paid + cit_paid) AS tax FROM tax.declarations WHERE period BETWEEN "
    "DATE '2024-01-01' AND DATE '2024-06-30' GROUP BY 1",
    "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations WHERE period BETWEEN DATE '2024-01-01' AND "
    "DATE '2024-12-31' GROUP BY 1",
    "SELECT SUM(vat_paid) AS vat FROM tax.declarations",
]
NOISE = Noise(epsilon=1.0, budget=10.0, bounds={"revenue": (0, 10_000_000), "vat_paid": (0, 1_000_000)},
              rows_per_entity=2)
NOISY = ["SELECT street_code, SUM(revenue) AS revenue, COUNT(*) AS c FROM tax.declarations GROUP BY street_code",
         "SELECT industry_section, AVG(vat_paid) AS vat FROM tax.declarations WHERE period BETWEEN DATE '2024-01-01' "
         "AND DATE '2024-03-31' GROUP BY 1"]
ENCRYPTED_SQL = ("SELECT street_code, industry_section, COUNT(DISTINCT taxpayer_id) AS n, SUM(vat_paid) AS vat, "
                 "AVG(cit_paid) AS cit FROM tax.declarations GROUP BY 1, 2")
WITHHELD_SQL = "SELECT street_code, industry_section, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY 1, 2"


def guarded(served, sql: str, grant, *, encrypted: bool = False):
    """``sql`` guarded under ``grant`` for ``served`` (an engine): in its dialect, with its column types."""
    column_types = {table: dict(served.columns(table)) for table in SERVED}
    return guard(sql, grant, district=XUANWU, department="xuanwu-fgw", engine_dialect=served.dialect,
                 column_types=column_types, encrypted=encrypted)


def released(served, sql: str, policy, grant_name: str, *, auditor: Auditor | None = None):
    """The wire table, the counts withheld per rule and the truncation of ``sql`` released from ``served``
    (with ``auditor``, audited against what it released before; totals that are not a ROLLUP, which only the
    auditor protects, get one with a ledger of their own when none is given)."""
    grant = dataclasses.replace(policy, min_max={"employees": ("MIN", "MAX"), "revenue": ("MAX",)},
                                **GRANTS[grant_name])
    plan = guarded(served, sql, grant)
    with fresh_auditor(served) if auditor is None and plan.cells is not None and plan.cells.totals \
            and not plan.cells.rollup else contextlib.nullcontext(auditor) as used:
        answer = run(served, plan, timeout_s=60, auditor=used)
    return (encode_table(answer.names, answer.types, answer.rows, withheld=answer.withheld,
                         rolled_up=answer.rolled_up), answer.counts, answer.truncated)


@contextlib.contextmanager
def fresh_auditor(served):
    """A released-cell auditor over ``served`` with an empty ledger of its own, closed and removed after."""
    with tempfile.TemporaryDirectory(prefix="dsbroker-ledger-") as directory:
        auditor = Auditor(served, ReleasedCellLedger(Path(directory) / "released.sqlite"))
        try:
            yield auditor
        finally:
            auditor.ledger.close()


def noisy_cells(served, sql: str, policy):
    """The exact, bounded cells a noise grant's query reads from ``served`` (noise is drawn on them later)."""
    grant = dataclasses.replace(policy, noise=NOISE, dominance=None)  # a noise grant has no dominance rule
    result = served.execute(guarded(served, sql, grant).sql, timeout_s=60, max_rows=10_000)
    return result.names, sorted(result.rows, key=repr)


def encrypted_answer(served, policy):
    """An encrypted answer's groups, keys, withheld groups, measures and truncation from ``served`` (before
    encryption: what would be encrypted)."""
    grant = dataclasses.replace(policy, min_entities=3, dominance=None, dominance_waiver=ENCRYPTED,
                                results=("aggregate", "encrypted"))
    plan = guarded(served, ENCRYPTED_SQL, grant, encrypted=True)
    result = served.execute(plan.sql, timeout_s=60, max_rows=plan.max_rows + 1)
    answer = encrypted_release(result.names, result.types, result.rows, plan, partitions=1, dataset=plan.dataset,
                               max_rows=plan.max_rows)
    return answer.groups, answer.keys, answer.withheld, answer.measures, answer.truncated


def audited_answers(served, policy, ledger):
    """:data:`AUDITED` in order from ``served``, each audited against what the ones before released (``ledger``,
    a released-cell ledger file of this engine's own): per query, the wire table and the counts withheld."""
    auditor = Auditor(served, ReleasedCellLedger(ledger))
    try:
        return [released(served, sql, policy, "k3-dominance", auditor=auditor)[:2] for sql in AUDITED]
    finally:
        auditor.ledger.close()


# The comparisons each engine's test makes, with DuckDB (``reference``) on the same rows.

def assert_released_alike(engine, reference, policy, grant_name: str, sql: str) -> None:
    """``sql``'s released wire table, withheld counts and truncation are DuckDB's."""
    (duck_table, *duck_rest), (table, *rest) = (released(served, sql, policy, grant_name)
                                                for served in (reference, engine))
    assert duck_table.row_count > 0, "the query should release cells on the small data"
    assert table == duck_table
    assert rest == duck_rest


def assert_withheld_alike(engine, reference, policy, grant_name: str, rule: str) -> None:
    """:data:`WITHHELD_SQL` under ``grant_name`` withholds cells by ``rule``, the same ones as on DuckDB."""
    (duck_table, duck_counts, _), (table, counts, _) = (released(served, WITHHELD_SQL, policy, grant_name)
                                                        for served in (reference, engine))
    assert counts == duck_counts and duck_counts[rule] > 0
    assert table == duck_table


def assert_audited_alike(engine, reference, policy, directory) -> None:
    """The same queries in the same order, each engine with a ledger of its own (in ``directory``): every answer,
    the auditor's withholdings included, is the same cell for cell, and the auditor withholds some."""
    audited = [audited_answers(served, policy, directory / f"{served.dialect}.released.sqlite")
               for served in (reference, engine)]
    for sql, duck, other in zip(AUDITED, *audited, strict=True):
        assert other == duck, sql
    assert sum(counts["audit"] for _table, counts in audited[0]) > 0, \
        "the sequence should make the auditor withhold cells"


def assert_noisy_alike(engine, reference, policy, sql: str) -> None:
    """Noise is drawn in the sandbox; what it is drawn on (the engine's exact, bounded cells) is DuckDB's."""
    duck, cells = (noisy_cells(served, sql, policy) for served in (reference, engine))
    assert duck[1], "the query should have cells on the small data"
    assert cells == duck


def assert_encrypted_alike(engine, reference, policy) -> None:
    """An encrypted answer's groups and cells are DuckDB's; some groups are released and some withheld."""
    duck, answer = (encrypted_answer(served, policy) for served in (reference, engine))
    assert duck[1] and duck[2], "some groups should be released and some withheld"
    assert answer == duck
