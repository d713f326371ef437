"""Random queries from a grammar of the guard's constructs, allowed and hostile.

The guard either refuses with a reason it declares, or emits SQL that the separate checker in
tests/guard_invariants.py finds sound. No input may crash it. Queries built only from allowed
constructs must be accepted and must run on DuckDB.
"""

from __future__ import annotations

import dataclasses
import re

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsbroker.errors import GUARD_REASONS, GuardError
from dsbroker.guard import OUTER_RULES, RULES, guard
from tests.conftest import XUANWU, policy_without_dominance
from tests.guard_invariants import violations

# Every reason the guard's refusals can give, as dsbroker/errors.py declares them (tests/test_error_registry.py
# checks that they are the ones its rules raise): a refusal with any other reason (or any other exception) fails.
DECLARED_REASONS = GUARD_REASONS
RULE_NAMES = {"parse"} | {rule.__name__ for rule in RULES + OUTER_RULES}
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- the grammar: allowed pieces -------------------------------------------------------------------

GROUP_COLUMNS = ["street_code", "industry_code", "industry_section", "size_class", "period"]
DATE_KEYS = ["year(period)", "quarter(period)", "month(period)", "date_trunc('year', period)",
             "date_trunc('quarter', period)", "date_trunc('month', period)"]
# Keys checked rather than rewritten: buckets of one group column, and strftime of a year or a month.
BUCKET_KEYS = ["CASE WHEN size_class IN ('large', 'medium') THEN 'big' ELSE 'small' END",
               "CASE industry_section WHEN 'C' THEN 1 WHEN 'F' THEN 2 END",
               "CASE WHEN period < DATE '2025-01-01' THEN 'before' ELSE 'after' END",
               "strftime(period, '%Y-%m')", "strftime(period, '%Y')"]
LOOKUP_KEYS = {"s": ["s.street_name"], "i": ["i.industry_name", "i.section_name"]}
JOINS = {"s": ["JOIN tax.streets s USING (street_code)", "LEFT JOIN tax.streets AS s ON s.street_code = d.street_code"],
         "i": ["JOIN tax.industries i ON d.industry_code = i.industry_code",
               "LEFT OUTER JOIN tax.industries i USING (industry_code)"]}
MEASURES = ["revenue", "vat_paid", "cit_paid", "iit_withheld", "employees", "d.revenue"]
FILTERS = ["street_code = '320102001'", "industry_code IN ('39', '64', '65')", "size_class IN ('micro', 'small')",
           "registration_type = '173'", "period BETWEEN DATE '2024-01-01' AND DATE '2024-12-31'",
           "year(period) = 2025", "period >= DATE '2025-01-01' AND period < DATE '2025-07-01'",
           "industry_section = 'C'", "'C' = industry_section", "quarter(period) IN (1, 2)"]
LOOKUP_FILTERS = {"s": ["s.street_name IN ('玄武门街道', '梅园新村街道')"], "i": ["i.section_name = '制造业'"]}

scaled_measures = st.one_of(
    st.sampled_from(MEASURES),
    st.builds(lambda a, op, n: f"{a} {op} {n}", st.sampled_from(MEASURES), st.sampled_from("*/"),
              st.integers(1, 10_000)),
    st.builds(lambda n, a: f"{n} * {a}", st.sampled_from(["2", "0.5", "-3", "1e-2"]), st.sampled_from(MEASURES)),
)
measure_terms = st.one_of(  # linear forms of measures
    scaled_measures,
    st.builds(lambda a, op, b: f"{a} {op} {b}", scaled_measures, st.sampled_from("+-"), scaled_measures),
    st.builds(lambda a, b, c: f"({a} - {b}) * 3 + {c}", st.sampled_from(MEASURES), scaled_measures, scaled_measures),
)
aggregates = st.one_of(
    st.just("COUNT(*)"), st.just("COUNT(DISTINCT taxpayer_id)"), st.just("COUNT(vat_paid)"),
    st.builds(lambda f, m: f"{f}({m})", st.sampled_from(["SUM", "sum"]), measure_terms),
    st.builds(lambda f, m: f"{f}({m})", st.sampled_from(["AVG", "avg"]), scaled_measures),
    st.sampled_from(["MAX(employees)", "MIN(employees)", "max(revenue)", "MAX(employees / 10)"]),
    st.builds(lambda m, n: f"SUM({m}) / {n}", measure_terms, st.integers(1, 1_000_000)),
    st.builds(lambda a, b: f"SUM({a}) * 1.0 / COUNT(*) + AVG({b})", measure_terms, scaled_measures),
    st.builds(lambda a, b: f"SUM({a}) / SUM({b})", measure_terms, measure_terms),
)


