"""Findings of a second outside review of the guard and the sandbox's release, each a regression test.

Each test fails on the code it was written against (branch attack-round2, from df9761b) and says, in its
docstring, how the attack works. Most compare two neighbouring databases that differ only in what the
released cells do not say (one taxpayer's existence or amount inside a withheld cell): a query must
succeed on both or on neither, and answer the same on both. The others require that repeating one
exact query gives one answer, that no input is an INTERNAL error, and that what one short query costs
the sandbox is bounded.

The tests run the guard and the sandbox's own release code (``sandbox.disclosure.release``,
``sandbox.disclosure.noise``, ``sandbox.disclosure.encryption``) on real DuckDB files, as the servicer does.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from dsbroker.errors import DsbrokerError
from dsbroker.guard import guard
from dsbroker.guard.split_cells import MOST_CELLS
from dsbroker.policy.model import Noise
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.disclosure.release import release, run
from tests.neighbours import TYPES, guarded_for, outcome, street
from tests.conftest import XUANWU

ROOT = Path(__file__).resolve().parent.parent
DECLARATIONS = ("CREATE TABLE tax.declarations (taxpayer_id VARCHAR, period DATE, district_code VARCHAR, "
                "street_code VARCHAR, industry_code VARCHAR, industry_section VARCHAR, registration_type VARCHAR, "
                "size_class VARCHAR, revenue BIGINT, vat_paid BIGINT, cit_paid BIGINT, iit_withheld BIGINT, "
                "employees INTEGER)")



# -- 1. noise: key outputs are computed by the engine, for every cell, lone taxpayers' included -----------

NOISE = Noise(epsilon=1.0, budget=10.0, bounds={"vat_paid": (0, 1000)}, rows_per_entity=2)


def noisy_outcome(engine, guarded, policy):
    """What a caller learns from one noisy run, as the servicer's ``_noisy`` computes it: that it answered
    (and with which columns; the noisy rows themselves are random), or the refusal's reason."""
    from sandbox.disclosure.noise import noisy_answer

    try:
        result = engine.execute(guarded.sql, timeout_s=30, max_rows=MOST_CELLS)
        answer = noisy_answer(guarded.noise, policy.noise, policy.min_entities, result.names, result.types,
                              result.rows, max_rows=guarded.max_rows)
    except DsbrokerError as error:
        return ("refused", error.reason)
    return ("answered", tuple(answer.names))


@pytest.mark.parametrize("output", [
    "street_code = 5",  # DuckDB casts the key to a number, per cell: 'X' does not read
    "period = '20250101'",  # the lazily cast date literal the first review closed in WHERE, here in SELECT
    "month(period) - 9223372036854775807 - 9223372036854775807",  # BIGINT overflow, per cell
])
def test_a_noisy_key_output_never_fails_on_a_lone_taxpayers_cell(engines, policy, output):
    """Under noise, add_noise_measures writes each key output into the engine query (``_cell_form``:
    ``SELECT __g0 = 5 AS b, COUNT(*) ... GROUP BY __g0``), and reject_noise_unsupported lets any
    expression over keys be an output. The engine evaluates it for every cell before the noisy threshold,
    the cell of a single taxpayer included. reject_mistyped_filters checks literals in WHERE only, so
    ``street_code = 5`` casts each street code to a number and fails (EXECUTION_FAILED) if and only if
    some cell's code is not a number: with ``WHERE street_code = 'X'``, if and only if street X has a
    declaration. The failure spends the epsilon, but it is an exact, noise-free yes/no about one
    taxpayer: the likelihood ratio is infinite, so the (epsilon, delta) guarantee is gone. With a gridded
    measure range in WHERE it reads a lone taxpayer's amount to the grid, one bit per query."""
    sql = (f"SELECT {output} AS probe, COUNT(*) AS c FROM tax.declarations WHERE street_code = 'X' "
           f"GROUP BY street_code, period")
    granted = dataclasses.replace(policy, noise=NOISE, dominance=None)  # a noise grant has no dominance rule
    try:
        guarded = guarded_for(sql, granted)
    except DsbrokerError as error:
        assert error.metadata.get("rule", "").startswith("reject_")  # a refusal before any data is read
        return
    base = street("A", 12) + street("B", 12)
    found = {name: noisy_outcome(engines(name, rows), guarded, granted)
             for name, rows in {"absent": base, "present": base + street("X", 1)}.items()}
    assert found["absent"] == found["present"], found


# -- 2. negating a text or a date: an INTERNAL error, and in encrypted mode one about withheld groups ----

