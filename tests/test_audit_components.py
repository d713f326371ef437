"""Which coverages' rows can meet (sandbox.audit.components): apart only where certain, from the WHERE alone.

Each case is two WHEREs over the declarations and whether rows of both can exist; a case marked apart must
be truly apart on any data (checked here on a table holding every combination of the values involved)."""

from __future__ import annotations

import itertools

import duckdb
import pytest

from sandbox.audit.components import Parts, constraints_of

COVERAGE = "SELECT street_code AS __k0 FROM tax.declarations WHERE {}"
JOINED = ("SELECT streets.street_name AS __k0 FROM tax.declarations JOIN tax.streets "
          "ON declarations.street_code = streets.street_code WHERE {}")

CASES = [  # (first WHERE, second WHERE, can meet)
    ("period = CAST('2025-01-01' AS DATE)", "period = CAST('2025-02-01' AS DATE)", False),
    ("period = CAST('2025-01-01' AS DATE)", "period = CAST('2025-01-01' AS DATE)", True),
    ("street_code IN ('1', '2')", "street_code = '3'", False),
    ("street_code IN ('1', '2')", "street_code IN ('2', '3')", True),
    ("period BETWEEN CAST('2025-01-01' AS DATE) AND CAST('2025-06-01' AS DATE)",
     "period = CAST('2025-07-01' AS DATE)", False),
    ("period BETWEEN CAST('2025-01-01' AS DATE) AND CAST('2025-06-01' AS DATE)",
     "period = CAST('2025-06-01' AS DATE)", True),  # BETWEEN holds its upper end
    ("employees >= 100 AND employees < 150", "employees >= 150 AND employees < 200", True),  # kept wide at 150
    ("employees >= 100 AND employees < 150", "employees >= 200", False),
    ("street_code = '1' OR street_code = '2'", "street_code = '3'", True),  # OR is not read
    ("street_code = '1'", "industry_code = '2'", True),  # different columns never part rows
    ("period = '2025-01-01'", "period = CAST('2025-02-01' AS DATE)", True),  # text against a date: not read
    ("district_code = '320102' AND (street_code = '1')", "district_code = '320104'", False),
]


@pytest.mark.parametrize("first, second, meets", CASES)
def test_two_coverages_are_apart_only_where_their_where_clauses_cannot_meet(first, second, meets):
    a, b = constraints_of(COVERAGE.format(first), "duckdb"), constraints_of(COVERAGE.format(second), "duckdb")
    assert a.meets(b) is meets and b.meets(a) is meets


@pytest.mark.parametrize("first, second, meets", [c for c in CASES if not c[2]])
def test_coverages_read_as_apart_share_no_row_of_any_combination_of_their_values(first, second, meets):
    """The ground truth for every 'apart' case: a table of every combination of the literals in play."""
    connection = duckdb.connect()
    connection.execute("CREATE TABLE declarations (period DATE, street_code VARCHAR, industry_code VARCHAR, "
                       "employees INTEGER, district_code VARCHAR)")
    periods = ["2025-01-01", "2025-02-01", "2025-06-01", "2025-07-01"]
    codes = ["1", "2", "3"]
    for period, street, industry, employees, district in itertools.product(
            periods, codes, codes, [99, 100, 149, 150, 199, 200, 500], ["320102", "320104"]):
        connection.execute("INSERT INTO declarations VALUES (?, ?, ?, ?, ?)",
                           [period, street, industry, employees, district])
    both = connection.execute(f"SELECT COUNT(*) FROM declarations WHERE ({first}) AND ({second})").fetchone()[0]
    assert both == 0


def test_a_joined_coverage_names_the_dataset_columns_as_a_plain_one_does():
    plain = constraints_of(COVERAGE.format("period = CAST('2025-01-01' AS DATE)"), "duckdb")
    joined = constraints_of(JOINED.format("declarations.period = CAST('2025-02-01' AS DATE)"), "duckdb")
    assert not plain.meets(joined)


def test_parts_merge_through_a_coverage_that_meets_both():
    january, february = (COVERAGE.format(f"period = CAST('2025-0{m}-01' AS DATE)") for m in (1, 2))
    both = COVERAGE.format("period BETWEEN CAST('2025-01-01' AS DATE) AND CAST('2025-02-01' AS DATE)")
    parts = Parts("duckdb")
    assert parts.with_(january) == [january]
    assert parts.with_(february) == [february]
    assert sorted(parts.with_(both)) == sorted([january, february, both])
    assert sorted(parts.with_(january)) == sorted([january, february, both])


def test_lookups_of_one_name_in_two_schemas_are_two_columns_to_the_parts():
    """Two grants may each join a lookup named ``industries`` from their own schema, which put an industry in
    different sections: section A of one and section B of the other can hold the same rows, so they meet."""
    def by_section(schema: str, section: str) -> str:
        return (f"SELECT 1 FROM tax.declarations LEFT JOIN {schema}.industries ON declarations.industry_code = "
                f"industries.industry_code WHERE industries.section_name = '{section}'")

    assert constraints_of(by_section("tax", "A"), "duckdb").meets(constraints_of(by_section("ref", "B"), "duckdb"))
    assert not constraints_of(by_section("tax", "A"), "duckdb").meets(constraints_of(by_section("tax", "B"), "duckdb"))