@st.composite
def allowed_queries(draw) -> str:
    """A query made only of constructs the grant allows."""
    joined = draw(st.lists(st.sampled_from(sorted(JOINS)), unique=True, max_size=2))
    key_pool = GROUP_COLUMNS + DATE_KEYS + BUCKET_KEYS + [k for j in joined for k in LOOKUP_KEYS[j]]
    keys = draw(st.lists(st.sampled_from(key_pool), unique=True, max_size=3))
    measures = draw(st.lists(aggregates, min_size=0 if keys else 1, max_size=3))
    outputs = [f"{k} AS k{n}" if draw(st.booleans()) else k for n, k in enumerate(keys)]
    outputs += [f"{a} AS a{n}" for n, a in enumerate(measures)]
    order = draw(st.permutations(outputs))
    sql = f"SELECT {', '.join(order)} FROM tax.declarations d"
    sql += "".join(" " + draw(st.sampled_from(JOINS[j])) for j in joined)
    filters = draw(st.lists(st.sampled_from(FILTERS + [f for j in joined for f in LOOKUP_FILTERS[j]]),
                            unique=True, max_size=3))
    if filters:
        sql += " WHERE " + " AND ".join(filters)
    if keys:
        style = draw(st.sampled_from(["names", "positions", "all"]))
        if style == "names":
            sql += " GROUP BY " + ", ".join(keys)
        elif style == "positions":
            sql += " GROUP BY " + ", ".join(str(order.index(o) + 1) for o in outputs[:len(keys)])
        else:
            sql += " GROUP BY ALL"
    if measures and draw(st.booleans()):
        sql += f" HAVING a0 > {draw(st.integers(-10, 10**9))}"
    if draw(st.booleans()):
        sql += f" ORDER BY {draw(st.integers(1, len(order)))} {draw(st.sampled_from(['', 'ASC', 'DESC']))}"
    if draw(st.booleans()):
        sql += f" LIMIT {draw(st.integers(0, 20_000))}"
    return sql


# -- the grammar: hostile pieces -------------------------------------------------------------------

