"""Attacks on the search over dominated totals where amounts change sign (the merge of branch ``refunds``:
sandbox/audit/block_shares.py, the candidates, set, dual and group bounds of SetSearch and _Totals).

Every pruning step of that search must be sound: it may rule out only sets of taxpayers that no total of the
released cells shows dominant. These tests check it against an independent oracle that shares no code with
sandbox/audit:

- a *total* of released cells is any combination ``y`` of them whose weight on every block holding a nonzero
  amount, ``x_b = sum_j y_j C_jb``, is at least 0; a taxpayer's net is ``n_e = sum_b x_b a_eb`` and the total's
  magnitude ``H = sum_e |n_e|``;
- a set S (the rule's roles: ``100 / k`` each under (n, k), ``1 + p / 100`` and 1 under p%) with signs s is
  dominant in a total where ``sum_S w_e s_e n_e > H``; its gauge, the largest such ratio, is one linear programme
  with a variable ``t_e >= |n_e|`` for *every* taxpayer (no split into taxpayers of one sign and the others, no
  block test, no duals);
- every set of each size the rule tests is enumerated, each member in each sign its net can take (both where its
  amounts change sign), pruned only by the gauge's subadditivity (a set's gauge is at most the sum of its
  members' weighted gauges, each solved here).

Three checks:

1. ``first_dominated_total`` (the whole search, every pruning step) on random spaces, cells released before and
   an answer, under (1, k), (2, k), (3, k), (4, k), p% and both: wherever the oracle finds a set dominant now,
   clearly past 1, and clearly more dominant than in the cells before, the auditor must report a leak (or give
   up, which withholds). The generator mixes payers, refund-only taxpayers, taxpayers whose amounts change sign,
   giants (some a million times the others), taxpayers alone in a block, blocks of only sign-changing taxpayers
   (no magnitude of one sign), zero amounts and ties.
2. Set by set: ``SetSearch.dominant`` with an ``accept`` that takes nothing runs through every set its bounds leave;
   each set the oracle finds dominant must be offered. This catches a pruning step that drops a dominant set
   even where another leak of the same space hides it from check 1.
3. End to end: random small DuckDB data with refunds (2-3 streets x 2-3 industries x 2-4 months, 5-25 taxpayers,
   some giants, some whose payments and refunds about cancel), random GROUP BY queries with IN filters through the
   real guard, engine, auditor and release; then the oracle over every released cell (atoms street x industry x
   month): no set of taxpayers may be dominant in any total of them. Not vacuous: the same answers released
   without the audit do give dominated totals away.

What the session that wrote these found: no unsound pruning step in the search over totals itself. Outside these
bounded tests it ran about 14,700 random spaces (3-13 blocks, 2-8 cells, 3-26 taxpayers) through check 1 under
eleven rules, about 3,000 through check 2, and about 1,700 end-to-end reports (6 to 10 queries each, the audit
withholding cells in about 3,700 queries) under five grants' rules; the search agreed with the oracle everywhere
outside the margin band (within 1e-4 of 1). Check 3 did find one leak, outside the search: cells whose rows never
meet were audited apart (sandbox/audit/components.py), which is unsound where a refund in one and payments in the
other cancel in a total of both (test 4 below, fixed in Auditor.audit).
The checks have teeth: a dual bound that divides by ``P_c + |a_fc|`` for every partner (not only for those whose
amounts change sign) fails checks 1 and 2.
"""

from __future__ import annotations

import datetime as dt
import itertools
import tempfile
import time
from pathlib import Path

import duckdb
import highspy
import numpy as np
import pytest
from scipy.optimize import linprog
from scipy.sparse import csc_matrix

from dsbroker.policy.model import Dominance, parse_policy
from tests.conftest import DISCLOSURE, GRANT, POLICIES, XUANWU, create_declarations_table


# --- The oracle ---------------------------------------------------------------------------------------------------


