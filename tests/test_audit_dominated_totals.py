"""Totals of released cells that take a block passing the rules alone (sandbox/audit/dominated_totals.py).

Each case is blocks (per block, each firm's amount), the cells released before and the answer's (each a set of
blocks), the rule, and whether the auditor finds a leak. Then the search's bounds are checked against exact
programmes on random spaces: a bound below a gauge would let a dominated total through.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog

from dsbroker.policy.model import Dominance
from sandbox.audit.dominated_totals import _Totals, first_dominated_total
from sandbox.audit.linear import unsafe_space
from tests.test_attack_auditor_10 import N1, N2, _firms, _leaks, _one_firm

P10 = Dominance(n=None, k=None, p=10)


def _blocks(*groups: dict) -> list[dict]:
    return list(groups)


# Street A: a giant's industry (G 700,000 beside 9 firms of 1,000), a passing industry of 12 firms of 5,000, and
# the rest (20 firms of 10,000); industry 65 also in street B (15 firms of 5,000).
A52 = _firms(0, 1_000, 9) | {"G": _one_firm(700_000)}
A65 = _firms(100, 5_000, 12)
A_REST = _firms(200, 10_000, 20)
B65 = _firms(300, 5_000, 15)
STREETS = _blocks(A52, A65, A_REST, B65)
a52, a65, a_rest, b65 = range(4)
STREET_A, REST, INDUSTRY_65 = {a52, a65, a_rest}, {a_rest}, {a65, b65}

CASES = [
    # (id, blocks, cells before, the answer's cells, rule, leaks)
    ("street less its rest is a giant's block and a small passing one", STREETS,
     [INDUSTRY_65, STREET_A], [REST], N1, True),
    ("the same under n=2", STREETS, [INDUSTRY_65, STREET_A], [REST], N2, True),
    ("the same under p%", STREETS, [INDUSTRY_65, STREET_A], [REST], P10, True),
    ("without industry 65 the remainder is the street's two industries: the giant holds 87%", STREETS,
     [STREET_A], [REST], N1, True),
    ("a remainder of many firms beside the giant passes", _blocks(A52, _firms(100, 20_000, 12), A_REST, B65),
     [INDUSTRY_65, STREET_A], [REST], N1, False),
    ("totals of passing blocks alone pass (no block is dominated)", _blocks(A65, A_REST, B65),
     [{0, 1}, {1, 2}], [{0}], N2, False),
    ("a firm's growth, one year less the other, is a change departments report, not a total",
     _blocks(_firms(0, 1_000, 20) | {"X": _one_firm(1_000)}, _firms(0, 1_000, 20) | {"X": _one_firm(30_000)}),
     [{0}], [{1}], N2, False),
]


@pytest.mark.parametrize(("blocks", "before", "answer", "rule", "leaks"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_totals_that_take_a_passing_block(blocks, before, answer, rule, leaks):
    assert bool(_leaks(blocks, before, answer, rule)) is leaks


def test_the_leak_names_the_answers_cell_that_completes_it():
    found = _leaks(STREETS, [INDUSTRY_65, STREET_A], [REST], N1)
    assert found and all(2 in rows for rows in found)  # the answer's cell (row 2) takes part


def test_a_firm_whose_amounts_change_sign_is_judged_by_its_net():
    """A firm with a refund in one block and a payment in another: its net in a total is not the sum of its
    magnitudes, so it gets a variable of its own in the programme. Street less rest is X's +50,000 and -48,000 with
    G's 700,000: G dominates; the search must not fail on the mixed firm."""
    a52 = A52 | {"X": (12, (50_000,), (12,))}
    a65 = A65 | {"X": (12, (-48_000,), (12,))}
    assert _leaks(_blocks(a52, a65, A_REST, B65), [INDUSTRY_65, STREET_A], [REST], N1)


def _space(rng: np.random.Generator, blocks: int, cells: int, firms: int):
    vectors = [{b: 1 for b in range(blocks) if rng.random() < 0.4} or {0: 1} for _ in range(cells)]
    basis = unsafe_space(vectors, set(range(blocks)), list(range(blocks)))
    amounts: dict[int, dict] = {b: {} for b in range(blocks)}
    for f in range(firms):
        for b in rng.choice(blocks, size=int(rng.integers(1, 3)), replace=False):
            small = rng.random() < 0.9
            amounts[int(b)][f"F{f}"] = int(rng.integers(1, 1000) if small else rng.integers(10_000, 90_000))
    return basis, amounts, vectors