HOSTILE_OUTPUTS = [
    "taxpayer_id", "vat_paid", "district_code", "*", "d.*", "string_agg(taxpayer_id, ',')", "list(vat_paid)",
    "array_agg(revenue)", "median(vat_paid)", "any_value(revenue)", "first(vat_paid)", "arg_max(taxpayer_id, vat_paid)",
    "SUM(CASE WHEN street_code = '320102001' THEN vat_paid END)", "SUM(vat_paid) FILTER (WHERE size_class = 'large')",
    "SUM(vat_paid) OVER ()", "(SELECT 1)", "current_setting('threads')", "COUNT(DISTINCT street_code)",
    "SUM(street_code)", "MAX(vat_paid)", "MIN(taxpayer_id)", "SUM(vat_paid + employees * 0 + length(taxpayer_id))",
    "SUM(DISTINCT vat_paid)", "COUNT(taxpayer_id)", "read_text('/etc/passwd')", "?", "$1", "SUM(SUM(vat_paid))",
    "COUNT(*) + taxpayer_id", "stddev(vat_paid)", "SUM(IF(vat_paid > 1, 1, 0))", "s.district_code", "nosuch",
    "SUM(vat_paid) AS street_code", "COUNT_IF(vat_paid > 100)", "duckdb_settings()", "SUM(revenue::VARCHAR)",
    "r.type_name", "SUM(vat_paid * (SELECT 1))", "getvariable('x')", "'a' || street_code", "EXISTS (SELECT 1)",
    "SUM(vat_paid * revenue)", "SUM(vat_paid / revenue)", "SUM(1 / (employees - 7))", "AVG(vat_paid + revenue)",
    "SUM(vat_paid * vat_paid * vat_paid)", "SUM(vat_paid > 100)", "SUM(vat_paid + 1)", "MAX(-employees)",
    "COUNT(vat_paid + revenue)", "SUM(vat_paid * 1e30 * 1e30)", "SUM(vat_paid / 0)", "COUNT()",
]
HOSTILE_FILTERS = [
    "street_code = '320102001' OR 1 = 1", "NOT street_code = '1'", "vat_paid > 100", "taxpayer_id = '9132'",
    "street_code IN (SELECT street_code FROM tax.streets)", "district_code = '320106'", "street_code <> 'a'",
    "street_code LIKE '3201%'", "period > DATE '2024-01-01'", "street_code = industry_code", "revenue BETWEEN 1 AND 2",
    "employees = 7", "street_code = ?", "TRUE", "1 = 1", "street_code IS NULL", "street_code = lower('X')",
    "(street_code = '1' OR street_code = '2') AND size_class = 'large'", "taxpayer_id IN ('a', 'b')",
    "r.type_name = '国有企业'", "period BETWEEN DATE '2024-01-01' AND period", "s.district_code = '320106'",
]
HOSTILE_SOURCES = [
    "tax.taxpayers", "read_csv('/etc/passwd')", "(SELECT * FROM tax.declarations) t", "tax.declarations, tax.taxpayers",
    "tax.declarations d JOIN tax.taxpayers t ON d.taxpayer_id = t.taxpayer_id", "main.declarations", "range(10)",
    "tax.declarations d RIGHT JOIN tax.streets s USING (street_code)", "tax.declarations d CROSS JOIN tax.streets s",
    "tax.declarations d JOIN tax.streets s ON d.district_code = s.district_code", "tax.declarations TABLESAMPLE 10%",
    "tax.declarations d JOIN tax.declarations e USING (taxpayer_id)", "tax.declarations d NATURAL JOIN tax.streets",
    "tax.declarations d JOIN tax.streets s ON d.street_code = s.street_code OR TRUE", "duckdb_tables()",
    "tax.declarations d POSITIONAL JOIN tax.streets s", "'/etc/passwd'", "tax.declarations AT (VERSION => 1)",
]
HOSTILE_GROUPS = ["taxpayer_id", "vat_paid", "district_code", "street_code || 'x'", "ROLLUP (street_code)",
                  "CUBE (street_code, size_class)", "GROUPING SETS ((street_code), ())", "1 + 1", "99", "r.type_name",
                  "date_trunc('day', period)", "employees / 10", "s.district_code",
                  "CASE WHEN vat_paid > 0 THEN 1 END", "CASE WHEN street_code = '1' THEN taxpayer_id END",
                  "CASE WHEN registration_type = '173' THEN 1 ELSE 0 END", "strftime(period, '%d')",
                  "CASE WHEN street_code = '1' AND size_class = 'large' THEN 'x' END"]
HOSTILE_SUFFIXES = ["; DROP TABLE tax.declarations", " UNION SELECT 1", " -- trailing comment", " OFFSET 1",
                    " LIMIT -1", " LIMIT 'a'", " LIMIT 1e9", " LIMIT ALL", " QUALIFY 1 = 1", "; SELECT 1",
                    " WINDOW w AS ()", "; PRAGMA database_list", " /* unterminated", " LIMIT (SELECT 1)", " FOR UPDATE"]
