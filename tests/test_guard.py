"""The guard, driven by the SQL fixtures in tests/fixtures/guard/."""

from __future__ import annotations

import dataclasses

import pytest
import sqlglot

from dsbroker.errors import GuardError
from dsbroker.guard import RULES, guard
from dsbroker.policy.model import Lookup, Noise, load_policy
from sandbox.engine.duckdb_engine import DuckDBEngine
from dsbroker.guard.release_plan import describe
from sandbox.disclosure.release import run
from tests.conftest import GRANT, POLICIES, XUANWU, policy_without_dominance
from tests.engine_cells import fresh_auditor
from tests.guard_fixtures import CATEGORIES, read_cases

REFUSED = read_cases("*__invalid.sql")
ACCEPTED = read_cases("accepted.sql")
REWRITES = read_cases("rewrites.sql")  # under suppressed: drop (the threshold in HAVING)
MARKED_REWRITES = read_cases("rewrites_marked.sql")  # under suppressed: mark, the default
ENCRYPTED_REWRITES = read_cases("rewrites_encrypted.sql")  # in encrypted mode
# Written for Spark, each under the grant it names: the shipped one (its dominance rule on) or the one for totals.
SPARK_REWRITES = read_cases("rewrites_spark.sql")


@pytest.fixture(scope="module")
def policy():
    """The grant the fixtures are written for: the shipped one, its dominance rule off (a test-only variant)."""
    return policy_without_dominance("the fixtures pin the guard's rewrites and refusals and the unrestricted "
                                    "query's cells, without the dominance rule's columns and withheld cells")


NOISE = Noise(epsilon=1.0, budget=10.0, bounds={"revenue": (0, 10**9), "vat_paid": (0, 10**8)})


def run_guard(sql, policy, *, noise=None, suppression="drop", encrypted=False, results=("aggregate", "encrypted"),
              engine_dialect="duckdb"):
    # The shipped grant allows no MIN or MAX, no ranges on measures and no encrypted results; the
    # fixtures test them on a copy that grants a few.
    policy = dataclasses.replace(policy, min_max={"employees": ("MIN", "MAX"), "revenue": ("MAX",)},
                                 ranges={"employees": 50, "iit_withheld": 100_000_000}, noise=noise,
                                 suppression=suppression, results=results)
    return guard(sql, policy, district=XUANWU, department="xuanwu-fgw", encrypted=encrypted,
                 engine_dialect=engine_dialect)


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.id)
def test_refused_with_reason_naming_rule_and_column(case, policy):
    rule = case.file.split("__")[0]
    with pytest.raises(GuardError) as caught:
        run_guard(case.sql, policy, noise=NOISE if rule == "reject_noise_unsupported" else None,
                  encrypted=rule == "reject_encryption_unsupported",
                  results=("encrypted",) if rule == "reject_ungranted_result_mode" else ("aggregate", "encrypted"))
    error = caught.value
    assert error.reason == case.expect["reason"], error.message
    assert error.metadata["rule"] == rule
    for key, expected in case.expect.items():
        if key != "reason":
            assert str(error.metadata.get(key)) == expected, f"{key}: {error.metadata.get(key)!r} != {expected!r}"


def test_the_attack_fixtures_cover_every_category():
    assert len(REFUSED) >= 80 and len(ACCEPTED) >= 30
    unknown = [case.id for case in REFUSED if case.category not in CATEGORIES]
    assert not unknown, f"fixtures without a known category: {unknown}"
    assert {case.category for case in REFUSED} == set(CATEGORIES)


def assert_rewrites(guarded, case):
    assert guarded.sql == case.rewritten
    assert describe(guarded.cells) == case.releases


@pytest.mark.parametrize("case", REWRITES, ids=lambda c: c.id)
def test_rewrites_exactly(case, policy):
    assert_rewrites(run_guard(case.sql, policy), case)


@pytest.mark.parametrize("case", MARKED_REWRITES, ids=lambda c: c.id)
def test_rewrites_exactly_when_suppressed_cells_are_marked(case, policy):
    assert_rewrites(run_guard(case.sql, policy, suppression="mark"), case)


@pytest.mark.parametrize("case", ENCRYPTED_REWRITES, ids=lambda c: c.id)
def test_rewrites_exactly_when_encrypted(case, policy):
    assert_rewrites(run_guard(case.sql, policy, encrypted=True, suppression="mark"), case)


@pytest.mark.parametrize("case", SPARK_REWRITES, ids=lambda c: c.id)
def test_rewrites_exactly_for_spark(case, totals_policy):
    grant = totals_policy if case.expect["grant"] == "totals" else load_policy(POLICIES / f"{GRANT}.yaml")
    assert_rewrites(run_guard(case.sql, grant, engine_dialect="spark"), case)