def _exact_gauge(vectors: list[dict], amounts: dict, members: dict) -> float:
    """max sum of the members' nets over totals of the cells' span (x >= 0 on every block holding an amount: a block
    that adds 0 changes no net, whatever its weight) whose magnitudes add up to 1 (scipy over the cells' own 0/1
    vectors, x = C^T y: nothing of the auditor's)."""
    blocks = sorted({c for vector in vectors for c in vector})
    at = {c: i for i, c in enumerate(blocks)}
    matrix = np.zeros((len(vectors), len(blocks)))
    for j, vector in enumerate(vectors):
        for c in vector:
            matrix[j, at[c]] = 1.0
    mass = np.array([sum(abs(a) for a in amounts[c].values()) for c in blocks], dtype=float)
    gain = np.array([sum(w * abs(amounts[c].get(e, 0)) for e, w in members.items()) for c in blocks], dtype=float)
    holding = [i for i, c in enumerate(blocks) if any(amounts[c].values())]
    result = linprog(-(matrix @ gain), A_ub=np.vstack([-matrix.T[holding], (matrix @ mass)[None, :]]),
                     b_ub=np.concatenate([np.zeros(len(holding)), [1.0]]), bounds=[(None, None)] * len(vectors),
                     method="highs")
    assert result.status == 0
    return -result.fun


@pytest.mark.parametrize("seed", range(12))
def test_the_bounds_are_never_below_the_gauges(seed):
    """Every taxpayer's bound is at least its exact gauge, every shared programme gives the exact gauge of the
    sets it serves, and the bound of a taxpayer with any partner is at least the gauge of each pair: a bound too low
    would let the search skip a dominated total."""
    rng = np.random.default_rng(seed)
    basis, amounts, vectors = _space(rng, blocks=12, cells=8, firms=30)
    space = _Totals.of(basis, amounts)
    assert space is not None
    bounds = space.gauge_bounds()
    for position, (entity, _) in enumerate(space.entities):
        exact = _exact_gauge(vectors, amounts, {entity: 1.0})
        assert bounds[position] >= exact - 1e-7, (entity, bounds[position], exact)
        gauge, _ = space.gauge(space.point({position: 1.0}))
        assert gauge == pytest.approx(exact, abs=1e-6)
        shared = space.shared({position: 1.0})
        if shared is not None:
            key, factor, point = shared
            assert space.gauge(point)[0] * factor == pytest.approx(exact, abs=1e-6)
    largest = max(range(len(space.entities)), key=lambda p: bounds[p])
    tail = space.gauge(space.tail_point({largest: 1.0}, (1.0,)))[0]
    for partner in range(len(space.entities)):
        if partner != largest:
            pair = _exact_gauge(vectors, amounts, {space.entities[largest][0]: 1.0, space.entities[partner][0]: 1.0})
            assert tail >= pair - 1e-7


def test_a_set_dominant_in_the_cells_before_is_not_the_answers():
    """The leak is the answer's only where it shows the set more dominant than the cells before did."""
    amounts = {0: {"G": 700_000, "a": 1_000}, 1: {"b": 5_000, "c": 5_000}, 2: {"d": 10_000}}
    vectors = [{0: 1, 1: 1}]
    basis = unsafe_space(vectors, {0, 1, 2}, [0, 1, 2])
    assert first_dominated_total(basis, lambda: basis, amounts, N1, lambda: None) is None
    assert first_dominated_total(basis, lambda: [], amounts, N1, lambda: None) is not None


def test_the_solver_prints_nothing_on_standard_output():
    """HiGHS prints a banner to file descriptor 1 when a process makes its first model; a CLI's --json output (and
    any server writing to standard output) must not get it."""
    import subprocess
    import sys

    code = ("import sandbox.audit.programmes as p, numpy as n; from scipy.sparse import csr_matrix; "
            "print(p.Programme(csr_matrix(n.ones((1, 1))), n.ones(1), [0.0], [None]).maximise(n.ones(1))[0])")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout == "optimal\n"


def _space_of_both_signs(rng: np.random.Generator, blocks: int, cells: int, firms: int):
    """As :func:`_space`, with a fifth of the firms in two or three blocks, one amount of each negated (a refund)."""
    vectors = [{b: 1 for b in range(blocks) if rng.random() < 0.4} or {0: 1} for _ in range(cells)]
    basis = unsafe_space(vectors, set(range(blocks)), list(range(blocks)))
    amounts: dict[int, dict] = {b: {} for b in range(blocks)}
    for f in range(firms):
        refunds = rng.random() < 0.2
        chosen = rng.choice(blocks, size=int(rng.integers(2, 4) if refunds else rng.integers(1, 3)), replace=False)
        for n, b in enumerate(chosen):
            small = rng.random() < 0.8
            amount = int(rng.integers(1, 1000) if small else rng.integers(10_000, 90_000))
            amounts[int(b)][f"F{f}"] = -amount if refunds and n == 0 else amount
    return basis, amounts, vectors