TOKENS = ["SELECT", "FROM", "WHERE", "GROUP", "BY", "HAVING", "ORDER", "LIMIT", "JOIN", "ON", "USING", "AND", "OR",
          "NOT", "(", ")", ",", "*", "=", "'x'", "1", "COUNT", "SUM", "DISTINCT", "tax.declarations", "taxpayer_id",
          "street_code", "vat_paid", "AS", "UNION", "WITH", "CASE", "WHEN", "THEN", "END", ";", "--", "/*", "*/", "::",
          "OVER", "PRAGMA", "ATTACH", "COPY", "SET", "CREATE", "TEMP", "INSERT", "'", '"', "\\", "$1", "?"]


@st.composite
def mixed_queries(draw) -> str:
    """An allowed query with some of its pieces swapped for hostile ones."""
    sql = draw(allowed_queries())
    if draw(st.booleans()):
        sql = sql.replace("SELECT ", f"SELECT {draw(st.sampled_from(HOSTILE_OUTPUTS))}, ", 1)
    if draw(st.booleans()):
        hostile = draw(st.sampled_from(HOSTILE_FILTERS))
        sql = sql.replace(" WHERE ", f" WHERE {hostile} AND ", 1) if " WHERE " in sql else \
            re.sub(r"( GROUP BY | HAVING | ORDER BY | LIMIT |$)", f" WHERE {hostile}\\1", sql, count=1)
    if draw(st.integers(0, 3)) == 0:
        sql = re.sub(r"FROM tax\.declarations d"
                     r"( (LEFT )?(OUTER )?JOIN [^)]*\)| (LEFT )?(OUTER )?JOIN \S+ \S+ ON \S+ = \S+)*",
                     f"FROM {draw(st.sampled_from(HOSTILE_SOURCES))}", sql, count=1)
    if draw(st.integers(0, 3)) == 0:
        hostile = draw(st.sampled_from(HOSTILE_GROUPS))
        sql = sql.replace(" GROUP BY ", f" GROUP BY {hostile}, ", 1) if " GROUP BY " in sql else \
            re.sub(r"( HAVING | ORDER BY | LIMIT |$)", f" GROUP BY {hostile}\\1", sql, count=1)
    if draw(st.integers(0, 3)) == 0:
        sql += draw(st.sampled_from(HOSTILE_SUFFIXES))
    return sql


token_soup = st.lists(st.sampled_from(TOKENS), max_size=30).map(" ".join)


# -- the properties --------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["mark", "drop", "mark, no dominance rule", "drop, no dominance rule"])
def grant(policy, request):
    # The shipped grant (its dominance rule on), and a test-only variant with the rule off, under which totals
    # (ROLLUP), which the rule refuses, are emitted and checked too.
    suppression, _, waived = request.param.partition(", ")
    base = policy_without_dominance("the property tests check totals (ROLLUP) too, which the dominance rule "
                                    "refuses") if waived else policy
    return dataclasses.replace(base, min_max={"employees": ("MIN", "MAX"), "revenue": ("MAX",)},
                               suppression=suppression)


@pytest.fixture(scope="module")
def small_db(tmp_path_factory):
    from sandbox.demo.data import make_demo_data

    path = tmp_path_factory.mktemp("props") / "small.duckdb"
    make_demo_data(path, taxpayers=300, months=3)
    connection = duckdb.connect(str(path), read_only=True)
    yield connection
    connection.close()


def outcome(sql: str, grant) -> str | None:
    """The emitted SQL, or None when refused; fails on an undeclared refusal, a crash, or a broken invariant."""
    try:
        guarded = guard(sql, grant, district=XUANWU, department="xuanwu-fgw")
    except GuardError as error:
        assert error.reason in DECLARED_REASONS, f"undeclared reason {error.reason} for {sql!r}"
        assert error.metadata.get("rule") in RULE_NAMES, f"refusal without its rule for {sql!r}"
        assert len(sql) < 20 or sql not in error.message, "a refusal must not echo the query back"
        return None
    # A two-level answer runs each protected aggregate as a query of its own: each must keep the invariants
    # (the outer query reads only their released cells, in the sandbox's in-memory engine).
    for part in guarded.parts or (guarded,):
        # A query that lists groups (DISTINCT, or a GROUP BY that outputs no aggregate) drops small groups
        # whatever the grant says: judged then as under drop, never the other way round.
        judged = grant if part.suppression != "drop" else dataclasses.replace(grant, suppression="drop")
        found = violations(part.sql, judged, district=XUANWU, department="xuanwu-fgw")
        assert not found, f"{sql!r}\n  became {part.sql!r}\n  which breaks: {found}"
    return guarded.parts[0].sql if guarded.parts else guarded.sql


