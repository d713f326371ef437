"""Fourteenth round of attacks, on two fresh changes: the auditor's rules per released cell (a cell a laxer grant
received is no "known before" to a stricter one: ``Rules.within``) and products-only grants (``queries: products``).

Each test pins what an attack must not achieve; it fails while the attack works. The order on rules is checked
against an oracle of its own (the cell rules written out here, in exact fractions, sharing no code with the
sandbox); the end-to-end tests run a real broker and sandbox (tests/test_attack_auditor.py's Stack) or send plans
to a real sandbox as a hostile broker would (tests/test_hostile_broker.py's helpers).
"""

from __future__ import annotations

import gc
import random
import shutil
import tracemalloc
from fractions import Fraction
from pathlib import Path

import duckdb
import grpc
import pytest

from broker.server import start_broker
from dsbroker.errors import DsbrokerError
from dsbroker.policy.model import Dominance, parse_policy
from dsbroker.policy.product_binding import bind_product
from dsbroker.v1 import results_pb2
from sandbox.audit.auditor import Rules
from sandbox.ledgers.released_cells import ReleasedCell, ReleasedCellLedger
from tests.conftest import ENCRYPTED, GRANT, SHIPPED_DOMINANCE, XUANWU, dominance_off, sign
from tests.test_hostile_broker import deployment, execute, own, plan_for, refusal  # noqa: F401 (fixtures)
from tests.test_products import PRODUCTS_ONLY, SHIPPED, STREETS, STREETS_BY_HAND, product_plan, products_only  # noqa: F401
from tests.test_attack_auditor import STREET, Stack, _one
from tests.test_released_cell_auditor import MONTHS, STREET_A, _truth, data  # noqa: F401

SHIPPED_RULES = Rules(10, Dominance(n=2, k=85.0))


# --- 1. The order on rules: "at least as strict" must mean "withholds every cell the other withholds" ----------

def _withholds(rules: Rules, magnitudes: list[int]) -> bool:
    """The cell rules on one SUM cell, from its contributors' magnitudes: fewer than k contributors, the n largest
    over k% of the total, or the total less the two largest under p% of the largest (README: the cell rules)."""
    if 0 < len(magnitudes) < rules.k:
        return True
    rule, total = rules.dominance, sum(magnitudes)
    if rule is None or total == 0:
        return False
    largest = sorted(magnitudes, reverse=True)
    if rule.n is not None and rule.k is not None and 100 * sum(largest[:rule.n]) > Fraction(rule.k) * total:
        return True
    return rule.p is not None and 100 * (total - sum(largest[:2])) < Fraction(rule.p) * largest[0]


def _rules(chance: random.Random) -> Rules:
    k = chance.choice([2, 3, 5, 7, 10, 12, 15])
    if chance.random() < 0.2:
        return Rules(k, None)
    n, share = chance.choice([None, 1, 2, 3, 5, 12, 40]), chance.choice([50.0, 60.5, 85.0, 85.5, 90.0, 99.9])
    p = chance.choice([None, None, 1.0, 10.0, 10.5, 25.0, 99.0])
    if n is None and p is None:
        n = 2
    return Rules(k, Dominance(n=n, k=share if n is not None else None, p=p))


def _cell(chance: random.Random) -> list[int]:
    size = chance.randint(1, 45)
    shape = chance.choice(["even", "one giant", "two giants", "steps", "zeros"])
    if shape == "even":
        return [chance.randint(900, 1100) for _ in range(size)]
    if shape == "one giant":
        return [chance.randint(1, 10) ** 6] + [chance.randint(1, 3000) for _ in range(size - 1)]
    if shape == "two giants":
        return [chance.randint(10**5, 10**6) for _ in range(2)] + [chance.randint(1, 9000) for _ in range(size - 2)]
    if shape == "steps":
        return [2 ** chance.randint(0, 20) for _ in range(size)]
    return [0] * (size - 1) + [chance.randint(0, 5)]