class Oracle:
    """The gauges of sets of taxpayers over the totals of some cells (module docstring)."""

    def __init__(self, cells: list[set[int]], amounts: dict[int, dict[str, float]]) -> None:
        blocks = sorted({b for cell in cells for b in cell})
        at = {b: i for i, b in enumerate(blocks)}
        c = np.zeros((len(cells), len(blocks)))
        for j, cell in enumerate(cells):
            for b in cell:
                c[j, at[b]] = 1.0
        scale = max((abs(float(v)) for b in blocks for v in amounts.get(b, {}).values()), default=1.0) or 1.0
        self.names = sorted({e for b in blocks for e, v in amounts.get(b, {}).items() if v})
        idx = {e: i for i, e in enumerate(self.names)}
        a = np.zeros((len(self.names), len(blocks)))  # taxpayers x blocks
        for b in blocks:
            for e, v in amounts.get(b, {}).items():
                if v:
                    a[idx[e], at[b]] += float(v) / scale
        self.a, self.c = a, c
        # The signs a taxpayer's net can take in a total: its amounts' (both where they change sign).
        self.signs = [tuple(s for s in (1.0, -1.0) if np.any(s * a[i] > 0)) for i in range(len(self.names))]
        holding = [i for i in range(len(blocks)) if np.any(a[:, i] != 0)]
        nets = a @ c.T  # taxpayers x cells: n_e as a function of y
        m, k = len(self.names), len(cells)
        rows = [np.hstack([-c.T[holding], np.zeros((len(holding), m))]),
                np.hstack([nets, -np.eye(m)]), np.hstack([-nets, -np.eye(m)]),
                np.hstack([np.zeros((1, k)), np.ones((1, m))])]
        self.nets, self.k, self.m = nets, k, m
        self._cache: dict = {}
        if not m:  # no taxpayer holds an amount: every net is 0
            self.model = None
            return
        matrix = csc_matrix(np.vstack(rows))
        inf = highspy.kHighsInf
        model = highspy.Highs()
        model.setOptionValue("output_flag", False)
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = k + m, matrix.shape[0]
        lp.col_cost_ = np.zeros(k + m)
        lp.col_lower_ = np.array([-inf] * k + [0.0] * m)
        lp.col_upper_ = np.array([inf] * (k + m))
        lp.row_lower_ = np.full(matrix.shape[0], -inf)
        lp.row_upper_ = np.concatenate([np.zeros(matrix.shape[0] - 1), [1.0]])
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = matrix.indptr.astype(np.int32)
        lp.a_matrix_.index_ = matrix.indices.astype(np.int32)
        lp.a_matrix_.value_ = matrix.data.astype(float)
        lp.sense_ = highspy.ObjSense.kMaximize
        model.passModel(lp)
        self.model = model
        self._lp = (matrix, np.concatenate([np.zeros(matrix.shape[0] - 1), [1.0]]),
                    [(None, None)] * k + [(0, None)] * m)

    def gauge(self, members: dict[int, float]) -> float:
        """max sum_e w_e n_e (w signed) over totals with H <= 1."""
        key = tuple(sorted(members.items()))
        if key in self._cache:
            return self._cache[key]
        if self.model is None:
            return 0.0
        objective = np.zeros(self.k + self.m)
        for e, w in members.items():
            objective[:self.k] += w * self.nets[e]
        self.model.changeColsCost(self.k + self.m, np.arange(self.k + self.m, dtype=np.int32), objective)
        self.model.run()
        status = self.model.getModelStatus()
        if status == highspy.HighsModelStatus.kOptimal:
            value = float(self.model.getInfo().objective_function_value)
        elif status in (highspy.HighsModelStatus.kUnbounded, highspy.HighsModelStatus.kUnboundedOrInfeasible):
            value = float("inf")
        else:  # a warm start gone astray: solved afresh
            matrix, b, bounds = self._lp
            result = linprog(-objective, A_ub=matrix, b_ub=b, bounds=bounds, method="highs")
            if result.status == 3:
                value = float("inf")
            elif result.status == 0:
                value = -float(result.fun)
            else:
                raise RuntimeError(result.message)
            self.model.clearSolver()
        self._cache[key] = value
        return value

    def shapes(self, n: int | None, k: float | None, p: float | None) -> list[tuple[float, ...]]:
        shapes = []
        if n is not None:
            shapes += [(100 / k,) * size for size in range(1, n + 1)]
        if p is not None:
            shapes += [(1 + p / 100,), (1 + p / 100, 1.0)]
        return shapes

    def dominant_sets(self, n, k, p, floor: float = 1 - 1e-3):
        """Every (members with their roles' signed weights, by name; gauge) with gauge > floor over the rule's
        sets, each member in each sign its net can take in a total."""
        found = []
        m = self.m
        single = {(e, s): self.gauge({e: s}) for e in range(m) for s in self.signs[e]}
        for shape in self.shapes(n, k, p):
            size = len(shape)
            ordered = len(set(shape)) > 1
            combos = itertools.permutations(range(m), size) if ordered else itertools.combinations(range(m), size)
            for members in combos:
                for signs in itertools.product(*(self.signs[e] for e in members)):
                    bound = sum(w * single[(e, s)] for e, w, s in zip(members, shape, signs, strict=True))
                    if bound <= floor:
                        continue
                    weights = {e: w * s for e, w, s in zip(members, shape, signs, strict=True)}
                    g = single[(members[0], signs[0])] * shape[0] if size == 1 else self.gauge(weights)
                    if g > floor:
                        found.append(({self.names[e]: w for e, w in weights.items()}, g))
        return found


