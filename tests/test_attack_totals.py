"""Attacks on the auditor's search over totals that take a block passing alone (sandbox/audit/dominated_totals.py):
each test failed while the attack worked.

Blocks are built by hand as in tests/test_audit_dominated_totals.py (each block the rows of one group of firms, each
released cell a union of blocks, blocks of 10 or more comparable firms pass), and driven through ``_new_leaks``.
"""

from __future__ import annotations

import itertools
import shutil

import duckdb
import numpy as np
import pytest
from scipy.optimize import linprog

from dsbroker.policy.model import Dominance
from sandbox.audit.auditor import _dominated
from sandbox.audit.dominated_totals import amounts_change_sign, first_dominated_total
from sandbox.audit.linear import unsafe_space
from tests.conftest import GRANT, SHIPPED_DOMINANCE
from tests.test_attack_auditor import STREET, Stack, _one
from tests.test_attack_auditor_10 import N1, N2, P10, _firms, _leaks, _one_firm
from tests.test_released_cell_auditor import STREET_A, STREET_B, _truth, data  # noqa: F401

# Street A: a giant's industry (G 700,000 beside 9 firms of 1,000), a passing industry 65 of 12 firms of 5,000,
# and the rest (20 firms of 10,000); industry 65 also in street B. Street A less its rest is the giant's industry
# with industry 65: G holds 91% of it.
A52 = _firms(0, 1_000, 9) | {"G": _one_firm(700_000)}
A65 = _firms(100, 5_000, 12)
A_REST = _firms(200, 10_000, 20)
B65 = _firms(300, 5_000, 15)
INDUSTRY_65, STREET_A_CELL, REST = {1, 3}, {0, 1, 2}, {2}

# --- 1. A block that adds 0 turns a total into a "difference" ----------------------------------------------------

ZERO = {f"Z{i:03d}": (12, (0,), (12,)) for i in range(12)}  # twelve firms that declare 0 (dormant)
NULLS = {f"Z{i:03d}": (12, (None,), (0,)) for i in range(12)}  # twelve firms with no revenue declared


@pytest.mark.parametrize("rule", [N1, N2, P10], ids=["n=1", "n=2", "p%"])
@pytest.mark.parametrize("empty", [ZERO, NULLS], ids=["zeros", "nulls"])
def test_a_remainder_padded_with_a_block_that_adds_nothing_is_still_a_total(empty, rule):
    """The answer asks for street A's rest together with a block that adds 0 (an industry of dormant firms, or
    firms whose revenue is NULL): street A less the answer is the giant's industry and industry 65 less the empty
    block, a combination with a negative weight, so not a total to the search, though its value is the dominated
    total itself. Without the padding the same leak is found."""
    blocks = [A52, A65, A_REST, B65, empty]
    assert _leaks(blocks, [INDUSTRY_65, STREET_A_CELL], [REST], rule)
    assert _leaks(blocks, [INDUSTRY_65, STREET_A_CELL], [REST | {4}], rule)



def _street_less_rest(data, tmp_path, updates: list[tuple[str, list]], rest_where: str, *,  # noqa: F811
                      edits=(), first: tuple[str, ...] = ()) -> tuple:
    """Through a real broker and sandbox over ``data`` changed by ``updates`` (statement, parameters): the queries
    ``first``, industry 65 over both streets, street A, then the cell ``rest_where``; returns street A's revenue,
    the rest's, and the owner's copy of the data."""
    owner = tmp_path / "owner.duckdb"
    shutil.copy(data, owner)
    with duckdb.connect(str(owner)) as connection:
        for statement, parameters in updates:
            connection.execute(statement, parameters)
    deployment = Stack(owner, tmp_path, tmp_path / "released.sqlite", edits=edits)
    try:
        client = deployment.client()
        for sql in first:
            client.query(GRANT, sql)
        _one(client, "SELECT SUM(revenue) FROM tax.declarations WHERE industry_code = '65'")
        street = _one(client, f"SELECT SUM(revenue) FROM tax.declarations WHERE {STREET}")
        rest = _one(client, f"SELECT SUM(revenue) FROM tax.declarations WHERE {rest_where}")
    finally:
        deployment.stop()
    return street, rest, owner