def test_rules_known_before_to_a_grant_withhold_every_cell_its_own_rules_withhold():
    """``Rules.within`` says a cell released under the recorded rules is "known before" to a grant under the asking
    rules: every cell the asking rules withhold must then be withheld by the recorded ones, or the laxer grant's cell
    is free to the stricter. Checked on cells of 1 to 45 contributors (n larger than a cell's taxpayers, shares as
    floats, p% beside (n, k)) against the rules written out here."""
    chance = random.Random(14)
    pairs = judged = 0
    for _ in range(3000):
        recorded, asking = _rules(chance), _rules(chance)
        if not asking.within(frozenset({recorded.text()})):
            continue
        pairs += 1
        for _ in range(40):
            cell = _cell(chance)
            if _withholds(asking, cell):
                judged += 1
                assert _withholds(recorded, cell), (
                    f"a cell released under {recorded} is known before to a grant under {asking}, which withholds "
                    f"the cell {sorted(cell, reverse=True)[:4]}... of {len(cell)} contributors that {recorded} "
                    f"releases")
    assert pairs > 100 and judged > 1000  # the search reached both sides of the order


P10_RULES = Rules(10, Dominance(n=2, k=85.0, p=10.0))


@pytest.mark.parametrize(("recorded", "asking"), [
    ('{"min_entities": 10, "dominance": {"n": 2, "k": NaN}}', SHIPPED_RULES),
    ('{"min_entities": 10, "dominance": {"n": NaN, "k": 85}}', SHIPPED_RULES),
    ('{"min_entities": 10, "dominance": {"n": 2, "k": 85, "p": NaN}}', P10_RULES),
    ('{"min_entities": 1e3, "dominance": {"n": 2, "k": 85}}', SHIPPED_RULES),
    ('{"min_entities": true, "dominance": {"n": 2, "k": 85}}', SHIPPED_RULES),
    ('{"min_entities": 10, "dominance": {"n": 2}}', SHIPPED_RULES),
    ('{"min_entities": 10, "dominance": {"k": 85}}', SHIPPED_RULES),
    ('{"min_entities": 10, "dominance": {"n": null, "k": null, "p": 99}}', SHIPPED_RULES),
    ('{"min_entities": 10, "dominance": {"n": 2, "k": 85, "p": "99"}}', P10_RULES),
    ('{"dominance": {"n": 2, "k": 85}}', SHIPPED_RULES),
])
def test_rules_the_sandbox_never_writes_are_no_known_before(recorded, asking):
    """What a writer of the ledger file puts there that the sandbox never writes (non-finite numbers, a float or a
    bool threshold, a half-written rule, a number as text) is taken as laxer than the grant asking, never stricter."""
    assert not asking.within(frozenset({recorded}))


# --- 2. Rules that do not compare: a laxer share over more contributors ------------------------------------------

INDUSTRY_52 = f"{STREET} AND industry_code = '52'"
WITHOUT_52 = f"{STREET} AND industry_code IN ('51', '65', '72', '99')"
MORE_AT_A_HIGHER_SHARE = "dominance: {n: 3, k: 90}"
SECOND = "xuanwu-tjj-2026-001"


def _shares(owner: Path, where: str) -> tuple[Fraction, Fraction]:
    """The two and the three largest taxpayers' shares of the revenue of the rows ``where``."""
    with duckdb.connect(str(owner), read_only=True) as connection:
        totals = [row[0] for row in connection.execute(
            f"SELECT SUM(revenue) AS r FROM tax.declarations WHERE {where} GROUP BY taxpayer_id ORDER BY r DESC"
        ).fetchall()]
    whole = sum(totals)
    return Fraction(sum(totals[:2]), whole), Fraction(sum(totals[:3]), whole)