def gauge_of(oracle: Oracle | None, weights: dict[str, float]) -> float:
    """The gauge of a set named by taxpayers (with their signed weights) in the oracle's space (a taxpayer absent
    adds nothing; no space, no cells: 0)."""
    if oracle is None:
        return 0.0
    idx = {e: i for i, e in enumerate(oracle.names)}
    members = {idx[e]: w for e, w in weights.items() if e in idx}
    if not members:
        return 0.0
    return oracle.gauge(members)


# --- 1. The search over totals on random spaces -------------------------------------------------------------------

RULES = {
    "n=1, k=85": Dominance(n=1, k=85), "n=1, k=50": Dominance(n=1, k=50), "n=2, k=85": Dominance(n=2, k=85),
    "n=2, k=60": Dominance(n=2, k=60), "n=3, k=90": Dominance(n=3, k=90), "p=10%": Dominance(p=10),
    "p=25%": Dominance(p=25), "n=2, k=85 and p=10%": Dominance(n=2, k=85, p=10),
    "n=4, k=95": Dominance(n=4, k=95), "n=2, k=50": Dominance(n=2, k=50), "p=50%": Dominance(p=50),
}
# (giants' share, taxpayers, most blocks, share of taxpayers whose amounts change sign, share of zero amounts)
MIXES = {
    "few giants": (0.08, (3, 13), 10, 0.45, 0.0),
    "more taxpayers": (0.06, (12, 26), 13, 0.45, 0.0),
    "mostly refunds and payments, zeros": (0.1, (4, 16), 9, 0.85, 0.1),
    "giants a million times the others": (0.15, (4, 14), 9, 0.45, 0.0),
}


def _random_space(rng: np.random.Generator, mix: tuple) -> tuple[list[list[int]], dict[int, dict[str, int]]]:
    """Cells (each a set of blocks) and per block each taxpayer's amount."""
    giants, (least, most), blocks_most, changing_share, zeros = mix
    giant_low, small_high = (100_000_000, 100) if giants == 0.15 else (10_000, 3_000)
    blocks = int(rng.integers(3, blocks_most))
    cells = int(rng.integers(2, 8))
    firms = int(rng.integers(least, most))
    vectors = [sorted({b for b in range(blocks) if rng.random() < rng.uniform(0.2, 0.7)}
                      or {int(rng.integers(blocks))}) for _ in range(cells)]
    amounts: dict[int, dict[str, int]] = {b: {} for b in range(blocks)}
    for f in range(firms):
        kind = rng.random()
        chosen = rng.choice(blocks, size=int(rng.integers(1, min(blocks, 4) + 1)), replace=False)
        giant = rng.random() < giants
        changing = rng.random() < changing_share
        for n, b in enumerate(chosen):
            amount = int(rng.integers(giant_low, giant_low * 20) if giant else rng.integers(1, small_high))
            if rng.random() < 0.1:
                amount = int(rng.choice([1000, 2000, 5000]))  # ties
            if changing and (n == 0 or rng.random() < 0.3):
                amount = -amount
            if kind < 0.1:  # refunds only
                amount = -abs(amount)
            if rng.random() < zeros:
                amount = 0
            amounts[int(b)][f"F{f}"] = amount
    return vectors, amounts