@pytest.mark.parametrize("sql", [
    "SELECT street_code, -street_code AS x, COUNT(*) AS c FROM tax.declarations GROUP BY street_code",
    "SELECT period, -period AS x, COUNT(*) AS c FROM tax.declarations GROUP BY period",
    "SELECT street_code, -'abc' AS x, COUNT(*) AS c FROM tax.declarations GROUP BY street_code",
    "SELECT street_code, COUNT(*) AS c FROM tax.declarations GROUP BY street_code ORDER BY -street_code",
])
def test_negating_text_or_a_date_is_never_an_internal_error(engines, policy, sql):
    """split_cells lowers a unary minus over anything to ``Call("neg")``, and sandbox.disclosure.evaluate's
    ``_negate`` applies Python's ``-`` without looking at the kind: ``-'A'`` and ``-date`` raise
    TypeError, an INTERNAL error for the caller (README: no input may produce one). ``_arithmetic``
    already answers NULL for arithmetic on text or dates; negation should too, or the guard refuse it."""
    try:
        guarded = guarded_for(sql, policy)
    except DsbrokerError as error:
        assert error.metadata.get("rule", "").startswith("reject_")
        return
    result = outcome(engines("db", street("A", 12) + street("B", 12)), guarded)
    assert result[0] == "answered", result


def test_an_encrypted_key_output_says_nothing_about_withheld_groups(engines, encrypted_policy):
    """encrypted_release computes the key outputs of the groups under the threshold too (``keys_of(withheld)``,
    for the partitions' count of groups left out). With a key output that fails in Python (``-street_code``,
    finding 2), the encrypted answer is an INTERNAL error if and only if a small group exists: with
    ``WHERE street_code = 'X'`` nothing is released either way, yet the query fails exactly when street X
    has a taxpayer. Encrypted mode promises that groups under the threshold leave no trace (not even a mark),
    and under ``suppressed: drop`` the grant says their existence alone is sensitive."""
    from sandbox.disclosure.encryption import encrypted_release

    sql = "SELECT -street_code AS x, COUNT(*) AS c FROM tax.declarations WHERE street_code = 'X' GROUP BY street_code"
    try:
        guarded = guarded_for(sql, encrypted_policy, encrypted=True, results=("aggregate", "encrypted"),
                              suppression="drop")
    except DsbrokerError as error:
        assert error.metadata.get("rule", "").startswith("reject_")
        return
    base = street("A", 12) + street("B", 12)
    found = {}
    for name, rows in {"absent": base, "present": base + street("X", 1)}.items():
        engine = engines(name, rows)
        result = engine.execute(guarded.sql, timeout_s=30, max_rows=guarded.max_rows + 1)
        try:
            released = encrypted_release(result.names, result.types, result.rows, guarded, partitions=1,
                                         dataset="tax.declarations")
            found[name] = ("answered", released.keys, released.truncated)
        except DsbrokerError as error:
            found[name] = ("refused", error.reason)
        except Exception as error:  # noqa: BLE001 - the INTERNAL error is the finding
            found[name] = ("internal", type(error).__name__)
    assert found["absent"] == found["present"], found


# -- 3. totals: which sibling secondary suppression withholds depends on the engine's row order ----------

ROLLUP_SQL = ("SELECT street_code, COUNT(*) AS c, SUM(vat_paid) AS v FROM tax.declarations "
              "GROUP BY ROLLUP (street_code)")


def test_secondary_suppression_does_not_depend_on_the_engines_row_order(engines, totals_policy):
    """_secondary withholds "the released sibling with the fewest entities", ties broken by the cell's index
    in the engine's result (``min(candidates, key=lambda i: (cells[i].entities, i))``), and it walks the
    equations in the engine's row order. A table with totals is not ordered by the engine (the cell query
    has no ORDER BY), so which of two siblings with as many taxpayers is withheld is the engine's choice.
    The same cells in another order must give the same answer."""
    engine = engines("db", street("A", 12) + street("B", 12) + street("C", 15) + street("X", 1))
    guarded = guarded_for(ROLLUP_SQL, totals_policy)
    result = engine.execute(guarded.sql, timeout_s=30, max_rows=MOST_CELLS)
    answers = []
    for rows in (list(result.rows), list(reversed(result.rows))):
        released = release(result.names, result.types, rows, guarded)
        answers.append((released.rows, released.withheld))
    assert answers[0] == answers[1], answers