@pytest.fixture()
def two_giants(data, tmp_path) -> Path:  # noqa: F811
    """The suite's data with two firms of street A's industry 52 making 87% of it: dominated under the shipped
    (n = 2, k = 85), not under (n = 3, k = 90), where the three largest make 88%."""
    owner = tmp_path / "two-giants.duckdb"
    shutil.copy(data, owner)
    giants = [f"91{STREET_A}52{n:04d}" for n in range(2)]
    with duckdb.connect(str(owner)) as connection:
        rest = connection.execute(f"SELECT SUM(revenue) FROM tax.declarations WHERE {INDUSTRY_52} "
                                  "AND taxpayer_id NOT IN (?, ?)", giants).fetchone()[0]
        monthly = int(Fraction(87, 13) * rest / (2 * len(MONTHS)))  # 2 x 24 months x monthly = 87% of the whole
        connection.execute("UPDATE tax.declarations SET revenue = ? WHERE taxpayer_id IN (?, ?)", [monthly, *giants])
    two, three = _shares(owner, INDUSTRY_52)
    assert two > Fraction(85, 100) and three < Fraction(90, 100)
    assert all(share < Fraction(85, 100) for share in _shares(owner, STREET) + _shares(owner, WITHOUT_52))
    return owner


@pytest.mark.parametrize("spelling", ["the same cells", "cells spelt anew"])
def test_a_grant_does_not_receive_what_a_grant_under_rules_not_comparable_with_its_own_was_given(
        two_giants, tmp_path, spelling):
    """xuanwu-tjj's rule looks at more contributors (3) at a higher share (90%): neither rule withholds all the other
    does. Street A's industry 52, two giants at 87%, passes it, so xuanwu-tjj may learn it as street A less street A
    without 52; the shipped grant (two at 85%) may not. Its cells are no "known before" to the shipped grant, which
    asking the same two cells, or the same spelt anew, does not get the difference."""
    deployment = Stack(two_giants, tmp_path, tmp_path / "released.sqlite",
                       second=[(SHIPPED_DOMINANCE, MORE_AT_A_HIGHER_SHARE)])
    truth = _truth(two_giants, INDUSTRY_52)
    try:
        other = deployment.client("xuanwu-tjj")
        whole = _one(other, f"SELECT SUM(revenue) FROM tax.declarations WHERE {STREET}", SECOND)
        rest = _one(other, f"SELECT SUM(revenue) FROM tax.declarations WHERE {WITHOUT_52}", SECOND)
        assert whole - rest == truth  # xuanwu-tjj's own right
        shipped = deployment.client()
        assert _one(shipped, f"SELECT SUM(revenue) FROM tax.declarations WHERE {INDUSTRY_52}") is None
        spelt = (STREET, WITHOUT_52) if spelling == "the same cells" else (
            f"{STREET} AND industry_code IN ('51', '52', '65', '72', '99')",
            f"{STREET} AND industry_code IN ('51', '65', '72', '99', '00')")
        total = _one(shipped, f"SELECT SUM(revenue) FROM tax.declarations WHERE {spelt[0]}")
        without = _one(shipped, f"SELECT SUM(revenue) FROM tax.declarations WHERE {spelt[1]}")
    finally:
        deployment.stop()
    assert total is None or without is None or total - without != truth, \
        f"the shipped grant learns a block its dominance rule withholds: {total} - {without} = {truth}"


# --- 3. Two sandboxes over one ledger file: what one releases, the other's kept copy learns --------------------