def test_a_street_less_its_rest_padded_with_a_dormant_street_is_withheld_end_to_end(data, tmp_path):  # noqa: F811
    """Through a real broker and sandbox: BIG declares 700,000 a month in street A industry 52; street B's firms of
    industries 51, 72 and 99 declare 0 (dormant). Industry 65 and street A are released; then the rest of street A
    asked together with street B's dormant industries, which add 0. Street A less it is A/52 + A/65 less a block
    that adds 0: BIG's revenue to within 12.5%."""
    big = f"91{STREET_A}520000"
    street, rest, owner = _street_less_rest(
        data, tmp_path, [("UPDATE tax.declarations SET revenue = 700000 WHERE taxpayer_id = ?", [big]),
                         ("UPDATE tax.declarations SET revenue = 0 WHERE street_code = ? "
                          "AND industry_code IN ('51', '72', '99')", [STREET_B])],
        f"street_code IN ('{STREET_A}', '{STREET_B}') AND industry_code IN ('51', '72', '99')",
        edits=[(SHIPPED_DOMINANCE, "dominance: {n: 1, k: 85}")])
    truth = _truth(owner, f"taxpayer_id = '{big}'")
    assert street is None or rest is None or (street - rest - truth) / truth > 0.15, \
        "a total the dominance rule withholds is derived: the dominant firm's revenue within 15%"


TINY = _firms(500, 1, 12)  # twelve firms of 1 each: a block that passes (many firms, none dominant)


@pytest.mark.xfail(strict=True, reason=(
    "by design only totals (weights of one sign) are judged, so a block that adds almost nothing, subtracted, makes "
    "the combination a difference: street A less (its rest and twelve firms of 1) is the giant's industry and "
    "industry 65 less 12, the giant's revenue within the rule's margin. Telling this from a year-over-year change "
    "(a difference of comparable cells) needs a rule for how small a subtracted part may be; not decided here"))
@pytest.mark.parametrize("rule", [N1, N2, P10], ids=["n=1", "n=2", "p%"])
def test_a_remainder_padded_with_a_block_that_adds_almost_nothing_is_judged(rule):
    blocks = [A52, A65, A_REST, B65, TINY]
    assert _leaks(blocks, [INDUSTRY_65, STREET_A_CELL], [REST | {4}], rule)


# --- 2. The partner search's bound forgets a block's taxpayers past the eight it keeps ---------------------------

def test_the_partner_bound_covers_a_blocks_taxpayers_past_the_ones_it_keeps():
    """``tail_point`` bounds every partner of a set by each block's largest amounts of its other taxpayers, kept for
    the eight largest of each block. Once the partner search has left out the seven it tried beside the giant (the
    eighth kept is the giant), the block's bound fell to 0, though twelve more firms of the same size are there:
    the bound was below the gauge of the giant with any of them, and the search stopped."""
    from sandbox.audit.dominated_totals import _Totals
    from tests.test_audit_dominated_totals import _exact_gauge

    amounts = {0: {"G": 1_000} | {f"F{i:02d}": 100 for i in range(20)}, 1: {f"H{i:02d}": 100 for i in range(50)}}
    vectors = [{0: 1}, {1: 1}]
    space = _Totals.of(unsafe_space(vectors, {0, 1}, [0, 1]), amounts)
    assert space is not None
    position = {entity: p for p, (entity, _) in enumerate(space.entities)}
    tried = {position[f"F{i:02d}"] for i in range(7)}
    bound = space.gauge(space.tail_point({position["G"]: 1.0}, (1.0,), tried))[0]
    assert bound >= _exact_gauge(vectors, amounts, {"G": 1.0, "F10": 1.0}) - 1e-9
    # Once every firm of the block is tried, the bound is the giant's with block 1's firms: the search can stop.
    everyone = {position[f"F{i:02d}"] for i in range(20)}
    bound = space.gauge(space.tail_point({position["G"]: 1.0}, (1.0,), everyone))[0]
    assert bound == pytest.approx(max(_exact_gauge(vectors, amounts, {"G": 1.0}),
                                      _exact_gauge(vectors, amounts, {"H00": 1.0})), abs=1e-9)



def test_the_bound_of_a_large_sets_other_members_takes_them_all():
    """A grant may write any n (``disclosure.dominance.n`` is an integer of at least 1): under n=10 a set is one
    taxpayer and nine others, more than the eight amounts kept per block, and the bound took only the seven kept
    beside the giant's."""
    from sandbox.audit.dominated_totals import _Totals
    from tests.test_audit_dominated_totals import _exact_gauge

    amounts = {0: {"G": 1_000} | {f"F{i:02d}": 100 for i in range(12)}, 1: {f"H{i:02d}": 100 for i in range(50)}}
    vectors = [{0: 1}, {1: 1}]
    space = _Totals.of(unsafe_space(vectors, {0, 1}, [0, 1]), amounts)
    assert space is not None
    giant = next(p for p, (entity, _) in enumerate(space.entities) if entity == "G")
    bound = space.gauge(space.tail_point({giant: 1.0}, (1.0,) * 9))[0]
    assert bound >= _exact_gauge(vectors, amounts, {"G": 1.0} | {f"F{i:02d}": 1.0 for i in range(9)}) - 1e-9


# --- 3. One firm whose amounts change sign switched off every search for two taxpayers --------------------------