@pytest.fixture(scope="module")
def engine(demo_db):
    engine = DuckDBEngine(demo_db)
    yield engine
    engine.close()


@pytest.mark.parametrize("suppression", ["drop", "mark"])
@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.id)
def test_accepted_cells_equal_the_unrestricted_query(case, suppression, policy, engine, direct):
    guarded = run_guard(case.sql, policy, suppression=suppression)
    if guarded.cells.totals and not guarded.cells.rollup:  # only the released-cell auditor protects these
        with fresh_auditor(engine) as auditor:
            released = run(engine, guarded, timeout_s=30, auditor=auditor)
    else:
        released = run(engine, guarded, timeout_s=30)
    assert released.names == list(guarded.output_names)
    withheld = [row for row, cells in zip(released.rows, released.withheld, strict=True) if cells]
    assert not withheld or suppression == "mark" or guarded.cells.totals  # totals keep every row, marked
    assert all(row[i] is None for row in withheld for i in guarded.cells.cell_outputs)
    released.rows = [row for row, cells in zip(released.rows, released.withheld, strict=True) if not cells]
    assert released.rows, "a legitimate query released nothing; the fixture should pick cells above the threshold"

    # The reference is built without the guard: the caller's SQL, restricted to its
    # district by sqlglot's builder, without threshold or limit, run on plain DuckDB.
    reference_tree = sqlglot.parse_one(case.sql, read="duckdb")
    source = reference_tree.args["from_"].this
    reference_tree = reference_tree.where(f"{source.alias_or_name}.district_code = '{XUANWU}'")
    reference_tree.set("limit", None)
    for table in reference_tree.find_all(sqlglot.exp.Table):
        table.set("db", sqlglot.exp.to_identifier("tax"))
    reference = {tuple(_key(row, released.names, case)): row
                 for row in direct.execute(reference_tree.sql("duckdb")).fetchall()}
    for row in released.rows:
        expected = reference[tuple(_key(row, released.names, case))]
        assert _same(row, expected), f"{row} != {expected}"


def _key(row, names, case):
    # Aggregate outputs are floats or large ints; group keys are the non-aggregate outputs.
    tree = sqlglot.parse_one(case.sql, read="duckdb")
    aggregate_positions = {i for i, p in enumerate(tree.expressions) if p.find(sqlglot.exp.AggFunc)}
    return [v for i, v in enumerate(row) if i not in aggregate_positions]


def _same(row, expected) -> bool:
    return all(a == b or (isinstance(a, float) and abs(a - b) <= 1e-9 * max(1.0, abs(b)))
               for a, b in zip(row, expected, strict=True))


def test_rules_are_small_modules_named_for_what_they_do():
    for rule in RULES:
        assert rule.__name__.split("_")[0] in {"reject", "resolve", "expand", "add", "enforce", "split", "qualify",
                                               "translate"}
        assert rule.__module__ == f"dsbroker.guard.{rule.__name__}"


def test_refusals_never_quote_a_data_value(policy, direct):
    taxpayer = direct.execute("SELECT taxpayer_id FROM tax.taxpayers LIMIT 1").fetchone()[0]
    with pytest.raises(GuardError) as caught:
        run_guard(f"SELECT SUM(vat_paid) FROM tax.declarations WHERE taxpayer_id = '{taxpayer}'", policy)
    assert taxpayer not in caught.value.message and taxpayer not in str(caught.value.metadata)


def test_fixture_counts():
    assert len(REFUSED) >= 80 and len(ACCEPTED) >= 30


def test_a_bare_column_two_joined_lookups_list_must_be_qualified(policy):
    both = {**policy.lookups,
            "tax.streets": Lookup("tax.streets", "street_code", ("street_name", "name")),
            "tax.industries": Lookup("tax.industries", "industry_code", ("industry_name", "name"))}
    sql = ("SELECT name, COUNT(*) FROM tax.declarations JOIN tax.streets USING (street_code) "
           "JOIN tax.industries USING (industry_code) GROUP BY name")
    with pytest.raises(GuardError) as caught:
        run_guard(sql, dataclasses.replace(policy, lookups=both))
    assert caught.value.reason == "AMBIGUOUS_COLUMN" and caught.value.metadata["column"] == "name"
    assert "streets.name" in run_guard(sql.replace("name, ", "s.name, ").replace("GROUP BY name", "GROUP BY 1")
                                       .replace("tax.streets", "tax.streets s"),
                                       dataclasses.replace(policy, lookups=both)).sql