@pytest.mark.parametrize("first", ["warm", "the remainder"])
def test_a_sandbox_sharing_the_ledger_sees_what_the_other_released_under_laxer_rules(two_giants, tmp_path, first):
    """Replicas over one ledger file: sandbox 2 keeps the ledger in memory (read once, then kept while no other
    connection writes the file), and merges the rules of what it records into that copy. xuanwu-tjj, under rules
    that do not compare with the shipped grant's, gets street A on sandbox 1 (and, in the second case, street A
    without 52, which the shipped grant got on sandbox 2 first). The shipped grant on sandbox 2 then asking street A
    without 52, or street A, must not get both: their difference is the block its rule withholds."""
    ledger = tmp_path / "released.sqlite"
    one = Stack(two_giants, tmp_path, ledger, second=[(SHIPPED_DOMINANCE, MORE_AT_A_HIGHER_SHARE)], name="one")
    two = Stack(two_giants, tmp_path, ledger, second=[(SHIPPED_DOMINANCE, MORE_AT_A_HIGHER_SHARE)], name="two")
    truth = _truth(two_giants, INDUSTRY_52)
    street, remainder = (f"SELECT SUM(revenue) FROM tax.declarations WHERE {where}" for where in (STREET, WITHOUT_52))
    try:
        shipped = two.client()
        if first == "warm":  # sandbox 2 reads the ledger, and keeps it
            assert _one(shipped, "SELECT SUM(revenue) FROM tax.declarations WHERE street_code = '320102002'")
            received = {}
        else:
            received = {"remainder": _one(shipped, remainder)}
            assert received["remainder"] is not None
        other = one.client("xuanwu-tjj")
        assert _one(other, street, SECOND) is not None
        if first != "warm":
            assert _one(other, street, SECOND) - _one(other, remainder, SECOND) == truth  # its own right
        for name, sql in (("remainder", remainder), ("street", street)):
            received.setdefault(name, _one(shipped, sql))
    finally:
        two.stop()
        one.stop()
    # Street A is out (to xuanwu-tjj, which may pass it on): the remainder is then no answer for the shipped grant;
    # and where it had the remainder first, street A is not.
    late = "remainder" if first == "warm" else "street"
    assert received[late] is None, \
        f"the shipped grant learns the block its rule withholds with what sandbox 1 released: {received}"
    assert truth == _truth(two_giants, STREET) - _truth(two_giants, WITHOUT_52)


# --- 4. Products-only grants: SQL of the caller's own in every shape, and a broker that sends it ---------------

TWO_LEVELS = ("SELECT street_code, SUM(vat_paid) / SUM(SUM(vat_paid)) OVER () AS share FROM tax.declarations "
              "GROUP BY street_code")
ENCRYPTED_PRODUCTS_ONLY = PRODUCTS_ONLY.replace("results: [aggregate]", "results: [aggregate, encrypted]").replace(
    SHIPPED_DOMINANCE, dominance_off(ENCRYPTED))


def _refused(ask, *arguments) -> DsbrokerError:
    with pytest.raises(DsbrokerError) as caught:
        ask(*arguments)
    return caught.value


@pytest.mark.parametrize("sql", [TWO_LEVELS, STREETS_BY_HAND + " ORDER BY 1", "   ", "SELECT 1"],
                         ids=["two levels", "the product's text reordered", "blank", "no table"])
def test_a_products_only_grant_refuses_sql_of_the_callers_own_in_any_shape(products_only, sql):
    """Whatever the SQL (two levels, a product's text rewritten, nothing at all), a run or an explain of SQL under a
    products-only grant is AD_HOC_QUERY_NOT_GRANTED naming the grant: not a guard refusal that would tell which
    rule the SQL broke, nor any answer."""
    for ask in (products_only.query, products_only.explain):
        error = _refused(ask, GRANT, sql)
        assert (error.code, error.reason, error.metadata) == (
            grpc.StatusCode.PERMISSION_DENIED, "AD_HOC_QUERY_NOT_GRANTED", {"grant": GRANT})


def test_a_product_call_without_a_name_runs_nothing_under_a_products_only_grant(products_only, sandbox):
    """A ProductCall present but empty is a call of no product: refused at the broker, and a broker that sends one
    with the product's text as the plan's original SQL is refused by the sandbox (the empty name is no product of
    the signed policy)."""
    for ask in (products_only.run_product, products_only.explain_product):
        error = _refused(ask, GRANT, "", {})
        assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PRODUCT_NOT_GRANTED")
    error = refusal(sandbox, product_plan(sign(PRODUCTS_ONLY), STREETS_BY_HAND, "", {}))
    assert error.reason == "PRODUCT_NOT_GRANTED"


def test_a_broker_sending_an_encrypted_plan_of_its_own_sql_under_a_products_only_grant_is_refused(sandbox):
    """In encrypted mode the check comes before the key is read: a plan of SQL of the caller's own (the grant's
    columns would allow it) under a products-only grant is refused for that, whatever key it carries."""
    plan = plan_for(sign(ENCRYPTED_PRODUCTS_ONLY), STREETS_BY_HAND,
                    encryption=results_pb2.Encryption(public_context=b"not a context", key_signature=b"none"))
    error = refusal(sandbox, plan)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "AD_HOC_QUERY_NOT_GRANTED")


