"""The released-cell auditor: no combination of released cells pins a taxpayer.

Each exact answer's cells pass the cell rules one by one (the threshold, the dominance rule, secondary
suppression within a table). Differences of cells of different answers are not checked by those rules: a
street's total less the same street without one industry is that industry's part, one firm if it is
alone there. Before an answer leaves, the auditor takes every cell released before in the scope (the
dataset, across grants and departments; ``sandbox.ledgers.released_cells``) together with the answer's
cells and asks whether some combination of them is the total of rows that fail the cell rules: this is
query auditing (Chin and Ozsoyoglu, "Auditing and inference control in statistical databases", 1982),
with the cell rules of statistical disclosure control (tau-ARGUS's primary rules) deciding what is
protected.

On the blocks (``sandbox.audit.blocks``), for every statistic at once (a cell's rows count, each measure's
sum and count of values and its distinct entities are one unknown per block, since statistics can be equal in
the data and differenced across):

1. each released cell is the set of blocks it adds up; blocks no cell separates are merged;
2. a merged block *fails* when, as a cell, the rules would withhold it: 0 < entities < k, for a sum
   0 < contributors < k, or its largest contributors dominate it;
3. a total that takes a passing block passes the threshold too (its entities and contributors only grow), so
   for the threshold only combinations of released cells that are zero on every passing block can be a failing
   total (the dominance rule is judged on totals of every block as well: below). They form a
   space (:mod:`sandbox.audit.linear`), and every combination in it, whatever its weights, is judged by two
   searches: one on blocks that hold fewer than k contributing taxpayers among them is a leak (a firm's two
   years as 2 * 2025 + 2026, one firm plus twice another, one small cell less another; contributors counted per
   statistic, so dormant firms that declare 0 are no cover for a sum; :mod:`sandbox.audit.few`), and so is one
   whose taxpayers' net amounts the dominance rule would withhold (a dominated remainder, a giant's growth, a
   giant's block less a small block of others; :mod:`sandbox.audit.dominance`). A block that no entity
   contributes to (a sum of zeros) passes alone but adds nothing to a union, so it is counted with the failing
   blocks here. A remainder of many taxpayers that no taxpayer dominates, as a street's total less its
   published industries is, is released. Where a stale cell takes part (below) the space's totals and
   differences are also enumerated (:func:`sandbox.audit.linear.totals`);
4. a leak the answer's cells cause (not one that cells released before already allowed; where some were
   released under laxer rules than the answer's grant's, the answer also passes the audit without them:
   :meth:`Rules.within`) is closed by
   withholding the answer's cells (every statistic of each) that take part in it, one at a time in the order
   of their keys, until none is left, and then giving back those that turn out not to be needed. A cell
   released before with each of its statistics, at the same value, is never withheld: it tells nothing new.
   Which blocks fail is decided by the statistics of the cells that would leave, and what the cells before
   gave by the statistics they released. If withholding cannot close
   it the query is refused.

A total that takes a passing block beside a dominated one (a street less its released industries: a giant's
industry and a small one) is judged by a third search, over every combination whose block weights have one sign
(:mod:`sandbox.audit.dominated_totals`). What this does not do, and the README says so: a difference of passing
blocks (a street's year over year change) is not judged; the rows an
answer leaves out by HAVING or LIMIT tell an inequality, which is not modelled (only the rows the caller
receives are recorded); a secure sum over partitions is not audited (each sandbox holds a part of
every cell). Distinct counts, which are not additive over blocks, are audited once more over classes of
entities (:func:`entity_classes`).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterator, Mapping, Protocol

from dsbroker.errors import DsbrokerError
from dsbroker.guard import GuardedQuery
from dsbroker.guard import release_plan
from dsbroker.guard.release_plan import CellPlan
from dsbroker.policy.model import Dominance
from sandbox.audit.blocks import BlockCache, Blocks, Contribution
from sandbox.audit.components import Parts
from sandbox.audit.dominance import first_dominated
from sandbox.audit.dominated_totals import amounts_change_sign, first_dominated_total
from sandbox.audit.few import few_taxpayer_leaks
from sandbox.audit.linear import AuditCheck, Echelon, Row, TooComplex, Vector, supported_on, totals, unsafe_space
from sandbox.ledgers.released_cells import ReleasedCell, ReleasedCellLedger, fixed_positions


@dataclass(frozen=True)
class AnswerCell:
    """One row of the answer's cell table as disclosure control would release it: its position, how many
    leading keys it fixes, their values, the statistics released in it (by index) and their values."""

    row: int
    fixed: int  # which keys: sandbox.ledgers.released_cells.fixed_code
    keys: tuple
    statistics: frozenset[int]
    values: tuple[tuple[int, Any], ...] = ()  # (statistic index, value) of each released statistic

    def value(self, index: int) -> Any:
        """The value of released statistic ``index``."""
        for released, value in self.values:  # a cell releases a few statistics: a scan beats building a dict
            if released == index:
                return value
        raise KeyError(index)


_MISSING = object()
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Audit(Protocol):
    """One answer's audit: asked about the cells the rules release, it says which statistics it withholds
    (per answer row); then told which rows the caller receives, it records their cells as released."""

    def __call__(self, cells: list[AnswerCell]) -> dict[int, frozenset[int]]: ...

    def commit(self, rows: set[int]) -> None: ...


def statistics_read(plan: CellPlan) -> set[int]:
    """The statistics an answer reveals something of: those its outputs, HAVING and ORDER BY read (less terms
    of coefficient 0 inside a SUM, ``SUM(x * 0)``, which are 0 whatever the data)."""
    return ({i for o in plan.outputs for i in _revealed(o.node)} | _revealed(plan.having)
            | {i for o in plan.order for i in _revealed(o.node)})


def _revealed(node: release_plan.Node | None) -> set[int]:
    # A term of coefficient 0 inside one SUM is computed exactly as 0 whatever the data. Anything else that reads
    # a statistic may show something of it, even times 0: an intermediate that overflows to NULL depends on it.
    if isinstance(node, release_plan.Linear):
        return {index for coefficient, index in node.terms if coefficient}
    if isinstance(node, release_plan.Call):
        return set().union(*(_revealed(arg) for arg in node.args))
    return release_plan.statistics_read(node)


def statistic_name(plan: CellPlan, index: int) -> str | None:
    """The auditor's name of statistic ``index``; None for MIN and MAX, which the grant releases as one entity's
    value by design (``min_max``) and which are not totals."""
    statistic = plan.statistics[index]
    if statistic.kind in ("entities", "rows"):
        return statistic.kind
    if statistic.kind in ("sum", "count"):
        return f"{statistic.kind}:{statistic.measure}"
    return None


@dataclass(frozen=True)
class Rules:
    """The cell rules that decide what is protected: the threshold k and the dominance rule."""

    k: int
    dominance: Dominance | None

    def text(self) -> str:
        """The rules as the ledger records them with each cell released under them (canonical JSON)."""
        dominance = self.dominance
        return json.dumps({"min_entities": self.k, "dominance": None if dominance is None else
                           {"n": dominance.n, "k": dominance.k, "p": dominance.p}}, sort_keys=True)

    def within(self, recorded: frozenset[str]) -> bool:
        """Whether some rules in ``recorded`` (:meth:`text`) withhold every cell these rules withhold: a cell
        released under them is then known before to a department under these. What a laxer grant received is
        not: its cells pass rules these are stricter than."""
        return any(_at_least_as_strict(text, self) for text in recorded)


@functools.lru_cache(maxsize=256)
def _at_least_as_strict(text: str, rules: Rules) -> bool:
    """Whether the rules recorded as ``text`` withhold every cell ``rules`` withhold. Sufficient, not necessary:
    a larger threshold, an (n, k) rule over as many or more contributors at as low or a lower share, a p% rule of
    as high or a higher p; rules not comparable so (or unreadable text) are taken as laxer."""
    try:
        recorded = json.loads(text)
        if not isinstance(recorded, dict) or type(recorded.get("min_entities")) is not int:  # noqa: E721
            return False
        if recorded["min_entities"] < rules.k:
            return False
        wanted, held = rules.dominance, recorded.get("dominance")
        if wanted is None:
            return True
        if not isinstance(held, dict):
            return False
        if wanted.n is not None and wanted.k is not None and not (
                held.get("n") is not None and held.get("k") is not None
                and held["n"] >= wanted.n and held["k"] <= wanted.k):
            return False
        return wanted.p is None or (held.get("p") is not None and held["p"] >= wanted.p)
    except (TypeError, ValueError):
        return False


class Auditor:
    """Audits exact answers against what has been released in their scope, and records what they release."""

    def __init__(self, engine: Any, ledger: ReleasedCellLedger, *, clock: Callable[[], float] = time.monotonic,
                 on_seconds: Callable[[float], None] = lambda _: None):
        """``on_seconds`` hears how long each audit and each record of released cells took (the metrics)."""
        self.engine = engine
        self.on_seconds = on_seconds
        self.ledger = ledger
        self.clock = clock
        self._locks: dict[str, threading.Lock] = {}
        self._parts: dict[str, Parts] = {}  # per scope, the coverages whose rows can meet (under its lock)
        self._blocks = BlockCache()
        self._guard = threading.Lock()
        # Per (dataset, measure): a negative amount seen (kept for good), and the data stamp under which none was.
        self._negative: set[tuple[str, str]] = set()
        self._positive: dict[tuple[str, str], Any] = {}
        # The search work the last audit spent, per pool (AuditCheck.spent): what a test or a benchmark can read to
        # see how near the budget an answer came, without timing it.
        self.last_work: dict[str, int] = {}

    @contextlib.contextmanager
    def lock(self, scope: str) -> Iterator[None]:
        """Serialise a scope's audits, in this process and with every other sandbox sharing the ledger: two
        answers audited at once could each pass alone."""
        with self._guard:
            local = self._locks.setdefault(scope, threading.Lock())
        with local, self.ledger.exclusive():
            yield

    def audit(self, guarded: GuardedQuery, cells: list[AnswerCell], *, deadline: float) -> dict[int, frozenset[int]]:
        """Per answer row, the statistics (by index) the audit withholds. What then leaves is recorded by
        :meth:`record` (through an :class:`AuditSession`).

        The caller holds :meth:`lock` for the scope from this call until the answer's cells are recorded."""
        plan = guarded.cells
        scope = guarded.dataset
        rules = Rules(guarded.min_entities, guarded.dominance)
        self.last_work = {}
        new = [(cell, name) for cell in cells for index in sorted(cell.statistics)
               if (name := statistic_name(plan, index)) is not None]
        if not new:
            return {}
        held = self.ledger.held(scope)
        verdicts: dict[frozenset[str], bool] = {}  # few distinct sets of rules: each judged once per audit

        def as_strict(recorded: frozenset[str]) -> bool:
            verdict = verdicts.get(recorded)
            if verdict is None:
                verdict = verdicts[recorded] = rules.within(recorded)
            return verdict

        def strictly_known(key: tuple) -> ReleasedCell | None:
            cell = held.get(key)
            return cell if cell is not None and as_strict(cell.rules) else None

        if _repeats(guarded, new, strictly_known):
            return {}  # every cell was released before with this very value, under rules as strict: nothing new
        released = list(held.values())
        # Only the coverages whose rows can meet this answer's, directly or through others (sandbox.audit.components).
        parts = self._parts.setdefault(scope, Parts(self.engine.dialect))
        for coverage in dict.fromkeys(c.coverage for c in released):
            parts.add(coverage)
        relevant = set(parts.with_(guarded.coverage))
        # "Two parts that pass the rules pass together" holds for the threshold, and for the dominance rule only where
        # no taxpayer's amounts change sign: a refund in one part and payments in another cancel in a total of both
        # (weights of one sign), and the others' shares grow past the rule though each part passes. So where the
        # dominance rule is on and a summed measure has a negative amount anywhere in the dataset, every part is
        # audited together (tests/test_attack_refunds.py).
        if rules.dominance is not None and any(c.coverage not in relevant for c in released) and \
                self._may_change_sign(guarded.dataset, [c.statistic for c in released] + [n for _, n in new],
                                      deadline):
            relevant = {c.coverage for c in released} | {guarded.coverage}
        released = [c for c in released if c.coverage in relevant]
        coverages = list(dict.fromkeys([c.coverage for c in released] + [guarded.coverage]))
        measures = sorted({name.split(":", 1)[1] for name in [c.statistic for c in released] + [n for _, n in new]
                           if ":" in name})
        timeout = deadline - self.clock()
        if timeout <= 0:
            raise DsbrokerError("the query ran past its deadline and was stopped", reason="QUERY_TIMEOUT")
        blocks = self._blocks.read(self.engine, coverages, dataset=guarded.dataset, entity=guarded.entity,
                                   measures=measures, timeout_s=timeout)
        # Blocks read for every coverage serve the audit of fewer: each system merges the blocks its own cells do
        # not separate (merged_blocks), so the finer partition changes no judgement.
        members = Membership(blocks, coverages)
        # One budget of search work for the whole audit, both decisions below included: a laxer grant's cells in
        # the scope make a second decision, which must not double what an answer may cost the sandbox.
        check = AuditCheck(lambda: self._check(deadline))
        self.last_work = check.spent
        withheld = self._decide(guarded, new, released, held.get, blocks, members, coverages, deadline, check)
        # Known before to a department is what was released under rules at least as strict as its grant's: what a
        # laxer grant received (a total of six firms, under min_entities 5) would otherwise be "known before" to a
        # grant under 10, free to repeat and to difference. So the answer must also pass the audit without them;
        # the first audit, with every cell, stays (a department may be given, by a laxer one, cells any grant may
        # see). Withholding more never leaks more, so the union of what either withholds is safe for both.
        within = [cell for cell in released if as_strict(cell.rules)]
        if len(within) < len(released):
            known = {c.key: c for c in within}
            for row, statistics in self._decide(guarded, new, within, known.get, blocks, members, coverages,
                                                deadline, check).items():
                withheld[row] = withheld.get(row, frozenset()) | statistics
        return withheld

    def _decide(self, guarded: GuardedQuery, new: list[tuple[AnswerCell, str]], released: list[ReleasedCell],
                known: Callable[[tuple], ReleasedCell | None], blocks: Blocks, members: Membership,
                coverages: list[str], deadline: float, check: AuditCheck) -> dict[int, frozenset[int]]:
        """Per answer row, the statistics to withhold so that the answer's cells, with ``released`` (the cells
        released before that count as known, each found by ``known`` from its key), give no leak."""
        plan = guarded.cells
        rules = Rules(guarded.min_entities, guarded.dominance)
        if _repeats(guarded, new, known):
            return {}  # every cell was released before with this very value: the answer tells nothing new
        current = coverages.index(guarded.coverage)
        # One system for every statistic: a cell is one unknown per block whatever it counts or adds up, since
        # statistics can be equal in the data (COUNT(m) and COUNT(*) where m is never NULL, SUM of a measure that
        # is always 1, a total that is the sum of other measures), and differencing across them would otherwise
        # go unseen. A block fails when it fails for any statistic released in the scope.
        statistics = sorted({c.statistic for c in released} | {name for _, name in new})
        memo = JudgeMemo()
        judge = Judge(blocks, statistics, rules, guarded.dataset,
                      _released_at(members, coverages, released, current, new), memo)
        judges: dict[frozenset[int], Judge] = {}

        def judge_for(leaving: list[AnswerCell]) -> Judge:
            """The judge where only ``leaving`` of the answer's cells leave: their statistics, with those released
            before, decide which blocks fail (a withheld CIT cell makes no block fail for CIT)."""
            key = frozenset(cell.row for cell in leaving)
            if key not in judges:
                rows = set(key)
                judges[key] = Judge(blocks, statistics, rules, guarded.dataset, _released_at(
                    members, coverages, released, current, [(cell, name) for cell, name in new if cell.row in rows]),
                    memo)
            return judges[key]

        # What the cells released before gave is judged by the statistics they released: a block that fails for
        # the answer's CIT sum was no leak when only revenue sums had been released over it.
        judged_before = Judge(blocks, sorted({c.statistic for c in released}) or statistics, rules, guarded.dataset,
                              _released_at(members, coverages, released, current, []), memo)
        # A cell released before whose value is not what it is on the data now (a late declaration, an
        # amendment) is no equation of today's blocks: the change would be its value now less the one released.
        # Such a *stale* cell must not become derivable from what is released now.
        valid: dict[tuple, frozenset[int]] = {}
        stale: dict[tuple, frozenset[int]] = {}
        for cell in released:
            key = (cell.coverage, cell.fixed, cell.keys)
            rows = members.cell(members.place[cell.coverage], cell.fixed, cell.keys)
            if key in stale or judge.value(rows, cell.statistic) != cell.value:
                stale[key] = rows
                valid.pop(key, None)
            else:
                valid[key] = rows
        answer = list(dict.fromkeys(cell for cell, _ in new))

        def released_before(cell: AnswerCell) -> bool:
            """Whether each statistic of the cell was released before at its keys, with this very value (a cell
            released as a revenue sum tells nothing of its CIT sum)."""
            key = (guarded.coverage, cell.fixed, cell.keys)
            return key in valid and all(
                getattr(known((*key, name)), "value", _MISSING) == cell.value(i)
                for i in sorted(cell.statistics) if (name := statistic_name(plan, i)) is not None)

        candidates = [(cell, members.cell(current, cell.fixed, cell.keys)) for cell in answer
                      if not released_before(cell)]
        # Stale cells stay equations of the system (their values still hold for every row that did not change,
        # and a department may know which rows those are), and each is also a target (see _stale_leaks).
        old_rows = list(valid.values()) + list(stale.values())
        old_statistics = _statistics_of(released, [*valid, *stale])
        order = _details_first if plan.totals and not plan.rollup else _by_keys
        withheld = {cell.row: cell.statistics
                    for cell in _withhold(old_rows, candidates, judge, stale=len(stale),
                                          check=check, judged_before=judged_before,
                                          judge_for=judge_for, old_statistics=old_statistics,
                                          statistics_of=lambda cell: _names(plan, cell), order=order)}
        # Distinct counts once more, exactly: over classes of entities by the distinct-count cells they are in,
        # every such cell is the sum of its classes' sizes, so a difference of two (59 taxpayers in 24 months
        # less 58 in 23: one taxpayer declares only in the 24th) is a derivable class of too few.
        # A count of rows or values takes part where it counts taxpayers: where each taxpayer in its cell has as
        # many as every other (58 declarations in month 1, one each, less 59 taxpayers in the year is the same
        # leak). Stale cells stay, as above. Sums do not (a sum that equals a distinct count is not modelled).
        if any(_counts(c.statistic) for c in released) or any(_counts(name) for _, name in new):
            rest = [(cell, rows) for cell, rows in candidates if cell.row not in withheld]
            for cell in self._distinct_counts(guarded, blocks, released, valid, stale, rest, deadline):
                withheld[cell.row] = cell.statistics
        return withheld

    def _distinct_counts(self, guarded: GuardedQuery, blocks: Blocks, released: list[ReleasedCell],
                         valid: dict[tuple, frozenset[int]], stale: dict[tuple, frozenset[int]],
                         candidates: list[tuple[AnswerCell, frozenset[int]]], deadline: float) -> list[AnswerCell]:
        """The answer's cells to withhold for the audit over classes of entities (see :meth:`audit`)."""
        plan = guarded.cells

        # A count is an equation of classes where it counts taxpayers: COUNT(DISTINCT), or a count of rows or of
        # values where every taxpayer in its rows has as many as every other (each declares once, or twice: the
        # count is that many times the number of taxpayers). Another count tells how many rows or values, which
        # the block system audits; taken as a count of taxpayers it would also excuse, as "known before", the
        # distinct counts asked after it. Counts that are equations join the class audit whenever they are
        # released, a distinct count or not.
        def equation(statistic: str | None, rows: frozenset[int]) -> bool:
            if statistic == "entities":
                return True
            if not _counts(statistic):
                return False
            at = None if statistic == "rows" else blocks.measures.index(statistic.split(":", 1)[1])
            per_entity: dict[Any, int] = {}
            for block in rows:
                for entity, part in blocks.contributions[block].items():
                    per_entity[entity] = per_entity.get(entity, 0) + (part[0] if at is None else part[2][at])
            return len(set(per_entity.values())) <= 1 and 0 not in per_entity.values()

        rows_of = {**valid, **stale}
        counts = {(c.coverage, c.fixed, c.keys) for c in released if (c.coverage, c.fixed, c.keys) in rows_of
                  and equation(c.statistic, rows_of[(c.coverage, c.fixed, c.keys)])}
        valid_counts = [rows for key, rows in valid.items() if key in counts]
        stale_counts = [rows for key, rows in stale.items() if key in counts]
        rest = [(cell, rows) for cell, rows in candidates
                if any(equation(statistic_name(plan, i), rows) for i in cell.statistics)]
        if not rest:
            return []
        old_classes, new_classes, classes = entity_classes(blocks, valid_counts + stale_counts,
                                                           [rows for _, rows in rest])
        return _withhold(old_classes, list(zip([c for c, _ in rest], new_classes, strict=True)),
                         ClassJudge(classes, guarded.min_entities, guarded.dataset), stale=len(stale_counts),
                         check=AuditCheck(lambda: self._check(deadline)),
                         order=_details_first if plan.totals and not plan.rollup else _by_keys)

    def session(self, guarded: GuardedQuery, *, deadline: float) -> AuditSession:
        """One answer's audit (:class:`Audit`), to be used under :meth:`lock` for its dataset."""
        return AuditSession(self, guarded, deadline)

    def record(self, guarded: GuardedQuery, cells: list[AnswerCell], withheld: dict[int, frozenset[int]]) -> None:
        """Record, durably, the statistics of ``cells`` that leave (those not in ``withheld``)."""
        names = _names_by_index(guarded.cells)
        text = Rules(guarded.min_entities, guarded.dominance).text()
        rules = frozenset({text})  # one set for the answer's cells
        held: Mapping[tuple, ReleasedCell] | None = None
        fresh: dict[tuple, ReleasedCell] = {}
        for cell in cells:
            if cell.row in withheld:
                continue
            for index in sorted(cell.statistics):
                if (name := names[index]) is None:
                    continue
                key = (guarded.coverage, cell.fixed, cell.keys, name)
                held = self.ledger.held(guarded.dataset) if held is None else held
                before = held.get(key)
                # A cell recorded under these rules keeps its first value (the ledger's rule): a repeated answer
                # builds and writes nothing.
                if (before is None or text not in before.rules) and key not in fresh:
                    fresh[key] = ReleasedCell(guarded.coverage, cell.fixed, cell.keys, name, cell.value(index), rules)
        self.ledger.record(guarded.dataset, list(fresh.values()))

    def _may_change_sign(self, dataset: str, statistics: list[str], deadline: float) -> bool:
        """Whether some summed measure of ``statistics`` is negative in some row of ``dataset`` (any row, whatever
        a grant's filter: more rows only make it say yes more often); yes where it cannot tell.

        A yes is kept for good (it only ever audits more together); a no only while the engine vouches that the
        data is the same (a DuckDB file served read-only: :meth:`~sandbox.engine.interface.Engine.data_stamp`),
        since a refund may arrive with the next load. The names come from the ledger and the guard's plan: one
        that is not a plain identifier is not put into SQL, and counts as a yes."""
        measures = sorted({name.split(":", 1)[1] for name in statistics if name.startswith("sum:")})
        stamp = self.engine.data_stamp()
        for measure in measures:
            key = (dataset, measure)
            if key in self._negative:
                return True
            if stamp is not None and self._positive.get(key) == stamp:
                continue
            if not (_IDENTIFIER.fullmatch(measure) and all(_IDENTIFIER.fullmatch(part) for part in dataset.split("."))):
                return True
            timeout = deadline - self.clock()
            if timeout <= 0:
                raise DsbrokerError("the query ran past its deadline and was stopped", reason="QUERY_TIMEOUT")
            try:
                result = self.engine.execute(f"SELECT 1 FROM {dataset} WHERE ({measure}) < 0 LIMIT 1",
                                             timeout_s=timeout, max_rows=1)
            except Exception:  # noqa: BLE001 - not known: audited together (more read, never less)
                return True
            if result.rows:
                self._negative.add(key)
                return True
            if stamp is not None:
                self._positive[key] = stamp
        return False

    def _check(self, deadline: float) -> None:
        if self.clock() > deadline:
            raise DsbrokerError("the query ran past its deadline and was stopped", reason="QUERY_TIMEOUT")