def _judge_space(seed: int, mix: tuple, rule_name: str) -> tuple[str, object]:
    """The auditor's verdict on one random space (``leak``, ``clean`` or ``too complex``) and the oracle's; a miss is
    a set the oracle finds dominant now (gauge past 1 + 1e-4) and more so than before (by 1e-3) while the auditor
    finds nothing."""
    from sandbox.audit.dominated_totals import first_dominated_total
    from sandbox.audit.linear import TooComplex, unsafe_space

    rng = np.random.default_rng(seed)
    vectors, amounts = _random_space(rng, mix)
    rule = RULES[rule_name]
    split = int(rng.integers(0, len(vectors))) if rng.random() < 0.5 else len(vectors) - 1
    columns = sorted({b for v in vectors for b in v})
    used = {b: amounts[b] for b in columns}

    def basis_of(chosen: list[list[int]]) -> list:
        return unsafe_space([{b: 1 for b in v} for v in chosen], set(columns), columns) if chosen else []

    try:
        found = first_dominated_total(basis_of(vectors), lambda: basis_of(vectors[:split]), used, rule, lambda: None)
        verdict = "leak" if found is not None else "clean"
    except TooComplex:
        verdict = "too complex"
    now = Oracle([set(v) for v in vectors], used)
    before = Oracle([set(v) for v in vectors[:split]], used) if split else None
    for weights, gauge in now.dominant_sets(rule.n, rule.k, rule.p, floor=1 + 1e-4):
        if gauge_of(before, weights) < gauge * (1 - 1e-3):
            return verdict, (vectors, split, amounts, weights, gauge)
    return verdict, None


@pytest.mark.parametrize("mix", list(MIXES), ids=list(MIXES))
def test_the_search_over_totals_misses_no_set_an_independent_programme_finds_dominant(mix):
    """Random spaces, eleven rules each (about 6 s a mix): no dominated total the oracle finds is missed, and the
    oracle finds dominated pairs, not only single giants (so the partner search is what is tested)."""
    seeds = {"few giants": range(1000, 1035), "more taxpayers": range(2000, 2014),
             "mostly refunds and payments, zeros": range(8000, 8030),
             "giants a million times the others": range(11000, 11028)}[mix]
    missed, sizes = [], set()
    for seed in seeds:
        for rule_name in RULES:
            verdict, witness = _judge_space(seed, MIXES[mix], rule_name)
            if witness is not None:
                sizes.add(len(witness[3]))
                if verdict == "clean":
                    missed.append((seed, rule_name, witness))
    assert not missed, missed[:3]
    assert {1, 2} <= sizes, sizes


def _offered_and_dominant(seed: int, mix: tuple, rule_name: str) -> tuple[set, list] | None:
    """Every set the search offers (``SetSearch.dominant`` with an ``accept`` that takes none, so the search runs to
    the end with every pruning step), and every set the oracle finds dominant (gauge past 1 + 1e-4) whose members
    each hold more than 1e-5 of some total (the search's order leaves out, by design, a taxpayer whose bound is
    under its margin: it adds nothing). None where the search gives up (which withholds)."""
    from sandbox.audit.dominance import SetSearch
    from sandbox.audit.dominated_totals import _Totals
    from sandbox.audit.linear import TooComplex, unsafe_space

    rng = np.random.default_rng(seed)
    vectors, amounts = _random_space(rng, mix)
    rule = RULES[rule_name]
    ordered = rule.n is None  # p% alone: the roles differ, a set is a sequence
    columns = sorted({b for v in vectors for b in v})
    used = {b: amounts[b] for b in columns}
    space = _Totals.of(unsafe_space([{b: 1 for b in v} for v in vectors], set(columns), columns), used)
    if space is None:
        return set(), []
    offered: set = set()

    def accept(signed: dict[int, float], gauge: float) -> bool:
        members = [space.entities[e] for e in signed]
        offered.add(tuple(members) if ordered else frozenset(members))
        return False

    try:
        for _ in SetSearch(space, lambda: None).dominant(rule, accept):
            pass
    except TooComplex:
        return None
    oracle = Oracle([set(v) for v in vectors], used)
    dominant = []
    for weights, gauge in oracle.dominant_sets(rule.n, rule.k, rule.p, floor=1 + 1e-4):
        members = [(name, 1.0 if w > 0 else -1.0) for name, w in weights.items()]
        if ordered and len(members) == 1:
            continue  # the search tries p% as pairs (a lone first one is dominant with any second)
        if any(gauge_of(oracle, {name: sign}) <= 1e-5 for name, sign in members):
            continue
        dominant.append((tuple(members) if ordered else frozenset(members), gauge))
    return offered, dominant