def _exact_gauge_of_both_signs(vectors: list[dict], amounts: dict, members: dict) -> float:
    """max of the members' nets (each weighted and signed as ``members`` says) over totals of the cells' span
    (x = C^T y >= 0 on every block holding an amount) whose taxpayers' net magnitudes add up to at most 1: a firm
    of one sign by its magnitudes, one whose amounts change sign by a variable t >= |net| (scipy, nothing of the
    auditor's)."""
    blocks = sorted({c for vector in vectors for c in vector})
    at = {c: i for i, c in enumerate(blocks)}
    cells = np.zeros((len(vectors), len(blocks)))
    for j, vector in enumerate(vectors):
        for c in vector:
            cells[j, at[c]] = 1.0
    # Amounts scaled to at most 1 (the gauge does not change): the solver's tolerances are absolute.
    scale = float(max(abs(a) for c in blocks for a in amounts[c].values()))
    firms: dict = {}
    for c in blocks:
        for firm, amount in amounts[c].items():
            if amount:
                firms.setdefault(firm, {})[at[c]] = float(amount) / scale
    changing = sorted(f for f, parts in firms.items() if min(parts.values()) < 0 < max(parts.values()))
    mass = np.zeros(len(blocks))
    for firm, parts in firms.items():
        if firm not in changing:
            for i, amount in parts.items():
                mass[i] += abs(amount)
    nets = np.zeros((len(changing), len(vectors)))
    for g, firm in enumerate(changing):
        for i, amount in firms[firm].items():
            nets[g] += amount * cells[:, i]
    gain = np.zeros(len(vectors))
    for firm, weight in members.items():
        for i, amount in firms.get(firm, {}).items():
            gain += weight * amount * cells[:, i]
    holding = sorted({i for parts in firms.values() for i in parts})
    m = len(changing)
    a_ub = np.vstack([np.hstack([-cells.T[holding], np.zeros((len(holding), m))]),
                      np.hstack([nets, -np.eye(m)]), np.hstack([-nets, -np.eye(m)]),
                      np.hstack([(cells @ mass)[None, :], np.ones((1, m))])])
    result = linprog(-np.concatenate([gain, np.zeros(m)]), A_ub=a_ub,
                     b_ub=np.concatenate([np.zeros(len(holding) + 2 * m), [1.0]]),
                     bounds=[(None, None)] * len(vectors) + [(0, None)] * m, method="highs")
    assert result.status == 0
    return -result.fun


# The roles of a pair: (n=2, k=85) weighs both 100/85; p% (p=10) the largest 1.1 and the second 1.
PAIRS = {"n=2, k=85": (100 / 85, 100 / 85), "p=10%": (1.1, 1.0)}


@pytest.mark.parametrize("roles", list(PAIRS.values()), ids=list(PAIRS))
@pytest.mark.parametrize("seed", range(6))
def test_where_amounts_change_sign_no_pair_that_some_total_shows_dominant_is_left_out(seed, roles):
    """For every pair of taxpayers (in each orientation, weighted as the rule weighs its roles), against its exact
    gauge by an independent programme: a pair some total shows dominant is among the partners the test per block
    leaves (sandbox/audit/block_shares.py); the bound of the pair as one set is never below its gauge; nor is the
    first one's exact gauge plus what its programme's duals say the partner may add; nor is the bound on every
    candidate of the partner's group (a refund does not count for a partner oriented as a payment)."""
    rng = np.random.default_rng(100 + seed)
    basis, amounts, vectors = _space_of_both_signs(rng, blocks=10, cells=7, firms=24)
    space = _Totals.of(basis, amounts)
    assert space is not None
    weight, last = roles
    space.gauge_bounds()  # keeps the certificates set_bound takes
    positions = range(len(space.entities))
    exact = {e: _exact_gauge_of_both_signs(vectors, amounts, {space.entities[e][0]: space.entities[e][1]})
             for e in positions}
    checked = dominant = 0
    for e in positions:
        single, _ = space.gauge(space.point({e: weight}))
        assert single == pytest.approx(weight * exact[e], abs=1e-6)
        duals = space.last_block_duals
        added = space.dual_partner_bounds(duals, last) if duals is not None else None
        candidates = set(space.partner_candidates({e: weight}, last))
        groups: dict = {}
        for f in candidates:
            groups.setdefault(space.partner_group(f), []).append(f)
        tails = {key: space.gauge(space.candidate_tail_point({e: weight}, last, among))[0]
                 for key, among in groups.items()}
        for f in positions:
            if space.entities[f][0] == space.entities[e][0]:
                continue
            (first, sign_e), (second, sign_f) = space.entities[e], space.entities[f]
            pair = _exact_gauge_of_both_signs(vectors, amounts, {first: weight * sign_e, second: last * sign_f})
            checked += 1
            assert space.set_bound({e: weight, f: last}) >= pair - 1e-7, (first, second)
            if added is not None:
                assert weight * exact[e] + added[f] >= pair - 1e-7, (first, second)
            if pair > 1 - 1e-6:
                dominant += 1
                assert f in candidates, (first, second, pair)
                assert tails[space.partner_group(f)] >= pair - 1e-7, (first, second)
    assert checked and dominant  # the spaces hold pairs some total shows dominant: the check is not vacuous