class CellRules(Protocol):
    """What the withholding needs of a judge: whether a union of columns fails the cell rules, whether it adds
    nothing (counted with the failing), and the dataset for its errors."""

    dataset: str

    def fails(self, union: frozenset[int]) -> bool: ...

    def empty(self, union: frozenset[int]) -> bool: ...


def _repeats(guarded: GuardedQuery, new: list[tuple[AnswerCell, str]],
             known: Callable[[tuple], ReleasedCell | None]) -> bool:
    """Whether every statistic of the answer's cells was released before (as ``known`` finds it) with this very
    value. Asked of every answer first, and a repeated answer (a dashboard's) is all it costs: one look-up per
    statistic."""
    names = _names_by_index(guarded.cells)
    coverage = guarded.coverage
    seen: set[int] = set()  # ``new`` holds a cell once per statistic: each is checked once, by identity
    for cell, _ in new:
        if id(cell) in seen:
            continue
        seen.add(id(cell))
        for index in cell.statistics:
            name = names[index]
            if name is not None and getattr(known((coverage, cell.fixed, cell.keys, name)), "value",
                                            _MISSING) != cell.value(index):
                return False
    return True


def _names_by_index(plan: CellPlan) -> list[str | None]:
    """:func:`statistic_name` of each of the plan's statistics, by index."""
    return [statistic_name(plan, index) for index in range(len(plan.statistics))]