def test_repeating_an_exact_query_with_totals_gives_one_answer(tmp_path, totals_policy):
    """The consequence of the test above on a real engine: DuckDB (two threads, as the sandbox runs it)
    returns a ROLLUP's rows in an order that varies from run to run once the table spans several row
    groups. Here 200 streets of 12 taxpayers each (600,000 declarations) and one street X of one taxpayer:
    X is withheld, and one 12-taxpayer street with it, a different one from run to run (five different
    streets in twenty runs when this was written). Two answers that withhold different streets S and T
    give X exactly: the total less every street released in either. So repeating one allowed query reads
    a lone taxpayer's declarations and VAT, although the README says that in exact mode "repetition gains
    nothing (the answer is the same)"."""
    path = tmp_path / "owner-data.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE SCHEMA tax")
        connection.execute(DECLARATIONS)
        connection.execute(
            "INSERT INTO tax.declarations SELECT 'S' || s || '-' || t, DATE '2000-01-01' + CAST(m AS INTEGER), "
            f"'{XUANWU}', 'S' || lpad(CAST(s AS VARCHAR), 3, '0'), '64', 'I', '173', 'small', 100, 10, 0, 0, 1 "
            "FROM range(200) r1(s), range(12) r2(t), range(250) r3(m) ORDER BY hash(s, t, m)")
        connection.execute(f"INSERT INTO tax.declarations VALUES ('X-0', DATE '2025-01-01', '{XUANWU}', 'X', "
                           "'64', 'I', '173', 'small', 100, 777, 0, 0, 1)")
    engine = DuckDBEngine(path)
    try:
        guarded = guarded_for(ROLLUP_SQL, totals_policy)
        withheld_streets = set()
        for _ in range(20):
            released = run(engine, guarded, timeout_s=60)
            withheld_streets.add(tuple(sorted(row[0]
                                              for row, marks in zip(released.rows, released.withheld, strict=True)
                                              if marks and row[0] != "X")))
    finally:
        engine.close()
    assert len(withheld_streets) == 1, f"twenty runs withheld different siblings: {sorted(withheld_streets)}"


# -- 4. a measure that one taxpayer of the cell declares: the threshold counts the others -------------------

def test_a_sum_that_only_one_taxpayer_contributes_to_is_withheld(engines, policy):
    """The threshold counts the cell's distinct taxpayers over all its rows, but SUM, AVG (and COUNT of a
    measure) skip rows where the measure is NULL. In a street of 12 taxpayers where only one declares CIT
    (the others' cit_paid is NULL: not liable, or not yet assessed), ``SUM(cit_paid)`` and
    ``AVG(cit_paid)`` are that one taxpayer's amount, released as a cell of 12, and ``COUNT(cit_paid)`` = 1
    tells the caller so. A zero amount would hide which taxpayer paid; NULL says it outright. The shipped
    grant has no dominance rule, and encrypted mode and totals cannot have one. The two databases differ
    only in that taxpayer's CIT."""
    sql = ("SELECT street_code, COUNT(DISTINCT taxpayer_id) AS taxpayers, COUNT(cit_paid) AS payers, "
           "SUM(cit_paid) AS cit, AVG(cit_paid) AS mean_cit FROM tax.declarations GROUP BY street_code")
    guarded = guarded_for(sql, policy)
    found = {}
    for amount in (123_456, 654_321):
        engine = engines(f"cit-{amount}", street("A", 12) + street("B", 12),
                         "UPDATE tax.declarations SET cit_paid = NULL WHERE street_code = 'A'",
                         f"UPDATE tax.declarations SET cit_paid = {amount} WHERE taxpayer_id = 'A-0'")
        found[amount] = outcome(engine, guarded)
    assert found[123_456] == found[654_321], found


# -- 5. the release computes the caller's expressions per comparison, with no bound and no deadline -------

_SLOW_RELEASE = """
import sys, dataclasses, datetime as dt, tempfile, pathlib
sys.path.insert(0, {root!r})
from dsbroker.guard import guard
from dsbroker.policy.model import load_policy
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.disclosure.release import run
from tests.conftest import declarations_file, POLICIES, GRANT, XUANWU
policy = load_policy(POLICIES / f"{{GRANT}}.yaml")
rows = [(f"t{{i}}", dt.date(2025, 1, 1), f"S{{i // 12:05d}}", 100, (i * 7919) % 100003) for i in range(12_000)]
engine = DuckDBEngine(declarations_file(pathlib.Path(tempfile.mkdtemp()) / "owner-data.duckdb", rows))
ones = ["1"] * 3200
while len(ones) > 1:  # a balanced sum keeps the nesting within the parse limits
    ones = [f"({{ones[i]}} + {{ones[i + 1]}})" if i + 1 < len(ones) else ones[i] for i in range(0, len(ones), 2)]
sql = ("SELECT street_code, COUNT(*) AS c FROM tax.declarations GROUP BY street_code "
       f"ORDER BY SUM(vat_paid) * {{ones[0]}}")
guarded = guard(sql, policy, district=XUANWU, department="xuanwu-fgw")
print(len(run(engine, guarded, timeout_s=30).rows))
"""