def test_a_two_level_plan_under_a_products_only_grant_is_refused_by_the_sandbox(sandbox):
    error = refusal(sandbox, plan_for(sign(PRODUCTS_ONLY), TWO_LEVELS))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "AD_HOC_QUERY_NOT_GRANTED")


def test_a_plan_under_the_version_before_the_grant_became_products_only_is_refused(own):
    """The owner raises the grant to version 2 with ``queries: products``. Once the sandbox has seen version 2 (a plan
    carries it), a broker that keeps sending version 1, under which the SQL was allowed, is refused."""
    running = own.start()
    before, after = sign(SHIPPED), sign(PRODUCTS_ONLY.replace("version: 1", "version: 2", 1))
    assert execute(running, plan_for(before, STREETS_BY_HAND)).table.row_count == 6  # version 1 answers SQL
    sql = bind_product(parse_policy(after).products["street-revenue-monthly"], STREETS)
    assert execute(running, product_plan(after, sql, "street-revenue-monthly", STREETS)).table.row_count == 6
    error = refusal(running, plan_for(before, STREETS_BY_HAND))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "POLICY_SUPERSEDED")


# --- 5. The grant re-signed as products-only under the same version ---------------------------------------------

def test_a_grant_re_signed_products_only_under_its_version_does_not_keep_answering_sql(deployment):
    """The owner adds ``queries: products`` to the grant's file and signs it again, keeping ``version: 1``, and
    restarts the broker. The file says the grant answers its products only; the broker still answers SQL of the
    caller's own under it."""
    with deployment.client() as client:
        assert client.query(GRANT, STREETS_BY_HAND).rows  # the grant as first signed answers SQL
    (deployment.policies / f"{GRANT}.yaml").write_text(sign(PRODUCTS_ONLY), encoding="utf-8")
    deployment.broker.stop()
    deployment.broker = start_broker(deployment.settings)
    with deployment.client() as client:
        error = _refused(client.query, GRANT, STREETS_BY_HAND)
    assert error.reason in ("AD_HOC_QUERY_NOT_GRANTED", "POLICY_VERSION_REUSED")


def test_a_broker_holding_the_earlier_body_of_a_version_cannot_run_sql_once_the_sandbox_saw_it_products_only(own):
    running = own.start()
    products_only_body = sign(PRODUCTS_ONLY)
    sql = bind_product(parse_policy(products_only_body).products["street-revenue-monthly"], STREETS)
    assert execute(running, product_plan(products_only_body, sql, "street-revenue-monthly", STREETS)).table.row_count
    error = refusal(running, plan_for(sign(SHIPPED), STREETS_BY_HAND))
    assert error.code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION)


# --- 6. The command line's query under a products-only grant -----------------------------------------------------

@pytest.mark.parametrize(("language", "said"), [
    ("en_US.UTF-8", f"grant '{GRANT}' answers only its products"),
    ("zh_CN.UTF-8", f"授权 {GRANT} 只提供其数据产品"),
])
@pytest.mark.parametrize("explain", [False, True], ids=["run", "explain"])
def test_the_command_lines_query_under_a_products_only_grant_says_to_run_its_products(
        products_only, language, said, explain):
    """``dsbroker query`` (and ``--explain``) under a products-only grant ends in error, saying so in the language in
    force and naming the reason, with nothing of the SQL's fate (no guard rule, no cells)."""
    from tests.test_cli_chinese import NO_LOCALE
    from tests.test_cli_workflow import as_actor, run
    requester = {**as_actor(products_only.target, "xuanwu-fgw", XUANWU, "requester"), **NO_LOCALE, "LANG": language}
    shown = run(requester, "query", "--grant", GRANT, "--sql", STREETS_BY_HAND, *(["--explain"] if explain else []))
    assert shown.exit_code != 0
    assert said in shown.output and "AD_HOC_QUERY_NOT_GRANTED" in shown.output
    assert "320102001" not in shown.output.replace(STREETS_BY_HAND, "")


# --- 7. Distinct counts: the class audit without the laxer grant's counts ----------------------------------------