def _names(plan: CellPlan, cell: AnswerCell) -> frozenset[str]:
    """The auditor's names of the statistics an answer cell releases."""
    return frozenset(name for i in cell.statistics if (name := statistic_name(plan, i)) is not None)


def _statistics_of(released: list[ReleasedCell], keys: list[tuple]) -> list[frozenset[str]]:
    """Per cell key (coverage, fixed, keys), the statistics released of it."""
    found: dict[tuple, set[str]] = {}
    for cell in released:
        found.setdefault((cell.coverage, cell.fixed, cell.keys), set()).add(cell.statistic)
    return [frozenset(found.get(key, ())) for key in keys]


def _released_at(members: Membership, coverages: list[str], released: list[ReleasedCell], current: int,
                 new: list[tuple[AnswerCell, str]]) -> dict[int, set[str]]:
    """Per block, the statistics released (before, or by this answer) of the cells that take it."""
    found: dict[int, set[str]] = {}
    for cell in released:
        for block in members.cell(members.place[cell.coverage], cell.fixed, cell.keys):
            found.setdefault(block, set()).add(cell.statistic)
    for answer, name in new:
        for block in members.cell(current, answer.fixed, answer.keys):
            found.setdefault(block, set()).add(name)
    return found


class AuditSession:
    """:class:`Audit` for one answer: the auditor's decision, then the record of the rows that leave."""

    def __init__(self, auditor: Auditor, guarded: GuardedQuery, deadline: float) -> None:
        self.auditor, self.guarded, self.deadline = auditor, guarded, deadline
        self.cells: list[AnswerCell] = []
        self.withheld: dict[int, frozenset[int]] = {}
        self.committed = False

    def __call__(self, cells: list[AnswerCell]) -> dict[int, frozenset[int]]:
        self.cells = cells
        started = time.perf_counter()
        try:
            self.withheld = self.auditor.audit(self.guarded, cells, deadline=self.deadline)
        finally:
            self.auditor.on_seconds(time.perf_counter() - started)
        return self.withheld

    def commit(self, rows: set[int]) -> None:
        """Record the cells of answer rows ``rows`` (the ones the caller receives)."""
        started = time.perf_counter()
        try:
            self.auditor.record(self.guarded, [cell for cell in self.cells if cell.row in rows], self.withheld)
        finally:
            self.auditor.on_seconds(time.perf_counter() - started)
        self.committed = True