def test_ordering_by_a_large_expression_is_cheap_for_the_sandbox():
    """A 19 kB query within every parse limit (9,600 nodes, 100 deep): ``ORDER BY SUM(vat_paid) * (1 + 1 +
    ... + 1)``. The guard accepts it in milliseconds; the sandbox then sorts the cells with
    ``functools.cmp_to_key`` and re-evaluates the whole 6,400-closure expression for both rows of every
    comparison (nothing is computed once per row, and constant parts are never folded). On 1,000 cells
    that took 150 s of CPU on the review machine, with the GIL held, and nothing checks a deadline after
    the engine returns: a handful of such queries ties up every sandbox worker. With the cap of 50,000
    cells that ORDER BY may read (10 x max_groups) it is hours. Run in a child process that is killed
    after a minute (not a timing test: the ordering should cost one evaluation per cell, milliseconds)."""
    try:
        done = subprocess.run([sys.executable, "-c", _SLOW_RELEASE.format(root=str(ROOT))], cwd=ROOT,
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        pytest.fail("releasing 1,000 ordered cells took the sandbox more than a minute")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "1000"


# -- 6. partitions: the count of partitions that left a group out, under suppressed: drop ----------------

def test_partitions_left_out_say_nothing_under_drop(engines, encrypted_policy):
    """With partitions, each sandbox encrypts beside its cells a vector saying, per group of the union,
    whether its own cell was under the threshold (``partitions_withheld``); the requester decrypts it (the
    CLI's "partitions left out"). The guard forces ``mark`` for encrypted queries, so this holds even when
    the grant says ``suppressed: drop``, i.e. that a small cell's existence alone is sensitive: here street
    A is released by partition one, and the count says whether partition two holds between 1 and k - 1
    taxpayers in A. The two worlds differ only in one taxpayer of partition two, in a cell it withholds."""
    from broker.client.encryption_key import EncryptionKey
    from broker.query.secure_sum import _add, _order
    from sandbox.disclosure.encryption import check_domain, encrypt, encrypted_release
    from dsbroker.results.table import table_like

    sql = "SELECT street_code, COUNT(*) AS c, SUM(vat_paid) AS v FROM tax.declarations GROUP BY street_code"
    guarded = guarded_for(sql, encrypted_policy, encrypted=True, results=("encrypted",), suppression="drop",
                          partitions=("east", "west"))
    key = EncryptionKey.generate()
    found = {}
    for world, west_rows in {"without": street("B", 12), "with": street("B", 12) + street("A", 1)}.items():
        releases = []
        for name, rows in {"east": street("A", 12), "west": west_rows}.items():
            engine = engines(f"{world}-{name}", rows)
            result = engine.execute(guarded.sql, timeout_s=30, max_rows=guarded.max_rows + 1)
            releases.append(encrypted_release(result.names, result.types, result.rows, guarded, partitions=2,
                                              dataset="tax.declarations"))
        union = sorted({k for r in releases for k in r.keys}, key=_order)
        groups = table_like(releases[0].groups, union)
        tables = [encrypt(r, key.context, key.key_id, domain=check_domain(r, groups)) for r in releases]
        total = _add(tables, "test")
        total.groups.CopyFrom(groups)
        decrypted = key.decrypt(total)
        found[world] = (decrypted.rows, decrypted.partitions_withheld)
    assert found["without"] == found["with"], found


def test_a_marked_answer_does_not_show_the_band_a_lone_taxpayer_is_in(engines, policy):
    """Noted by the second review: under ``suppressed: mark`` a withheld row still shows its keys, so with a
    range on a measure in WHERE, whether street X's (withheld) row appears says whether its lone taxpayer's
    employees lie in the band. Such a query leaves small cells out instead."""
    sql = ("SELECT street_code, COUNT(*) AS c FROM tax.declarations WHERE employees BETWEEN 0 AND 49 "
           "GROUP BY street_code ORDER BY street_code")
    granted = dataclasses.replace(policy, ranges={"employees": 50}, suppression="mark")
    guarded = guard(sql, granted, district=XUANWU, department="xuanwu-fgw", column_types=TYPES)
    found = {}
    for employees in (30, 70):
        engine = engines(f"band-{employees}", street("A", 12) + street("X", 1),
                         f"UPDATE tax.declarations SET employees = {employees} WHERE street_code = 'X'")
        found[employees] = outcome(engine, guarded)
    assert found[30] == found[70], found