@pytest.mark.parametrize("mix", list(MIXES), ids=list(MIXES))
def test_every_set_some_total_shows_dominant_is_offered_by_the_search(mix):
    """Set by set, not only leak or none (about 4 s a mix): with nothing accepted the search runs through every set
    its bounds leave (block test, set bound, duals, group programmes), and each set the oracle finds dominant must
    be among them. A pruning step that drops a dominant set is caught here even where another leak hides it from
    the test above (a dual bound that divides by P_c + |a| for every partner, not only for those whose amounts
    change sign, fails both)."""
    seeds = {"few giants": range(1000, 1022), "more taxpayers": range(2000, 2006),
             "mostly refunds and payments, zeros": range(8000, 8018),
             "giants a million times the others": range(11000, 11015)}[mix]
    missing, checked = [], 0
    for seed in seeds:
        for rule_name, rule in RULES.items():
            if rule.n is not None and rule.p is not None:
                continue  # both rules: a set is checked under each alone
            found = _offered_and_dominant(seed, MIXES[mix], rule_name)
            if found is None:
                continue
            offered, dominant = found
            checked += len(dominant)
            missing += [(seed, rule_name, members, gauge) for members, gauge in dominant if members not in offered]
    assert not missing, missing[:5]
    assert checked > 50, checked


# --- 2. End to end: guard, engine, auditor and release on random data with refunds -----------------------------

STREETS = ["320102001", "320102002", "320102003"]
INDUSTRIES = ["51", "52", "65"]
MONTHS = [dt.date(2025, m, 1) for m in range(1, 5)]
GRANTS = {  # the grant's disclosure rule, as written, and as the oracle takes it
    "n=1, k=60": ("dominance: {n: 1, k: 60}", Dominance(n=1, k=60)),
    "n=2, k=85": ("dominance: {n: 2, k: 85}", Dominance(n=2, k=85)),
    "n=3, k=90": ("dominance: {n: 3, k: 90}", Dominance(n=3, k=90)),
    "n=2, k=85 and p=10%": ("dominance: {n: 2, k: 85}, p_percent: 10", Dominance(n=2, k=85, p=10)),
    "n=1, k=85 and p=25%": ("dominance: {n: 1, k: 85}, p_percent: 25", Dominance(n=1, k=85, p=25)),
}
GROUPABLE = ("street_code", "industry_code", "period")


def _declarations(rng: np.random.Generator, path: Path, cancel: float) -> tuple[list[tuple], dict[str, list]]:
    """A data file of random declarations (taxpayer, month, street, industry, VAT); the values each key takes."""
    streets = STREETS[:int(rng.integers(2, 4))]
    industries = INDUSTRIES[:int(rng.integers(2, 4))]
    months = MONTHS[:int(rng.integers(2, 5))]
    rows = []
    for f in range(int(rng.integers(5, 26))):
        giant, refunds = rng.random() < 0.15, rng.random() < 0.4
        place = (streets[int(rng.integers(len(streets)))], industries[int(rng.integers(len(industries)))])
        places = [place]
        if rng.random() < 0.3:  # a second site, or a change of industry
            places.append((streets[int(rng.integers(len(streets)))], industries[int(rng.integers(len(industries)))]))
        if rng.random() < cancel and len(months) > 1:  # a giant whose payment and refund about cancel
            first, second = rng.choice(len(months), size=2, replace=False)
            amount = int(rng.integers(20_000, 300_000))
            rows.append((f"T{f:03d}", months[first], *places[0], amount))
            rows.append((f"T{f:03d}", months[second], *places[-1], -int(amount * rng.uniform(0.85, 1.15))))
            continue
        for month in months:
            if rng.random() < 0.25:
                continue
            amount = int(rng.integers(20_000, 300_000) if giant else rng.integers(100, 5_000))
            if refunds and rng.random() < 0.4:
                amount = -amount
            rows.append((f"T{f:03d}", month, *places[int(rng.integers(len(places)))], amount))
    _write_declarations(path, rows)
    return rows, {"street_code": streets, "industry_code": industries, "period": months}


def _write_declarations(path: Path, rows) -> Path:
    """A data file whose tax.declarations (the demo's columns) holds ``rows`` of (taxpayer_id, period,
    street_code, industry_code, vat_paid), all in Xuanwu; the other columns hold one fixed value."""
    with duckdb.connect(str(path)) as connection:
        create_declarations_table(connection)
        connection.executemany("INSERT INTO tax.declarations VALUES "
                               "(?, ?, ?, ?, ?, 'X', '173', 'small', 0, ?, 0, 0, 1)",
                               [(t, p, XUANWU, s, i, v) for t, p, s, i, v in rows])
    return path