class Membership:
    """Which blocks each cell of a coverage adds up, indexed by the keys it fixes."""

    def __init__(self, blocks: Blocks, coverages: list[str]) -> None:
        self.blocks = blocks
        # Each coverage's place among the blocks' signatures: a list's index() per released cell took seconds
        # over thousands of coverages.
        self.place = {coverage: at for at, coverage in enumerate(coverages)}
        self._index: dict[tuple[int, int], dict[tuple, list[int]]] = {}

    def cell(self, coverage: int, fixed: int, keys: tuple) -> frozenset[int]:
        """The blocks of the cell of coverage ``coverage`` whose keys at the positions ``fixed`` names
        (:func:`~sandbox.ledgers.released_cells.fixed_code`) are ``keys``."""
        index = self._index.get((coverage, fixed))
        if index is None:
            index = {}
            positions = fixed_positions(fixed)
            for block, signature in enumerate(self.blocks.signatures):
                values = signature[coverage]
                if values is not None:
                    index.setdefault(tuple(values[p] for p in positions), []).append(block)
            self._index[(coverage, fixed)] = index
        return frozenset(index.get(tuple(keys[:len(fixed_positions(fixed))]), ()))


@dataclass
class JudgeMemo:
    """What the judges of one audit's blocks share: the rules' verdict on a union for the statistics it is judged
    for (a judge per set of cells that would leave, one for the cells before: the same unions come back under
    each), and each union's amounts per taxpayer. Valid for one :class:`Blocks` only."""

    verdicts: dict[tuple, tuple[bool, bool]] = field(default_factory=dict)
    amounts: dict[tuple[frozenset[int], int], tuple[dict[Any, Any], Any, Any]] = field(default_factory=dict)
    negative: dict[int, bool] = field(default_factory=dict)  # per measure: whether some block holds a negative part