MICRO = [f"91{STREET_A}51{n:04d}" for n in range(6)]
COUNT_SQL = "SELECT COUNT(DISTINCT taxpayer_id) FROM tax.declarations WHERE {}"


@pytest.fixture()
def six_micro(data, tmp_path) -> Path:  # noqa: F811
    """The suite's data with six firms of street A marked micro: a class of six taxpayers between two counts."""
    owner = tmp_path / "six-micro.duckdb"
    shutil.copy(data, owner)
    with duckdb.connect(str(owner)) as connection:
        connection.execute("UPDATE tax.declarations SET size_class = 'micro' WHERE taxpayer_id IN "
                           f"({', '.join('?' for _ in MICRO)})", MICRO)
    return owner


@pytest.mark.parametrize("spelling", ["the same cells", "cells spelt anew"])
def test_a_stricter_grant_does_not_count_a_class_a_laxer_grant_could(six_micro, tmp_path, spelling):
    """Distinct counts are audited over classes of taxpayers. xuanwu-tjj (min_entities 5) counts street A's taxpayers
    and its small ones: the six micro firms between them are its to count. The shipped grant (10) asking the same
    counts, or the same spelt anew, must not get both: their difference is a class of six."""
    deployment = Stack(six_micro, tmp_path, tmp_path / "released.sqlite",
                       second=[("min_entities: 10", "min_entities: 5")])
    try:
        other = deployment.client("xuanwu-tjj")
        whole = _one(other, COUNT_SQL.format(STREET), SECOND)
        small = _one(other, COUNT_SQL.format(f"{STREET} AND size_class = 'small'"), SECOND)
        assert whole - small == len(MICRO)  # xuanwu-tjj's own right
        shipped = deployment.client()
        spelt = (STREET, f"{STREET} AND size_class = 'small'") if spelling == "the same cells" else (
            f"{STREET} AND size_class IN ('small', 'micro', 'none')", f"{STREET} AND size_class IN ('small', 'none')")
        total, without = (_one(shipped, COUNT_SQL.format(where)) for where in spelt)
    finally:
        deployment.stop()
    assert total is None or without is None or total - without != len(MICRO), \
        f"the shipped grant counts a class of six taxpayers: {total} - {without}"


# --- 8. The rules kept with every cell: the ledger held in memory ------------------------------------------------

def _held_memory(tmp_path: Path, name: str, rules: frozenset[str], cells: int = 20_000) -> tuple[int, int]:
    """Bytes kept, and at the peak, reading back a ledger of ``cells`` cells each recorded under ``rules``."""
    path = tmp_path / f"{name}.sqlite"
    ledger = ReleasedCellLedger(path)
    ledger.record("tax.declarations", [
        ReleasedCell("SELECT street_code, industry_code FROM tax.declarations GROUP BY 1, 2", 2,
                     (f"3201020{i % 100:02d}", f"{i // 100:05d}"), "sum:revenue", i, rules) for i in range(cells)])
    ledger.close()
    reopened = ReleasedCellLedger(path)
    try:
        gc.collect()
        tracemalloc.start()
        try:
            held = reopened.held("tax.declarations")
            kept, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(held) == cells
    finally:
        reopened.close()
    return kept, peak


def test_the_rules_kept_with_each_cell_cost_the_ledger_in_memory_next_to_nothing(tmp_path):
    """Every cell now carries the rules it was released under, and a sandbox keeps its dataset's ledger in memory.
    Rules are few (one set per grant's rules), cells many: read back, 20,000 cells under one set of rules take
    hardly more memory, kept or at the peak of reading, than the same cells recorded before rules were kept."""
    without_kept, without_peak = _held_memory(tmp_path, "without", frozenset())
    with_kept, with_peak = _held_memory(tmp_path, "with", frozenset({SHIPPED_RULES.text()}))
    assert with_kept <= 1.05 * without_kept, f"kept: {with_kept:,} bytes with rules, {without_kept:,} without"
    assert with_peak <= 1.15 * without_peak, f"peak: {with_peak:,} bytes with rules, {without_peak:,} without"