@SETTINGS
@given(sql=allowed_queries())
def test_queries_of_allowed_constructs_are_accepted_sound_and_run(grant, small_db, sql):
    emitted = outcome(sql, grant)
    assert emitted is not None, f"an allowed query was refused: {sql!r}"
    small_db.execute(emitted).fetchall()


@SETTINGS
@given(sql=mixed_queries())
def test_hostile_pieces_are_refused_with_a_declared_reason_or_the_output_is_sound(grant, sql):
    outcome(sql, grant)


@SETTINGS
@given(sql=st.one_of(token_soup, st.text(max_size=200)))
def test_no_input_crashes_the_guard(grant, sql):
    outcome(sql, grant)


def test_the_checker_catches_what_the_guard_must_never_emit(grant):
    good = guard("SELECT street_code, SUM(vat_paid) AS v FROM tax.declarations GROUP BY 1", grant,
                 district=XUANWU, department="xuanwu-fgw").sql
    assert violations(good, grant, district=XUANWU, department="xuanwu-fgw") == []
    threshold = " HAVING COUNT(__e) >= 10"
    by_mode = {"threshold dropped": good.replace(threshold, ""), "lower threshold": good.replace(">= 10", ">= 9")} \
        if grant.suppression == "drop" else \
        {"a HAVING where cells are marked": good.replace(" ORDER BY", threshold + " ORDER BY")}
    inner_sum = "SUM(vat_paid) AS __sum_vat_paid"
    broken = {
        **by_mode,
        "the threshold's count": good.replace("COUNT(__e) AS __s0", "COUNT(*) AS __s0"),
        "arithmetic in a statistic": good.replace("SUM(__sum_vat_paid) AS __s1", "SUM(__sum_vat_paid * 2) AS __s1"),
        "arithmetic on a statistic": good.replace("SUM(__sum_vat_paid) AS __s1", "SUM(__sum_vat_paid) * 2 AS __s1"),
        "a condition turned into a number": good.replace(inner_sum, "SUM(vat_paid > 5) AS __sum_vat_paid"),
        "a condition inside a per-entity sum": good.replace(inner_sum, "SUM(CASE WHEN street_code = '1' THEN vat_paid "
                                                                      "END) AS __sum_vat_paid"),
        "a literal output": good.replace("AS __s1, ", "AS __s1, 1 AS __s9, "),
        "ordered by a value": good.replace("ORDER BY __k0 ASC", "ORDER BY __s1"),
        "a key missing": good.replace("__g0 AS __k0, ", ""),
        "row filter": good.replace(f"district_code = '{XUANWU}'", "TRUE"),
        "other district": good.replace(XUANWU, "320106"),
        "limit": good.replace(" LIMIT 5001", ""),
        "raw measure": good.replace(inner_sum, "vat_paid AS __sum_vat_paid"),
        "entity": good.replace("street_code AS __g0", "taxpayer_id AS __g0", 1),
        "hidden column": good.replace(inner_sum, "COUNT(*) + length(district_code) AS __sum_vat_paid"),
        "string aggregate": good.replace(inner_sum, "string_agg(street_code, ',') AS __sum_vat_paid"),
        "subquery": good.replace("FROM tax.declarations", "FROM (SELECT * FROM tax.declarations) AS t"),
        "comment": good + " /* x */",
    }
    for what, sql in broken.items():
        assert sql != good and violations(sql, grant, district=XUANWU, department="xuanwu-fgw"), what