class Judge:
    """Whether a union of blocks, as one cell, fails the cell rules for any of ``statistics`` (cached per union)."""

    def __init__(self, blocks: Blocks, statistics: list[str], rules: Rules, dataset: str,
                 released_at: dict[int, set[str]] | None = None, memo: JudgeMemo | None = None) -> None:
        self.dataset = dataset
        self.released_at = released_at  # per block, the statistics released of cells that take it
        self.measures = blocks.measures
        self.contributions = blocks.contributions
        position = {measure: i for i, measure in enumerate(blocks.measures)}
        self.summed = sorted({position[s.split(":", 1)[1]] for s in statistics if s.startswith("sum:")})
        self.counted = sorted({position[s.split(":", 1)[1]] for s in statistics if s.startswith("count:")})
        self.position = position
        self.rules = rules
        dominance = rules.dominance
        self.largest = max(dominance.n or 0, 2 if dominance.p is not None else 0) if dominance is not None else 0
        self._cache: dict[frozenset[int], tuple[bool, bool]] = {}
        memo = memo if memo is not None else JudgeMemo()
        self._verdicts = memo.verdicts
        self._amount_cache = memo.amounts
        self._negative = memo.negative

    def fails(self, union: frozenset[int]) -> bool:
        """Whether the rules would withhold the union as a cell."""
        return self._verdict(union)[0]

    def empty(self, union: frozenset[int]) -> bool:
        """Whether some sum or count released in the scope has no contributor in the union (it adds only zeros,
        so it protects nothing it is added to)."""
        return self._verdict(union)[1]

    def kinds(self) -> list[str]:
        """The ways a taxpayer can count toward a statistic released in the scope: ``rows`` (a row: the threshold
        counts every taxpayer a cell holds), ``sum:<i>`` (a nonzero amount of summed measure i), ``count:<i>``
        (a value of counted measure i). A combination is judged under each: it may be made of cells of any."""
        return ["rows"] + [f"sum:{at}" for at in self.summed] + [f"count:{at}" for at in self.counted]

    def contributors(self, union: frozenset[int], kind: str) -> set:
        """The taxpayers who count toward ``kind`` in the union (a firm that declares 0 adds nothing to a
        sum: it is no cover there)."""
        found = set()
        name, _, at = kind.partition(":")
        for block in union:
            for entity, part in self.contributions[block].items():
                if (part[0] if name == "rows" else part[1][int(at)] if name == "sum" else part[2][int(at)]):
                    found.add(entity)
        return found

    def dominated_change(self, plus: list[frozenset[int]], minus: list[frozenset[int]]) -> bool:
        """Whether a difference (the columns ``plus`` less the columns ``minus``, each a union of blocks) is, for a
        summed measure, mostly one or two taxpayers': the dominance rule on each taxpayer's net amount (its part
        of ``plus`` less its part of ``minus``), as a cell's on its amounts. That is a giant's growth beside small
        firms that hardly move, and as much a giant's block less a small block of other taxpayers."""
        rule = self.rules.dominance
        if rule is None or not self.summed:
            return False
        summed = self.summed
        if self.released_at is not None:
            names = set().union(*(self.released_at.get(b, ()) for column in plus + minus for b in column))
            summed = [at for at in summed if f"sum:{self.measures[at]}" in names]
        for at in summed:
            columns = [(self._amounts(column, at), 1) for column in plus] + [(self._amounts(column, at), -1)
                                                                             for column in minus]
            # Cheap bound first: the nets add up to the difference of the totals, so their magnitudes are at
            # least its size, while the largest net is at most the columns' largest amounts added up.
            change = abs(sum(sign * total for (_, total, _), sign in columns))
            top = sum(largest for (_, _, largest), _ in columns)
            if (rule.p is None and rule.k is not None and type(top) is int and type(change) is int  # noqa: E721
                    and 100 * (rule.n or 1) * top <= Fraction(rule.k) * change):
                continue
            net: dict[Any, Any] = {}
            for (amounts, _, _), sign in columns:
                for entity, amount in amounts.items():
                    net[entity] = net.get(entity, 0) + sign * amount
            values = [v for v in net.values() if v]
            if values and _dominated(values, rule, self.largest):
                return True
        return False

    def has_negative(self, at: int) -> bool:
        """Whether some taxpayer's part of measure ``at`` in some block is negative (cached per blocks)."""
        found = self._negative.get(at)
        if found is None:
            found = self._negative[at] = any(part[1][at] is not None and part[1][at] < 0
                                             for block in self.contributions for part in block.values())
        return found

    def amounts(self, column: frozenset[int], at: int) -> dict[Any, Any]:
        """Per taxpayer its amount of summed measure ``at`` in ``column`` (a union of blocks)."""
        return self._amounts(column, at)[0]

    def _amounts(self, column: frozenset[int], at: int) -> tuple[dict[Any, Any], Any, Any]:
        """Per taxpayer its amount of measure ``at`` in ``column`` (blocks), the column's total and the largest
        magnitude (cached per column)."""
        key = (column, at)
        found = self._amount_cache.get(key)
        if found is None:
            amounts: dict[Any, Any] = {}
            for block in column:
                for entity, part in self.contributions[block].items():
                    amount = part[1][at]
                    if amount is not None:
                        amounts[entity] = amounts.get(entity, 0) + amount
            found = self._amount_cache[key] = (amounts, sum(amounts.values()),
                                               max((abs(a) for a in amounts.values()), default=0))
        return found

    def value(self, union: frozenset[int], statistic: str) -> Any:
        """The value of ``statistic`` over the union on today's data, as the cell table would give it."""
        parts = [part for block in union for part in self.contributions[block].values()]
        if statistic == "rows":
            return sum(part[0] for part in parts)
        if statistic == "entities":
            return len({entity for block in union for entity in self.contributions[block]})
        kind, measure = statistic.split(":", 1)
        at = self.position[measure]
        if kind == "count":
            return sum(part[2][at] for part in parts)
        amounts = [part[1][at] for part in parts if part[1][at] is not None]
        return sum(amounts[1:], amounts[0]) if amounts else None

    def _verdict(self, union: frozenset[int]) -> tuple[bool, bool]:
        verdict = self._cache.get(union)
        if verdict is None:
            verdict = self._cache[union] = self._judge(union)
        return verdict

    def _judge(self, union: frozenset[int]) -> tuple[bool, bool]:
        summed, counted = self.summed, self.counted
        if self.released_at is not None:
            # Only the statistics released of cells that take these blocks: a cell whose CIT sum the threshold
            # withheld (too few declare CIT) released its VAT and its count, which pass.
            names = set().union(*(self.released_at.get(b, ()) for b in union))
            summed = [at for at in summed if f"sum:{self.measures[at]}" in names]
            counted = [at for at in counted if f"count:{self.measures[at]}" in names]
        key = (self.rules, union, tuple(summed), tuple(counted))
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = self._rule_verdict(union, summed, counted)
        return verdict

    def _rule_verdict(self, union: frozenset[int], summed: list[int], counted: list[int]) -> tuple[bool, bool]:
        """The cell rules on the union, for the sums ``summed`` and the counts ``counted`` (measure positions)."""
        if len(union) == 1:
            (block,) = union
            parts = list(self.contributions[block].values())
        else:
            parts = list(_merged(self.contributions[b] for b in union).values())
        k = self.rules.k
        entities = sum(1 for part in parts if part[0])
        fails, empty = 0 < entities < k, False
        for at in counted:
            count = sum(1 for part in parts if part[2][at])
            fails, empty = fails or 0 < count < k, empty or not count
        for at in summed:
            amounts = [part[1][at] for part in parts if part[1][at]]
            fails = fails or 0 < len(amounts) < k or (
                self.rules.dominance is not None and _dominated(amounts, self.rules.dominance, self.largest))
            empty = empty or not amounts
        return fails, empty