def _queries(rng: np.random.Generator, values: dict[str, list], count: int) -> list[tuple[list[str], dict]]:
    """Random GROUP BY queries: some of the three keys grouped, others filtered by IN lists."""
    queries = []
    for _ in range(count):
        group = [c for c in GROUPABLE if rng.random() < 0.5]
        where = {}
        for c in GROUPABLE:
            if c not in group and rng.random() < 0.3:
                size = int(rng.integers(1, len(values[c]) + 1))
                chosen = sorted({int(i) for i in rng.choice(len(values[c]), size=size)})
                where[c] = [values[c][i] for i in chosen]
        queries.append((group, where))
    return queries


def _sql(group: list[str], where: dict) -> str:
    def literal(column: str, value) -> str:
        return f"DATE '{value.isoformat()}'" if column == "period" else f"'{value}'"

    text = f"SELECT {', '.join([*group, 'SUM(vat_paid)'])} FROM tax.declarations"
    if where:
        text += " WHERE " + " AND ".join(f"{c} IN ({', '.join(literal(c, v) for v in vs)})" for c, vs in where.items())
    return text + (" GROUP BY " + ", ".join(group) if group else "")


def _report(seed: int, grant: str, *, queries: int, cancel: float, audited: bool = True
            ) -> tuple[list[tuple], list[tuple[dict, dict]], int]:
    """One random report through the guard, the engine, the auditor and the release: the declarations, the
    released cells (each as the keys it fixes and the query's filters) and how many cells the audit took."""
    from dsbroker.guard import guard
    from sandbox.audit.auditor import Auditor
    from sandbox.disclosure.release import release
    from sandbox.engine.duckdb_engine import DuckDBEngine
    from sandbox.engine.interface import EngineLimits
    from sandbox.ledgers.released_cells import ReleasedCellLedger

    rng = np.random.default_rng(seed)
    rule_text, _ = GRANTS[grant]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "owner.duckdb"
        rows, values = _declarations(rng, path, cancel)
        text = (POLICIES / f"{GRANT}.yaml").read_text(encoding="utf-8")
        assert DISCLOSURE in text
        policy = parse_policy(text.replace(DISCLOSURE, f"disclosure: {{min_entities: {int(rng.integers(2, 4))}, "
                                                      f"{rule_text}}}"), source="attack")
        engine = DuckDBEngine(str(path), EngineLimits())
        auditor = Auditor(engine, ReleasedCellLedger(Path(tmp) / "released.sqlite"))
        released, taken = [], 0
        try:
            for group, where in _queries(rng, values, queries):
                guarded = guard(_sql(group, where), policy, district=XUANWU, department="xuanwu-fgw")
                result = engine.execute(guarded.sql, timeout_s=60, max_rows=10_000)
                session = auditor.session(guarded, deadline=time.monotonic() + 120) if audited else None
                answer = release(result.names, result.types, result.rows, guarded, audit=session)
                taken += answer.counts.get("audit", 0)
                released.extend((dict(zip(group, row[:len(group)], strict=True)), where)
                                for row in answer.rows if row[-1] is not None)
        finally:
            engine.close()
    return rows, released, taken


def _dominated_in_report(rows: list[tuple], released: list[tuple[dict, dict]], rule: Dominance) -> list:
    """The oracle over the atoms street x industry x month: the sets dominant (gauge past 1 + 1e-4) in some total of
    the released cells."""
    atoms = sorted({(s, i, m) for _, m, s, i, _ in rows})
    at = {a: j for j, a in enumerate(atoms)}
    amounts: dict[int, dict[str, int]] = {}
    for taxpayer, month, street, industry, vat in rows:
        block = amounts.setdefault(at[(street, industry, month)], {})
        block[taxpayer] = block.get(taxpayer, 0) + vat
    cells = []
    for keys, where in released:
        atoms_of = {j for (s, i, m), j in at.items()
                    if all({"street_code": s, "industry_code": i, "period": m}[c] == v for c, v in keys.items())
                    and all({"street_code": s, "industry_code": i, "period": m}[c] in vs for c, vs in where.items())}
        if atoms_of:
            cells.append(atoms_of)
    if not cells:
        return []
    return Oracle(cells, amounts).dominant_sets(rule.n, rule.k, rule.p, floor=1 + 1e-4)


# (seed, grant, queries, share of giants whose payment and refund about cancel)
REPORTS = [(seed, grant, 6 if seed % 2 else 10, 0.1 if seed % 3 else 0.0)
           for seed, grant in zip(range(100, 130), itertools.cycle(GRANTS))]