G1_G2 = _firms(0, 1_000, 9) | {"G1": _one_firm(400_000), "G2": _one_firm(350_000)}  # each under 85%, both over
ONE_GIANT = A52


@pytest.mark.parametrize(("giants", "rule"), [(G1_G2, N2), (ONE_GIANT, P10)], ids=["two giants, n=2", "p%"])
def test_a_firm_with_a_refund_elsewhere_does_not_switch_off_the_search_for_pairs(giants, rule):
    """Street A less its rest is the giants' industry and industry 65, dominated by two giants together (n=2) or
    by one under p% (the second largest estimates it). A firm X that declares 30,000 in the giants' industry and a
    refund of 28,000 in the rest has amounts of both signs: the partner search then has no bound (``tail_point``
    is None), which the search took for "no partner" (``_partners`` is a generator, never None), so no set of two
    was tried and p% (only sets of two) judged nothing."""
    with_x = giants | {"X": _one_firm(30_000)}
    rest = A_REST | {"X": _one_firm(-28_000)}
    assert _leaks([giants, A65, A_REST, B65], [INDUSTRY_65, STREET_A_CELL], [REST], rule)
    assert _leaks([with_x, A65, rest, B65], [INDUSTRY_65, STREET_A_CELL], [REST], rule)



def test_two_giants_are_not_hidden_by_a_refund_month_end_to_end(data, tmp_path):  # noqa: F811
    """Through a real broker and sandbox under the shipped rule (n=2, k=85): two firms of street A industry 52
    declare 400,000 and 350,000 a month; together they hold 90% of A/52 + A/65, not 85% of street A or of any of its
    months. One firm of industry 51 has a refund month, so once street A's months are released it has amounts of
    both signs over the blocks. Street A less the rest of its industries is then the two giants' revenue to within
    12%."""
    first, second, refunding = f"91{STREET_A}520000", f"91{STREET_A}520001", f"91{STREET_A}510000"
    street, rest, owner = _street_less_rest(
        data, tmp_path, [("UPDATE tax.declarations SET revenue = 400000 WHERE taxpayer_id = ?", [first]),
                         ("UPDATE tax.declarations SET revenue = 350000 WHERE taxpayer_id = ?", [second]),
                         ("UPDATE tax.declarations SET revenue = -20000 WHERE taxpayer_id = ? "
                          "AND period = DATE '2025-03-01'", [refunding])],
        f"{STREET} AND industry_code IN ('51', '72', '99')",
        first=(f"SELECT period, SUM(revenue) FROM tax.declarations WHERE {STREET} GROUP BY period",))
    truth = _truth(owner, f"taxpayer_id IN ('{first}', '{second}')")
    assert street is None or rest is None or (street - rest - truth) / truth > 0.15, \
        "a total the dominance rule withholds is derived: the two giants' revenue within 15%"


# --- An exhaustive check of the search against programmes of its own -------------------------------------------

N3 = Dominance(n=3, k=90, p=None)
BOTH = Dominance(n=2, k=70, p=15)


def _random_space(rng: np.random.Generator, firms: int, mixed: float) -> tuple[list[dict], dict[int, dict]]:
    """Cells over 3 to 6 blocks, firms in one to three blocks (a few large), some with refunds (all amounts
    negative), a share ``mixed`` with amounts of both signs, and sometimes a block that adds 0."""
    blocks = int(rng.integers(3, 7))
    amounts: dict[int, dict] = {b: {} for b in range(blocks)}
    for f in range(firms):
        changes, sign = rng.random() < mixed, -1 if rng.random() < 0.2 else 1
        for b in rng.choice(blocks, size=int(rng.integers(1, 4)), replace=False):
            size = int(rng.integers(20_000, 90_000) if rng.random() < 0.15 else rng.integers(100, 3_000))
            amounts[int(b)][f"F{f:02d}"] = (rng.choice([1, -1]) if changes else sign) * size
    if rng.random() < 0.3:
        amounts[blocks - 1] = {f"Z{i}": 0 for i in range(3)}
    cells = [{b: 1 for b in range(blocks) if rng.random() < 0.5} or {0: 1}
             for _ in range(int(rng.integers(2, blocks + 1)))]
    return cells, amounts