def _merged(blocks) -> dict[Any, Contribution]:
    """Per entity, its parts of several blocks added up."""
    merged: dict[Any, Contribution] = {}
    for contributions in blocks:
        for entity, part in contributions.items():
            into = merged.get(entity)
            if into is None:
                merged[entity] = part
                continue
            sums = tuple(a if b is None else b if a is None else a + b for a, b in zip(into[1], part[1], strict=True))
            merged[entity] = (into[0] + part[0], sums, tuple(a + b for a, b in zip(into[2], part[2], strict=True)))
    return merged


def entity_classes(blocks: Blocks, old: list[frozenset[int]], new: list[frozenset[int]]
                   ) -> tuple[list[frozenset[int]], list[frozenset[int]], list[int]]:
    """Distinct-count cells (sets of blocks) as sets of entity classes: entities grouped by which of the cells
    they have a row in. Returns the old and the new cells over the classes, and each class's size."""
    cells = old + new
    member_of: dict[Any, list[int]] = {}
    for index, rows in enumerate(cells):
        seen = set()
        for block in rows:
            for entity in blocks.contributions[block]:
                if entity not in seen:
                    seen.add(entity)
                    member_of.setdefault(entity, []).append(index)
    class_of: dict[tuple[int, ...], int] = {}
    sizes: list[int] = []
    by_cell: list[set[int]] = [set() for _ in cells]
    for indices in member_of.values():
        pattern = tuple(indices)
        number = class_of.get(pattern)
        if number is None:
            number = class_of[pattern] = len(sizes)
            sizes.append(0)
            for index in pattern:
                by_cell[index].add(number)
        sizes[number] += 1
    as_classes = [frozenset(c) for c in by_cell]
    return as_classes[:len(old)], as_classes[len(old):], sizes


def _counts(statistic: str | None) -> bool:
    """Whether a statistic counts rows or entities (and so may equal a distinct count in the data)."""
    return statistic is not None and (statistic in ("entities", "rows") or statistic.startswith("count:"))


class ClassJudge:
    """The threshold on a union of entity classes (its entities are the classes' sizes added up)."""

    def __init__(self, sizes: list[int], k: int, dataset: str) -> None:
        self.sizes, self.k, self.dataset = sizes, k, dataset

    def fails(self, union: frozenset[int]) -> bool:
        """Whether fewer than k (but some) entities are in the union."""
        return 0 < sum(self.sizes[c] for c in union) < self.k

    def empty(self, union: frozenset[int]) -> bool:
        """Classes are never empty."""
        return False

    def members(self, number: int) -> set[tuple[int, int]]:
        """Stand-ins for the taxpayers of class ``number`` (classes are disjoint: only their number matters)."""
        return {(number, i) for i in range(self.sizes[number])}


def _dominated(amounts: list, rule: Dominance, largest: int) -> bool:
    """The dominance rule on a union's per-entity totals, by magnitude and exactly (as the cell rule): integers
    stay integers, other amounts become exact fractions."""
    if not all(type(a) is int for a in amounts):  # noqa: E721 - DECIMAL or DOUBLE measures
        if any(isinstance(a, float) and not math.isfinite(a) for a in amounts):
            return True
        amounts = [Fraction(a) for a in amounts]
    magnitudes = [abs(a) for a in amounts]
    total = sum(magnitudes)
    if not total:
        return False
    top = heapq.nlargest(largest, magnitudes)
    if rule.n is not None and rule.k is not None:
        k = Fraction(rule.k)
        if 100 * k.denominator * sum(top[:rule.n]) > k.numerator * total:
            return True
    if rule.p is not None and top:
        p = Fraction(rule.p)
        return 100 * p.denominator * (total - sum(top[:2])) < p.numerator * top[0]
    return False


def _withhold(old: list[frozenset[int]], candidates: list[tuple[AnswerCell, frozenset[int]]], judge: CellRules, *,
              stale: int, check: Callable[[], None], judged_before: CellRules | None = None,
              judge_for: Callable[[list[AnswerCell]], CellRules] | None = None,
              old_statistics: list[frozenset[str]] | None = None,
              statistics_of: Callable[[AnswerCell], frozenset[str]] | None = None,
              order: Callable[[AnswerCell], tuple] | None = None) -> list[AnswerCell]:
    """The answer's cells to withhold so that they cause no leak (module docstring, step 4), nor make a stale
    cell (the last ``stale`` of ``old``) derivable from the others. ``judge_for`` gives the judge of the answer's
    cells that would leave (the statistics they release decide which blocks fail); ``judge`` serves otherwise."""
    kept = list(candidates)

    def leaks(cells: list[tuple[AnswerCell, frozenset[int]]]) -> list[set[int]]:
        rows = [rows for _, rows in cells]
        judged = judge_for([cell for cell, _ in cells]) if judge_for is not None else judge
        new_statistics = [statistics_of(cell) for cell, _ in cells] if statistics_of is not None else None
        return (_new_leaks(old, rows, judged, check, stale, judged_before, old_statistics, new_statistics)
                + _stale_leaks(old, rows, stale, check))

    found = leaks(kept) if kept else []
    if not found:
        return []
    removed: list[tuple[AnswerCell, frozenset[int]]] = []
    while found:
        # The answer's cells that the leaking combinations take (their weights are those of old + kept). A leak
        # of cells released before alone is new through the answer's statistics (its CIT cells make blocks fail
        # for CIT): any of the answer's cells may be what makes it, so all are candidates.
        involved = [kept[i - len(old)] for i in sorted({i for leak in found for i in leak}) if i >= len(old)] or kept
        if not involved:
            raise DsbrokerError("the answer, with what has been released before, would reveal a total of too few "
                                "taxpayers, and withholding its cells cannot prevent it", reason="AUDIT_REFUSED",
                                table=judge.dataset)
        chosen = min(involved, key=lambda c: (order or _by_keys)(c[0]))
        kept.remove(chosen)
        removed.append(chosen)
        found = leaks(kept)
    for cell in reversed(removed):  # give back what turned out not to be needed
        if not leaks(kept + [cell]):
            kept.append(cell)
    kept_cells = {c for c, _ in kept}
    return [cell for cell, _ in removed if cell not in kept_cells]


def _stale_leaks(old: list[frozenset[int]], new: list[frozenset[int]], stale: int,
                 check: Callable[[], None]) -> list[set[int]]:
    """Changes the new rows give away: the stale cells are the last ``stale`` of ``old``, with their values as
    released (before a late declaration, say). A combination of stale cells whose value *today* follows from
    the cells that still hold and the new rows, and did not follow from the cells that hold alone, less the
    same combination of released values is a sum of changes since; the auditor cannot tell whose, so every
    one is a leak. Returns the rows (indices into ``old + new``) to blame: the new rows such combinations take.

    The stale cells are added after the others to one echelon form; a stale cell that reduces to nothing is
    such a combination (its weights say which other rows give it)."""
    if not stale or not new:
        return []
    held = len(old) - stale
    everything = old + new
    merged = merged_blocks(everything)
    vectors = [{merged[block]: 1 for block in row} for row in everything]
    columns = sorted({c for vector in vectors for c in vector})

    def dependencies(base: list[int]) -> tuple[int, set[int]]:
        """How many independent combinations of stale cells the rows ``base`` give today, and which new rows
        those combinations take."""
        echelon = Echelon({c: i for i, c in enumerate(columns)})
        for index in base:
            echelon.add(Row(vectors[index], {index: 1}))
        found, taken = 0, set()
        for target in range(held, len(old)):
            check()
            left = echelon.reduce(Row(vectors[target], {target: 1}))
            if left.vector:
                echelon.pivots[min(left.vector, key=echelon.rank_of.__getitem__)] = left
            else:
                found += 1
                taken |= {i for i in left.weights if i >= len(old)}
        return found, taken

    before, _ = dependencies(list(range(held)))
    after, taken = dependencies(list(range(held)) + list(range(len(old), len(everything))))
    return [taken] if after > before else []