def test_random_reports_on_refund_data_release_no_dominated_total():
    """30 random reports (about 12 s): no set of taxpayers is dominant, under the grant's rule, in any total
    of the cells the audited release gave; and the audit did take cells (it is not that nothing was at risk)."""
    leaks, taken = [], 0
    for seed, grant, queries, cancel in REPORTS:
        rows, released, withheld = _report(seed, grant, queries=queries, cancel=cancel)
        taken += withheld
        found = _dominated_in_report(rows, released, GRANTS[grant][1])
        if found:
            leaks.append((seed, grant, found[:2]))
    assert not leaks, leaks
    assert taken > 0


def test_the_report_oracle_is_not_vacuous():
    """Without the audit, the same random reports give dominated totals away (the oracle above would see a leak)."""
    found = 0
    for seed, grant, queries, cancel in REPORTS[:8]:
        rows, released, _ = _report(seed, grant, queries=queries, cancel=cancel, audited=False)
        found += bool(_dominated_in_report(rows, released, GRANTS[grant][1]))
    assert found >= 3, found


# --- 4. A leak found end to end (fixed): cells whose rows never meet, added up where a refund cancels -----------

JANUARY_52 = "SELECT industry_code, SUM(vat_paid) FROM tax.declarations WHERE period IN (DATE '2025-01-01') GROUP BY 1"
FEBRUARY_MARCH = "SELECT SUM(vat_paid) FROM tax.declarations WHERE period IN (DATE '2025-02-01', DATE '2025-03-01')"
CANCELLING = [  # (taxpayer, month, street, industry, VAT): T000 is refunded in January and pays in February and March
    ("T000", dt.date(2025, 1, 1), "320102001", "52", -1763), ("T000", dt.date(2025, 2, 1), "320102001", "52", 4022),
    ("T000", dt.date(2025, 3, 1), "320102001", "52", 4397), ("T001", dt.date(2025, 1, 1), "320102001", "52", 4239),
    ("T001", dt.date(2025, 2, 1), "320102001", "52", 690), ("T001", dt.date(2025, 3, 1), "320102001", "52", 3761),
    ("T002", dt.date(2025, 3, 1), "320102003", "51", 4629), ("T003", dt.date(2025, 1, 1), "320102002", "52", 3395),
    ("T003", dt.date(2025, 2, 1), "320102002", "52", 1995), ("T004", dt.date(2025, 2, 1), "320102003", "52", 49599),
    ("T004", dt.date(2025, 3, 1), "320102003", "52", -50022),
]


def test_two_cells_whose_rows_never_meet_do_not_add_up_to_a_dominated_total(tmp_path):
    """Found by the end-to-end check above (seed 778, with payments and refunds that cancel), cut down to two
    queries under the shipped rule (n=2, k=85), min_entities 2.

    Cell 1, industry 52 in January: T000 -1,763 (a refund), T001 4,239, T003 3,395; the two largest hold 81% of the
    magnitude 9,397: released. Cell 2, every declaration of February and March: T000 8,419, T001 4,451, T002 4,629,
    T003 1,995, T004 -423; the two largest hold 66%: released. Cell 1 plus 0.2094 times cell 2 (weights of one
    sign: a total) cancels T000's net: T001 5,171, T003 3,813, T002 969, T004 -89, so T001 and T003 hold 89.5% of
    it, which the rule withholds (the two of them can estimate each other from it). The search over totals finds
    exactly this pair in these two cells (sandbox/audit/dominated_totals.py, first_dominated_total, new code and
    old). But the audit of cell 2 never sees cell 1: the two coverages (period = January, period IN February and
    March) cannot meet, so sandbox/audit/components.py puts them in separate parts and Auditor.audit reads only
    the answer's part (``relevant``), on the claim "two parts that pass the rules pass together". That holds for
    the count threshold, and for dominance where every taxpayer's amounts have one sign (a total's shares are
    weighted means of its parts'), not where a taxpayer is refunded in one part and pays in the other: its nets
    cancel in the total and the others' shares grow.

    Fixed in Auditor.audit: where the dominance rule is on and a summed measure is negative in some row of the
    dataset, every part is audited together (the parts still serve data without refunds, and the threshold)."""
    from dsbroker.guard import guard
    from sandbox.audit.auditor import Auditor
    from sandbox.disclosure.release import release
    from sandbox.engine.duckdb_engine import DuckDBEngine
    from sandbox.engine.interface import EngineLimits
    from sandbox.ledgers.released_cells import ReleasedCellLedger

    path = _write_declarations(tmp_path / "owner.duckdb", CANCELLING)
    text = (POLICIES / f"{GRANT}.yaml").read_text(encoding="utf-8")
    policy = parse_policy(text.replace(DISCLOSURE, "disclosure: {min_entities: 2, dominance: {n: 2, k: 85}}"),
                          source="attack")
    engine = DuckDBEngine(str(path), EngineLimits())
    auditor = Auditor(engine, ReleasedCellLedger(tmp_path / "released.sqlite"))
    released = []
    try:
        for sql, where in ((JANUARY_52, {"period": [dt.date(2025, 1, 1)]}),
                           (FEBRUARY_MARCH, {"period": [dt.date(2025, 2, 1), dt.date(2025, 3, 1)]})):
            guarded = guard(sql, policy, district=XUANWU, department="xuanwu-fgw")
            result = engine.execute(guarded.sql, timeout_s=60, max_rows=100)
            plain = release(result.names, result.types, result.rows, guarded)
            assert all(row[-1] is not None for row in plain.rows)  # each cell passes the cell rules alone
            answer = release(result.names, result.types, result.rows, guarded,
                             audit=auditor.session(guarded, deadline=time.monotonic() + 60))
            group = ["industry_code"] if "GROUP BY" in sql else []
            released.extend((dict(zip(group, row[:len(group)], strict=True)), where)
                            for row in answer.rows if row[-1] is not None)
    finally:
        engine.close()
    # The oracle: the released cells give no total that the two largest dominate.
    assert not _dominated_in_report(CANCELLING, released, Dominance(n=2, k=85)), released