def _gauges(cells: list[dict], amounts: dict[int, dict]):
    """The taxpayers of the cells, and the gauge of a set of them (by position, signed weights): a programme (scipy)
    over the totals ``x = C^T y`` of the cells (x >= 0 on every block holding an amount), each taxpayer's magnitude
    a variable of its own: nothing of the auditor's."""
    blocks = sorted({c for cell in cells for c in cell})
    matrix = np.array([[1.0 if c in cell else 0.0 for c in blocks] for cell in cells])  # cells x blocks
    holding = [i for i, c in enumerate(blocks) if any(amounts[c].values())]
    taxpayers = sorted({e for c in blocks for e, a in amounts[c].items() if a})
    nets = np.array([[float(amounts[c].get(e, 0)) for c in blocks] for e in taxpayers]) @ matrix.T
    n, m = nets.shape
    a_ub = np.vstack([np.hstack([-matrix.T[holding], np.zeros((len(holding), n))]),
                      np.hstack([nets, -np.eye(n)]), np.hstack([-nets, -np.eye(n)]),
                      np.hstack([np.zeros((1, m)), np.ones((1, n))])])
    b_ub = np.concatenate([np.zeros(len(holding) + 2 * n), [1.0]])

    def gauge(weights: dict[int, float]) -> float:
        objective = np.zeros(m + n)
        for e, w in weights.items():
            objective[:m] -= w * nets[e]
        result = linprog(objective, A_ub=a_ub, b_ub=b_ub, bounds=[(None, None)] * m + [(0, None)] * n,
                         method="highs")
        assert result.status == 0
        return -result.fun

    return taxpayers, gauge


def _largest_gauge(cells: list[dict], amounts: dict[int, dict], rule: Dominance) -> float:
    """The largest of the rule's gauges (:func:`_gauges`) over every set of taxpayers and its signs."""
    taxpayers, gauge = _gauges(cells, amounts)
    n = len(taxpayers)
    shapes: list[tuple[tuple[float, ...], bool]] = []
    if rule.n is not None and rule.k is not None:
        shapes += [((100 / rule.k,) * size, True) for size in range(1, rule.n + 1)]
    if rule.p is not None:
        shapes.append(((1 + rule.p / 100, 1.0), False))
    best = 0.0
    for weights, unordered in shapes:
        choose = itertools.combinations if unordered else itertools.permutations
        for members in choose(range(n), len(weights)):
            for signs in itertools.product((1, -1), repeat=len(weights)):
                best = max(best, gauge({e: s * w for e, s, w in zip(members, signs, weights, strict=True)}))
    return best


RANDOM_CASES = [pytest.param(seed, rule, 10, 0.25, id=f"{name}-{seed}") for seed in range(8)
                for name, rule in (("n=1", N1), ("n=2", N2), ("p%", P10), ("n=2 and p%", BOTH))] + \
               [pytest.param(seed, N3, 8, 0.0, id=f"n=3-{seed}") for seed in range(4)]


@pytest.mark.parametrize(("seed", "rule", "firms", "mixed"), RANDOM_CASES)
def test_the_search_finds_a_dominated_total_exactly_where_a_set_dominates_one(seed, rule, firms, mixed):
    """Random cells and firms, among them firms with amounts of both signs and blocks that add 0: the search over
    totals (with the auditor's shortcut before it: some block dominated alone, or amounts of both signs) finds a
    leak exactly where some set of the rule's dominates some total. Gauges within 1e-4 of 1 are left out (the
    search has a margin toward leaks)."""
    cells, amounts = _random_space(np.random.default_rng(seed), firms, mixed)
    truth = _largest_gauge(cells, amounts, rule)
    if abs(truth - 1) < 1e-4:
        pytest.skip("a gauge at the margin")
    used = {c: amounts[c] for c in {c for cell in cells for c in cell}}
    largest = max(rule.n or 0, 2 if rule.p is not None else 0)
    basis = unsafe_space(cells, set(used), sorted(used))
    shortcut = any(_dominated([a for a in column.values() if a], rule, largest) for column in used.values()
                   if any(column.values())) or amounts_change_sign(used)
    found = shortcut and first_dominated_total(basis, lambda: [], amounts, rule, lambda: None) is not None
    assert found is (truth > 1), truth


@pytest.mark.parametrize("seed", range(8))
def test_the_partner_bound_holds_with_amounts_of_both_signs(seed):
    """The partner bound (``tail_point``) takes each block's largest magnitudes of the others' amounts, which bound
    their nets in a total whatever their signs: for the taxpayer of the largest bound, its gauge is at least that
    of the taxpayer with any partner in either orientation (independent programmes), firms of both signs among
    them."""
    from sandbox.audit.dominated_totals import _Totals

    cells, amounts = _random_space(np.random.default_rng(seed), 10, 0.4)
    used = sorted({c for cell in cells for c in cell})
    space = _Totals.of(unsafe_space(cells, set(used), used), amounts)
    assert space is not None
    taxpayers, gauge = _gauges(cells, amounts)
    for first in range(len(space.entities)):
        entity, sign = space.entities[first]
        bound = space.gauge(space.tail_point({first: 1.0}, (1.0,)))[0]
        at = taxpayers.index(entity)
        for other in range(len(taxpayers)):
            if other != at:
                for turn in (1.0, -1.0):
                    assert bound >= gauge({at: sign, other: turn}) - 1e-7, (entity, taxpayers[other])