def _details_first(cell: AnswerCell) -> tuple:
    """The order a CUBE's or grouping sets' cells are withheld in: the finest first, then by keys. Their margins
    (each street's total, each industry's) are what such a table is asked for, and each is a total that a
    withheld detail cell takes part in as well; withholding totals first would take whole margins away. Like
    :func:`_by_keys`, it depends on the keys alone."""
    positions = fixed_positions(cell.fixed)
    return (-len(positions), cell.fixed,
            tuple((value is None, value if value is not None else 0) for value in cell.keys))


def _by_keys(cell: AnswerCell) -> tuple:
    """The order cells are withheld in: by their keys (totals first), never by anything the data decides (sizes,
    the engine's row order), so the same answer is withheld the same way every time (two runs withholding
    different cells would together give both away) and the choice itself says nothing about the data."""
    return (len(fixed_positions(cell.fixed)), cell.fixed,
            tuple((value is None, value if value is not None else 0) for value in cell.keys))


def _new_leaks(old: list[frozenset[int]], new: list[frozenset[int]], judge: CellRules,
               check: Callable[[], None], stale: int = 0, judged_before: CellRules | None = None,
               old_statistics: list[frozenset[str]] | None = None,
               new_statistics: list[frozenset[str]] | None = None) -> list[set[int]]:
    """The failing unions of blocks that ``old`` and ``new`` together make derivable and ``old`` alone does not,
    each as the rows (indices into ``old + new``) its combination takes. What ``old`` alone gave is judged by
    ``judged_before`` (the statistics released before), the rest by ``judge``; the answer's rows are taken first
    where a combination can be made of either (a cell released again for another statistic is the answer's).

    Where the combinations on failing blocks are too many to search (:class:`TooComplex`), only their number
    is compared: if ``new`` adds none (the space has the dimension ``old`` gives it), it adds no leak; if it adds
    some, every new row the space takes is blamed, until it adds none."""
    everything = old + new
    merged = merged_blocks(everything)
    stale_rows = range(len(old) - stale, len(old))
    space = _Space(everything, merged, judge, check, stale_rows, first=range(len(old), len(everything)))
    spaces: dict[str | None, _Space] = {}

    def before(statistic: str | None = None) -> _Space:
        """The space of the cells released before; of those that released ``statistic`` where one is named (what
        they gave of a CIT sum is what the cells that released it gave, not the revenue or VAT cells)."""
        if statistic not in spaces:
            chosen = [i for i in range(len(old)) if statistic is None or old_statistics is None
                      or statistic in old_statistics[i]]
            kept_stale = sum(1 for i in chosen if i >= len(old) - stale)
            rows = [old[i] for i in chosen]
            spaces[statistic] = _Space(rows, merged, judged_before or judge, check,
                                       range(len(rows) - kept_stale, len(rows)))
        return spaces[statistic]

    owned: dict[str, _Space] = {}

    def own_space(statistic: str) -> _Space:
        """The space of the cells, before and now, that released ``statistic`` (a revenue cell is no CIT figure,
        however the CIT cells make blocks fail); rows keep their places, so blame still names them."""
        if old_statistics is None or new_statistics is None:
            return space
        if statistic not in owned:
            named = old_statistics + new_statistics
            rows = [row if statistic in named[i] else frozenset() for i, row in enumerate(everything)]
            owned[statistic] = _Space(rows, merged, judge, check, stale_rows, first=range(len(old), len(everything)))
        return owned[statistic]

    def own(statistic: str) -> list[Row]:
        return own_space(statistic).basis

    def dominated_totals() -> list[set[int]]:
        """A leak of a total that takes a block passing alone (:meth:`_Space.dominated_total`); where it is too
        complex to search, every new row takes the blame."""
        try:
            rows = space.dominated_total(before, own_space)
        except TooComplex:
            blamed = {i for row in space.span for i in row.weights if i >= len(old)}
            return [blamed] if blamed else []
        return [rows] if rows is not None else []

    return _failing_space_leaks(space, before, own, len(old)) or dominated_totals()


def _failing_space_leaks(space: _Space, before: Callable[..., _Space], own: Callable[[str], list[Row]],
                         old: int) -> list[set[int]]:
    """The leaks among the combinations of ``space`` that are zero on every passing block (the searches of
    :meth:`_Space.few_leaks`, :meth:`_Space.dominance_leak` and, where they need it, :meth:`_Space.total_leaks`),
    each as the rows it takes; rows from ``old`` on are the answer's."""
    if not space.basis:
        return []
    try:
        few = space.few_leaks(before, own)
        if not few and (dominated := space.dominance_leak(before, own)) is not None:
            few = [(frozenset(), dominated)]
        # Every total and difference is a combination the two searches above judge, but for the ones a stale
        # cell takes (judged unsure, whatever their taxpayers) and for classes of entities (ClassJudge).
        leaks = space.total_leaks() if space.stale or not isinstance(space.judge, Judge) else []
    except TooComplex:
        if len(space.basis) <= len(before().basis):
            return []
        return [{i for row in space.basis for i in row.weights if i >= old}]
    if not leaks:
        return [rows for _, rows in few]
    try:
        known = {union for union, _ in before().total_leaks()}
    except TooComplex:
        known = set()  # not known: every leak counts as the new answer's (more withheld, never less)
    return [rows for _, rows in few] + [rows for union, rows in leaks if union not in known]


def merged_blocks(rows: list[frozenset[int]]) -> dict[int, int]:
    """Block -> the representative of the blocks that every row in ``rows`` takes or leaves together."""
    membership: dict[int, list[int]] = {}
    for index, row in enumerate(rows):
        for block in row:
            membership.setdefault(block, []).append(index)
    groups: dict[tuple[int, ...], int] = {}
    merged: dict[int, int] = {}
    for block in sorted(membership):
        merged[block] = groups.setdefault(tuple(membership[block]), block)
    return merged