class _CountingEngine:
    """A real DuckDB engine that counts the statements it runs (to see which audits ask whether amounts change
    sign); everything else is the engine's own."""

    def __init__(self, engine) -> None:
        self.engine, self.statements = engine, []

    def execute(self, sql: str, **limits):
        self.statements.append(sql)
        return self.engine.execute(sql, **limits)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def _owner(path: Path, rows) -> Path:
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE SCHEMA tax")
        connection.execute("CREATE TABLE tax.declarations (vat_paid BIGINT, revenue BIGINT)")
        connection.executemany("INSERT INTO tax.declarations VALUES (?, ?)", rows)
    return path


def test_whether_amounts_change_sign_is_asked_once_while_the_file_is_the_same(tmp_path):
    """The question behind auditing every part together costs a scan per audit: a yes is kept for good (it only
    audits more together), a no while the engine vouches that the data file is the same."""
    from sandbox.audit.auditor import Auditor
    from sandbox.engine.duckdb_engine import DuckDBEngine
    from sandbox.ledgers.released_cells import ReleasedCellLedger

    for rows, negative in (([(5, 1), (7, 2)], False), ([(5, 1), (-7, 2)], True)):
        path = _owner(tmp_path / f"owner-{negative}.duckdb", rows)
        engine = _CountingEngine(DuckDBEngine(str(path)))
        auditor = Auditor(engine, ReleasedCellLedger(tmp_path / f"released-{negative}.sqlite"))
        try:
            for _ in range(3):
                assert auditor._may_change_sign("tax.declarations", ["sum:vat_paid", "rows"],
                                                time.monotonic() + 60) is negative
            assert len(engine.statements) == 1, engine.statements
            assert not auditor._may_change_sign("tax.declarations", ["sum:revenue"], time.monotonic() + 60)
        finally:
            engine.close()


def test_a_measure_name_that_is_not_an_identifier_is_never_put_into_sql(tmp_path):
    """The statistics' names come from the ledger too (a file on the owner's side): a name that is no plain
    identifier is taken as a measure that may change sign, and no statement is built from it."""
    from sandbox.audit.auditor import Auditor
    from sandbox.engine.duckdb_engine import DuckDBEngine
    from sandbox.ledgers.released_cells import ReleasedCellLedger

    engine = _CountingEngine(DuckDBEngine(str(_owner(tmp_path / "owner.duckdb", [(5, 1)]))))
    auditor = Auditor(engine, ReleasedCellLedger(tmp_path / "released.sqlite"))
    try:
        assert auditor._may_change_sign("tax.declarations", ["sum:vat_paid) OR (1 = 1"], time.monotonic() + 60)
        assert auditor._may_change_sign("tax.declarations; SELECT 1", ["sum:vat_paid"], time.monotonic() + 60)
        assert engine.statements == []
    finally:
        engine.close()