class _Space:
    """The combinations of ``rows`` that are zero on every passing block (module docstring, step 3)."""

    def __init__(self, rows: list[frozenset[int]], merged: dict[int, int], judge: CellRules,
                 check: Callable[[], None], stale: range = range(0), first: range = range(0)) -> None:
        self.judge = judge
        self.check = check
        self.parts: dict[int, list[int]] = {}
        for block, representative in merged.items():
            self.parts.setdefault(representative, []).append(block)
        self.basis: list = []
        # Blocks a stale cell (rows ``stale``) covers: who was in them when it was released is not known (a
        # refresh may have brought newcomers in), so they are judged unsure, and a total a stale cell takes
        # part in over them is a leak whatever they hold today.
        self.stale = set(stale)
        self.unsure = {merged[b] for i in stale for b in rows[i]}
        self._span: list[Row] | None = None
        columns = sorted({merged[b] for row in rows for b in row})
        vectors: list[Vector] = [{merged[block]: 1 for block in row} for row in rows]
        self._vectors, self._columns, self._first = vectors, columns, first
        if not any(rows):
            return
        check()
        failing = {c for c in columns if c in self.unsure or judge.fails(frozenset(self.parts[c])) or
                   judge.empty(frozenset(self.parts[c]))}
        if failing:
            self.basis = unsafe_space(vectors, failing, columns, first=first)
        check()

    @property
    def span(self) -> list[Row]:
        """A basis of every combination of the rows (passing blocks too), each with the rows it combines."""
        if self._span is None:
            columns = self._columns
            self._span = unsafe_space(self._vectors, set(columns), columns, first=self._first) if columns else []
        return self._span

    def few_leaks(self, before: Callable[..., _Space], own: Callable[[str], list[Row]] | None = None
                  ) -> list[tuple[frozenset[int], set[int]]]:
        """The combinations in the space that are functions of fewer than k taxpayers counting toward some
        statistic (:mod:`sandbox.audit.few`) and that the space ``before()`` (without the answer) lacks. Raises
        :class:`TooComplex` where there are too many to search."""
        judge = self.judge
        if not self.basis:
            return []
        used = sorted({c for row in self.basis for c in row.vector})
        leaks = []
        if isinstance(judge, ClassJudge):  # classes of entities: their members are the people
            people = {c: set().union(*(judge.members(cl) for cl in self.parts[c])) for c in used}
            for leak in few_taxpayer_leaks(self.basis, lambda: before().basis, people, judge.k, self.check):
                leaks.append((frozenset(b for c in leak.columns for b in self.parts[c]), set(leak.rows)))
            return leaks
        if not isinstance(judge, Judge):
            return []
        for kind in judge.kinds():
            # A sum's or a count's contributors are judged where cells released it; a row holds a taxpayer
            # whatever a cell released of it.
            statistic = kind if kind == "rows" else f"{kind.split(':')[0]}:{judge.measures[int(kind.split(':')[1])]}"
            released = [c for c in used if kind == "rows" or judge.released_at is None
                        or any(statistic in judge.released_at.get(b, ()) for b in self.parts[c])]
            if not released:
                continue
            source = own(statistic) if own is not None and kind != "rows" else self.basis
            basis = source if len(released) == len(used) else supported_on(source, set(released), used)
            people = {c: judge.contributors(frozenset(self.parts[c]), kind) for c in used}

            def earlier(allowed: list[int] = released, name: str | None = None if kind == "rows" else statistic
                        ) -> list[Row]:
                # What the cells before gave, of the cells that released this statistic (any cell holds its rows).
                space = before(name)
                return space.basis if len(allowed) == len(used) else supported_on(space.basis, set(allowed), used)

            for leak in few_taxpayer_leaks(basis, earlier, people, judge.rules.k, self.check):
                leaks.append((frozenset(b for c in leak.columns for b in self.parts[c]), set(leak.rows)))
        return leaks

    def dominance_leak(self, before: Callable[..., _Space], own: Callable[[str], list[Row]] | None = None
                       ) -> set[int] | None:
        """The rows of a combination in the space, whatever its weights, whose taxpayers' net amounts of a summed
        measure the dominance rule would withhold (:mod:`sandbox.audit.dominance`) and that the space ``before()``
        lacks; None if there is none. Per measure, only the blocks whose cells released its sum take part."""
        judge = self.judge
        if not self.basis or not isinstance(judge, Judge) or judge.rules.dominance is None:
            return None
        used = sorted({c for row in self.basis for c in row.vector})

        def released(space: _Space, name: str) -> set[int]:
            released_at = space.judge.released_at if isinstance(space.judge, Judge) else None
            return {c for c in used
                    if released_at is None or any(name in released_at.get(b, ()) for b in self.parts[c])}

        for at in judge.summed:
            name = f"sum:{judge.measures[at]}"
            allowed = released(self, name)
            if not allowed:
                continue
            amounts = {c: judge.amounts(frozenset(self.parts[c]), at) for c in allowed}

            def earlier() -> list[Row]:
                # What the cells before that released this measure's sum gave, over the blocks where they did.
                space = before(name)  # noqa: B023
                return supported_on(space.basis, released(space, name) & allowed, used)  # noqa: B023

            source = own(name) if own is not None else self.basis
            leak = first_dominated(supported_on(source, allowed, used), earlier, amounts,
                                   judge.rules.dominance, self.check)
            if leak is not None:
                return set(leak.rows)
        return None

    def dominated_total(self, before: Callable[..., _Space], own: Callable[[str], _Space] | None = None
                        ) -> set[int] | None:
        """The rows of a total of the rows (weights of one sign) that takes a block passing the rules alone and
        whose taxpayers' net amounts of a summed measure the dominance rule would withhold
        (:mod:`sandbox.audit.dominated_totals`), and that the rows ``before()`` do not give; None if there is none.
        Per measure, only the blocks whose cells released its sum take part."""
        judge = self.judge
        if not isinstance(judge, Judge) or judge.rules.dominance is None or not self._columns:
            return None
        rule = judge.rules.dominance

        def released(space: _Space, name: str, columns: list[int]) -> set[int]:
            released_at = space.judge.released_at if isinstance(space.judge, Judge) else None
            return {c for c in columns
                    if released_at is None or any(name in released_at.get(b, ()) for b in self.parts[c])}

        for at in judge.summed:
            name = f"sum:{judge.measures[at]}"
            # Cheap first: a total can be dominated only where a block is dominated alone, or where some taxpayer's
            # amounts have both signs (the rules' verdicts are kept per union, and most blocks pass).
            columns = released(self, name, self._columns)
            if not any(judge.fails(frozenset(self.parts[c])) and _dominated(
                    [a for a in judge.amounts(frozenset(self.parts[c]), at).values() if a], rule, judge.largest)
                    for c in columns) and not (judge.has_negative(at) and amounts_change_sign(
                        {c: judge.amounts(frozenset(self.parts[c]), at) for c in columns})):
                continue
            source = own(name) if own is not None else self
            span = source.span
            used = sorted({c for row in span for c in row.vector})
            allowed = released(self, name, used)
            if not allowed:
                continue
            amounts = {c: judge.amounts(frozenset(self.parts[c]), at) for c in allowed}

            def earlier() -> list[Row]:
                # What the cells before that released this measure's sum gave, over the blocks where they did.
                space = before(name)  # noqa: B023
                return supported_on(space.span, released(space, name, used) & allowed, used)  # noqa: B023

            leak = first_dominated_total(supported_on(span, allowed, used), earlier, amounts, rule, self.check)
            if leak is not None:
                return set(leak.rows)
        return None

    def total_leaks(self) -> list[tuple[frozenset[int], set[int]]]:
        """The failing totals and the dominated differences in the space: each as its union of blocks, with the
        rows its combination takes. Raises :class:`TooComplex` where there are too many combinations to search."""
        leaks = []
        judge = self.judge
        signed = isinstance(judge, Judge)  # differences of entity classes tell nothing a total does not
        for combination in totals(self.basis, signed=signed) if self.basis else ():
            union = frozenset(b for c in combination.vector for b in self.parts[c])
            unsure = bool(self.stale & set(combination.weights)) and bool(self.unsure & set(combination.vector))
            if all(v == 1 for v in combination.vector.values()):
                leaking = unsure or self.judge.fails(union)
            else:  # a difference: one block less another, e.g. one firm's year less its year before
                plus = [frozenset(self.parts[c]) for c, v in combination.vector.items() if v == 1]
                minus = [frozenset(self.parts[c]) for c, v in combination.vector.items() if v != 1]
                leaking = unsure or (isinstance(judge, Judge) and judge.dominated_change(plus, minus))
            if leaking:
                leaks.append((union, set(combination.weights)))
        return leaks
