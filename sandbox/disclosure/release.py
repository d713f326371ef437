"""What leaves the sandbox of an exact result: disclosure control on the engine's cells, then the caller's
outputs, HAVING, ORDER BY and LIMIT computed from the released cells alone.

The engine returns a cell table (``dsbroker.guard.split_cells``): group keys and per-cell statistics. Here,
in this order:

1. the threshold: a cell with fewer than k distinct entities is withheld whole (its statistics become
   NULL); under ``suppressed: drop`` the engine already left such cells out, except with totals; and a
   sum that fewer than k entities make up (those whose total of the measure is set and not zero, but
   some) is withheld in its cell, as a threshold on the sum's own contributors;
2. the dominance rule: a measure whose largest contributors dominate a cell has its sums withheld there;
3. with totals, secondary suppression withholds further cells, whole and then per summed measure, until
   no withheld cell, and no sum of withheld cells fewer than k make up, is a total less released cells
   (``_Equations.close``);
4. the release plan is evaluated on what remains (``sandbox.disclosure.evaluate``): outputs, then HAVING, ORDER BY
   and LIMIT, which therefore see withheld cells as NULL, like the caller does. Rows are ordered by the
   caller's ORDER BY and then by the keys, so their order depends on released values alone.

Under ``suppressed: drop`` rows withheld by the threshold or by secondary suppression are left out
instead of marked; dominated cells are always marked.
"""

from __future__ import annotations

import heapq
import math
import operator
import time
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

from dsbroker.errors import DsbrokerError
from dsbroker.guard import GuardedQuery
from dsbroker.guard import internal_names as names
from dsbroker.guard.release_plan import CellPlan, Key, statistics_read
from dsbroker.policy.model import Dominance
from sandbox.audit.auditor import Audit, AnswerCell, Auditor, AuditSession
from sandbox.audit.auditor import statistics_read as statistics_read_by
from sandbox.ledgers.released_cells import fixed_code
from sandbox.disclosure.evaluate import (ENGINE_TYPES, Columns, compile_total, direct_position, kind_of, sort_key,
                                         wire_value)


@dataclass
class Release:
    """The released table, with the cells withheld and by which rule."""

    names: list[str]
    types: list[str]
    rows: list[tuple]
    withheld: list[frozenset[int]]  # per row: the positions of its withheld cells
    rolled_up: list[frozenset[int]] = field(default_factory=list)  # per row: the key positions a total spans
    counts: dict[str, int] = field(default_factory=dict)  # cells withheld per rule: min_entities, dominance, secondary
    truncated: bool = False  # rows were cut at the row cap


_NOTHING: frozenset[int] = frozenset()


def release(names_: list[str], types: list[str], rows: list[tuple], guarded: GuardedQuery, *,
            max_rows: int | None = None, deadline: float | None = None,
            clock: Callable[[], float] = time.monotonic, audit: Audit | None = None) -> Release:
    """Apply disclosure control to the engine's cell table for ``guarded`` and compute the answer from it.

    ``max_rows`` cuts the answer (flagging it truncated); by default the guard's cap. Past ``deadline``
    (on ``clock``) the release stops (DEADLINE_EXCEEDED ``QUERY_TIMEOUT``), as the engine would.
    ``audit``, given the cells the rules release, says which of their statistics it withholds besides
    (``sandbox.audit``); it runs before HAVING, ORDER BY and the outputs, which then see them as NULL.
    """
    plan = guarded.cells
    check_protectable(guarded, audited=audit is not None)
    layout = layout_of(names_, types, plan)
    program = compile_plan(plan, layout)
    entities_at, k = layout.columns.statistics[0], guarded.min_entities
    under = [(row[entities_at] or 0) < k for row in rows]
    drop = guarded.suppression == "drop"
    dominance = _Rule.of(guarded.dominance) if layout.dominance and guarded.dominance is not None else None
    check_parts = dominance is not None or bool(layout.contributors)
    # The rows withheld whole by secondary suppression; per row, the sums withheld there by it.
    secondary, secondary_sums = _secondary_suppression(rows, plan, layout, under, k, dominance, check_parts,
                                                       deadline=deadline, clock=clock)
    withheld_row = (None,) * len(names_)  # a cell withheld whole: every statistic NULL (keys are read from the row)
    controlled = []  # (row index, row as released, marked, why withheld: 0 released, 1 threshold, 2 secondary, counts)
    for index, row in enumerate(rows):
        if deadline is not None and not index % 1024 and clock() > deadline:
            _ran_late()
        whole = under[index] or index in secondary
        if whole and drop:
            continue
        marked, few, dominated = _NOTHING, 0, 0
        seen = row
        if whole:
            seen = layout.with_keys(withheld_row, row)
            marked = program.cell_set
        elif check_parts:
            seen, marked, few, dominated = _withheld_parts(row, layout, program, k, dominance,
                                                           secondary_sums.get(index, _NOTHING))
        controlled.append((index, seen, marked, 1 if under[index] else 2 if whole else 0, [few, dominated, 0]))
    if audit is not None:
        _audit(controlled, rows, plan, layout, program, audit)
    answered = _having(controlled, program)
    if not plan.engine_ordered:
        _order(answered, program, layout.grouping)
        if deadline is not None and clock() > deadline:
            _ran_late()
    if plan.limit is not None:
        answered = answered[:plan.limit]
    cap = guarded.max_rows if max_rows is None else max_rows
    truncated = len(answered) > cap
    if audit is not None:
        # What the caller receives is recorded as released: the rows HAVING, LIMIT and the cap leave out tell
        # at most an inequality, which the auditor does not model either way.
        audit.commit({entry[5] for entry in answered[:cap]})
    released, withheld, rolled_up, counts = _answer_rows(answered[:cap], plan, layout, program)
    return Release([o.name for o in plan.outputs], output_types(plan, layout, program), released, withheld, rolled_up,
                   counts, truncated)


def _having(controlled: list, program: _Program) -> list[tuple]:
    """The rows HAVING keeps, each as (row as released, values, marked, why withheld, (few, dominated,
    audited), its place among the rows disclosure control released)."""
    direct, answered = program.direct, []
    for place, (_, seen, marked, why, withheld_counts) in enumerate(controlled):
        if program.having is not None and program.having(seen) is not True:
            continue
        values = direct(seen) if direct is not None else tuple(output(seen) for output in program.outputs)
        answered.append((seen, values, marked, why, withheld_counts, place))
    return answered


def _answer_rows(answered: list[tuple], plan: CellPlan, layout: Layout, program: _Program
                 ) -> tuple[list[tuple], list[frozenset[int]], list[frozenset[int]], dict[str, int]]:
    """The answer's rows on the wire, the cells withheld in each, the keys each total spans, and the
    withheld cells counted by the rule that withheld them."""
    counts = {"min_entities": 0, "dominance": 0, "secondary": 0, "audit": 0}
    cells_here = len(program.cells)
    grouping_at, last = layout.grouping, len(plan.totals) - 1
    direct, kinds = program.direct, program.kinds
    released, withheld, rolled_up = [], [], []
    for seen, values, marked, why, (few, dominated, audited), _ in answered:
        if why == 1:
            counts["min_entities"] += cells_here
        elif why == 2:
            counts["secondary"] += cells_here
        else:  # a sum too few entities make up counts under the threshold; then dominance; secondary; audit
            counts["min_entities"] += few
            counts["dominance"] += dominated
            counts["audit"] += audited
            counts["secondary"] += len(marked) - few - dominated - audited
        released.append(values if direct is not None else
                        tuple(wire_value(value, kind) for value, kind in zip(values, kinds, strict=True)))
        withheld.append(marked)
        if plan.totals:
            bits = seen[grouping_at]
            rolled_up.append(frozenset(p for j, p in enumerate(plan.totals) if bits >> (last - j) & 1))
    return released, withheld, rolled_up, counts


def _secondary_suppression(rows: list[tuple], plan: CellPlan, layout: Layout, under: list[bool], k: int,
                           dominance: _Rule | None, check_parts: bool, *, deadline: float | None,
                           clock: Callable[[], float]) -> tuple[set[int], dict[int, frozenset[int]]]:
    """With totals: the rows secondary suppression withholds whole besides those under the threshold, and
    (where a row's parts are checked) per row the sums it withholds there. Without totals, none."""
    secondary: set[int] = set()
    secondary_sums: dict[int, frozenset[int]] = {}
    if not plan.rollup:  # no totals, or not a tree: the released-cell auditor protects a CUBE's (see release)
        return secondary, secondary_sums

    def check() -> None:
        if deadline is not None and clock() > deadline:
            _ran_late()
    entities_at = layout.columns.statistics[0]
    equations = _Equations(rows, plan, layout, check)
    small = {index for index, flagged in enumerate(under) if flagged}
    secondary = equations.close(small, lambda i: rows[i][entities_at] or 0, k, check=check)
    if check_parts:
        secondary_sums = _secondary_sums(rows, equations, small, secondary, layout, k, dominance, check)
    return secondary, secondary_sums


def _withheld_parts(row: tuple, layout: Layout, program: _Program, k: int, dominance: _Rule | None,
                    secondary: frozenset[int]) -> tuple[tuple, frozenset[int], int, int]:
    """A row not withheld whole, with the sums too few entities make up, the dominance rule withholds or
    secondary suppression withheld set to NULL: (the row as released, the output cells marked, how many of
    them for too few entities, how many for dominance)."""
    thin = layout.hidden_by_contributors(row, k)
    crowded = layout.hidden_by_dominance(row, dominance) if dominance is not None else _NOTHING
    hidden = thin | crowded | secondary
    if not hidden:
        return row, _NOTHING, 0, 0
    seen = tuple(None if i in hidden else value for i, value in enumerate(row))
    marked = frozenset(i for i in program.cells if program.reads[i] & hidden)
    few = sum(1 for i in marked if program.reads[i] & thin)
    dominated = sum(1 for i in marked if program.reads[i] & crowded and not program.reads[i] & thin)
    return seen, marked, few, dominated


def _audit(controlled: list, rows: list[tuple], plan: CellPlan, layout: Layout, program: _Program,
           audit: Audit) -> None:
    """Ask ``audit`` about the cells the rules release and withhold, in place, the statistics it names."""
    positions = layout.columns.statistics
    read = statistics_read_by(plan)
    every = tuple(range(plan.keys))
    cells = []
    for place, (index, seen, _, why, _) in enumerate(controlled):
        if why:
            continue
        statistics = frozenset(i for i in read if seen[positions[i]] is not None)
        if not statistics:
            continue
        fixed = plan.fixed_keys(seen[layout.grouping]) if plan.totals else every
        keys = tuple(rows[index][layout.columns.keys[j]] for j in fixed)
        fixed = fixed_code(fixed)
        values = tuple((i, seen[positions[i]]) for i in sorted(statistics))
        cells.append(AnswerCell(place, fixed, keys, statistics, values))
    for place, statistics in audit(cells).items():
        index, seen, marked, why, withheld_counts = controlled[place]
        hidden = frozenset(positions[i] for i in statistics)
        seen = tuple(None if p in hidden else value for p, value in enumerate(seen))
        newly = frozenset(i for i in program.cells if program.reads[i] & hidden) - marked
        withheld_counts[2] += len(newly)
        controlled[place] = (index, seen, marked | newly, why, withheld_counts)


def check_protectable(guarded: GuardedQuery, *, audited: bool) -> None:
    """Refuse totals that are not a ROLLUP where no released-cell auditor runs (before the engine runs them).

    A CUBE's or grouping sets' tables are not a tree: a withheld cell can be two margins less released cells, or a
    cycle of withheld cells be opened by one released one. Secondary suppression works on a tree of equations;
    the released-cell auditor solves the table as a linear system, as it does for differences across answers.
    Without it, such totals are not released."""
    plan = guarded.cells
    if plan is not None and plan.totals and not plan.rollup and not audited:
        raise DsbrokerError("this sandbox's owner turned the released-cell auditor off, which protects totals that "
                            "are not a ROLLUP; ask for GROUP BY ROLLUP or for the cells alone",
                            reason="TOTALS_NEED_AUDIT", table=guarded.dataset, construct="GROUPING SETS")


def _ran_late() -> None:
    raise DsbrokerError("the query ran past its deadline and was stopped", reason="QUERY_TIMEOUT")


def engine_cap(guarded: GuardedQuery, max_rows: int) -> int:
    """The most rows to take from the engine: every cell where the answer needs them all, else the row cap."""
    return guarded.engine_rows - 1 if guarded.cells is not None and guarded.cells.whole_table else max_rows


def run(engine, guarded: GuardedQuery, *, timeout_s: float, max_rows: int | None = None,
        clock: Callable[[], float] = time.monotonic, auditor: Auditor | None = None) -> Release:
    """Run ``guarded``'s cell query on ``engine`` and release its answer (the sandbox's plaintext path), with
    ``auditor`` audited against the cells released before."""
    cap = guarded.max_rows if max_rows is None else max_rows
    deadline = clock() + timeout_s
    check_protectable(guarded, audited=auditor is not None)
    result = engine.execute(guarded.sql, timeout_s=timeout_s, max_rows=engine_cap(guarded, cap))
    check_size(guarded, result.truncated, dataset=guarded.dataset)
    released = audited_release(result.names, result.types, result.rows, guarded, max_rows=cap, deadline=deadline,
                               clock=clock, auditor=auditor)
    released.truncated = released.truncated or (result.truncated and not guarded.cells.whole_table)
    return released


def audited_release(names_: list[str], types: list[str], rows: list[tuple], guarded: GuardedQuery, *,
                    max_rows: int, deadline: float, clock: Callable[[], float] = time.monotonic,
                    auditor: Auditor | None = None) -> Release:
    """:func:`release`, with ``auditor`` (None: the owner turned it off) judging the cells against those released
    before: under the dataset's audit lock, so that two answers audited at once cannot each pass alone."""
    if auditor is None:
        return release(names_, types, rows, guarded, max_rows=max_rows, deadline=deadline, clock=clock)
    with auditor.lock(guarded.dataset):
        session = auditor.session(guarded, deadline=deadline)
        released = release(names_, types, rows, guarded, max_rows=max_rows, deadline=deadline, clock=clock,
                           audit=session)
        check_committed(session)
        return released


def check_committed(session: AuditSession) -> None:
    """Fail closed: an answer whose released cells were not recorded does not leave."""
    if not session.committed and session.cells:
        raise DsbrokerError("the sandbox could not record the cells the answer releases; nothing was released",
                            reason="RELEASED_CELLS_UNAVAILABLE")


def check_size(guarded: GuardedQuery, engine_truncated: bool, *, dataset: str) -> None:
    """Refuse a cell table the engine had to cut where the answer needs every cell (HAVING, ORDER BY, totals)."""
    if not engine_truncated or not guarded.cells.whole_table:
        return
    if guarded.cells.totals:
        raise DsbrokerError(f"the query's table with totals has more than {guarded.engine_rows - 1:,} rows; its totals "
                            "can only be protected whole", reason="TOTALS_TOO_LARGE", table=dataset)
    raise DsbrokerError(f"the query has more than {guarded.engine_rows - 1} groups before its HAVING or ORDER BY; "
                        "group more coarsely or filter", reason="GROUPS_TOO_MANY", table=dataset)


@dataclass(frozen=True)
class Layout:
    """Where the cell table's columns are, by their internal names, and what kinds they hold."""

    columns: Columns
    key_types: tuple[str, ...]
    grouping: int | None
    # Per measure the dominance rule tests: the positions of its total, top n, largest and top two, and
    # the positions of the sums it withholds when dominated.
    dominance: tuple[tuple[tuple[int | None, ...], frozenset[int]], ...]
    # Per summed measure: the position of its count of contributing entities, and of the sums it withholds.
    contributors: tuple[tuple[int, frozenset[int]], ...] = ()
    # With totals, per summed measure: the position of its count of entities with a negative amount.
    negatives: tuple[tuple[int, frozenset[int]], ...] = ()

    def with_keys(self, statistics_row: tuple, row: tuple) -> tuple:
        """``statistics_row`` (every statistic NULL) with ``row``'s keys and grouping in place."""
        seen = list(statistics_row)
        for position in self.columns.keys:
            seen[position] = row[position]
        if self.grouping is not None:
            seen[self.grouping] = row[self.grouping]
        return tuple(seen)

    def hidden_by_contributors(self, row: tuple, k: int) -> frozenset[int]:
        """The positions of the sums that fewer than ``k`` entities make up in ``row`` (but some do)."""
        hidden = _NOTHING
        for position, sums in self.contributors:
            if 0 < (row[position] or 0) < k:
                hidden = hidden | sums
        return hidden

    def hidden_by_dominance(self, row: tuple, rule: _Rule) -> frozenset[int]:
        """The positions of the sums the dominance rule withholds in ``row``."""
        hidden = _NOTHING
        for columns, sums in self.dominance:
            if _dominated(row, columns, rule):
                hidden = hidden | sums
        return hidden


def layout_of(column_names: list[str], types: list[str], plan: CellPlan) -> Layout:
    """The layout of an engine result for ``plan``, read from its column names."""
    position = {name: i for i, name in enumerate(column_names)}
    keys = tuple(position[names.key(i)] for i in range(plan.keys))
    statistics = tuple(position[names.statistic(i)] for i in range(len(plan.statistics)))
    stat_kinds = tuple("int" if s.kind in ("entities", "rows", "count") else kind_of(types[i])
                       for s, i in zip(plan.statistics, statistics, strict=True))
    sums: dict[str, set[int]] = defaultdict(set)
    for index, statistic in enumerate(plan.statistics):
        if statistic.kind == "sum":
            sums[statistic.measure].add(statistics[index])
    dominance = tuple((tuple(position.get(column(j)) for column in (
        names.dominance_total, names.dominance_top, names.dominance_largest, names.dominance_top_two)),
        frozenset(sums[measure])) for j, measure in enumerate(plan.dominated))
    contributors = tuple((position[names.contributors(j)], frozenset(sums[measure]))
                         for j, measure in enumerate(plan.summed) if names.contributors(j) in position)
    negatives = tuple((position[names.negatives(j)], frozenset(sums[measure]))
                      for j, measure in enumerate(plan.summed) if names.negatives(j) in position)
    columns = Columns(keys, statistics, tuple(kind_of(types[i]) for i in keys), stat_kinds,
                      position.get(names.GROUPING))
    return Layout(columns, tuple(types[i] for i in keys), position.get(names.GROUPING), dominance, contributors,
                  negatives)


def read_cells(names_: list[str], types: list[str], rows: list[tuple], guarded: GuardedQuery) -> tuple[Layout, list]:
    """The layout of an engine result for ``guarded`` and its rows (for callers that read cells themselves)."""
    return layout_of(names_, types, guarded.cells), rows


def compile_plan(plan: CellPlan, layout: Layout) -> _Program:
    """The plan's expressions compiled for a cell table of ``layout``."""
    return _program(plan, layout)


def output_types(plan: CellPlan, layout: Layout, program: _Program) -> list[str]:
    """The engine type name of each output: a key's own, or the kind its computation gives."""
    return [layout.key_types[o.node.index] if isinstance(o.node, Key) else ENGINE_TYPES[kind]
            for o, kind in zip(plan.outputs, program.kinds, strict=True)]


@dataclass(frozen=True)
class _Rule:
    """A dominance rule with its percentages as exact fractions (85.0 is 85/1, 8.5 is 17/2)."""

    k: tuple[int, int] | None  # the (n, k) rule's k, as numerator and denominator; None without it
    p: tuple[int, int] | None  # the p% rule's p; None without it

    @classmethod
    def of(cls, dominance: Dominance) -> _Rule:
        def exact(value):
            fraction = Fraction(value)
            return fraction.numerator, fraction.denominator
        return cls(exact(dominance.k) if dominance.n is not None else None,
                   exact(dominance.p) if dominance.p is not None else None)


def _dominated(row: tuple, columns: tuple, rule: _Rule) -> bool:
    """Whether a cell's largest contributions to one measure break the (n, k) rule or the p% rule.

    Compared exactly, in integers where the engine's sums are integers. A DOUBLE measure whose totals
    are not finite cannot be judged: its sums are withheld, never an error."""
    total_at, top_at, largest_at, top_two_at = columns
    total = row[total_at]
    if total is None:
        return False
    top = row[top_at] if top_at is not None else None
    largest = row[largest_at] if largest_at is not None else None
    top_two = row[top_two_at] if top_two_at is not None else None
    if type(total) is not int:  # noqa: E721 - a DECIMAL or DOUBLE measure: exact fractions, non-finite withheld
        values = (total, top, largest, top_two)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            return True
        total, top, largest, top_two = (None if v is None else Fraction(v) for v in values)
    if rule.k is not None and top is not None:
        numerator, denominator = rule.k
        if 100 * denominator * top > numerator * total:
            return True
    if rule.p is not None and largest is not None and top_two is not None:
        numerator, denominator = rule.p
        if 100 * denominator * (total - top_two) < numerator * largest:
            return True
    return False


@dataclass(frozen=True)
class _Program:
    outputs: tuple
    kinds: tuple[str, ...]
    cells: tuple[int, ...]
    cell_set: frozenset[int]
    reads: tuple[frozenset[int], ...]  # per output: the row positions of the statistics it reads
    having: object
    order: tuple  # (value, descending, nulls_first) per ORDER BY term
    keys: tuple  # each group key's value: the order of last resort, ascending, NULLS LAST
    direct: object  # where every output is a key or an integer statistic as it is: one C call per row


_PROGRAMS: dict = {}


def _program(plan: CellPlan, layout: Layout) -> _Program:
    """The plan's expressions compiled for a cell table of these columns (kept: a plan repeats)."""
    cache_key = (plan, layout.columns)
    program = _PROGRAMS.get(cache_key)
    if program is not None:
        return program
    columns = layout.columns
    outputs = [o.node for o in plan.outputs]
    compiled = [compile_total(o.node, columns) for o in plan.outputs]
    having = compile_total(plan.having, columns)[0] if plan.having is not None else None
    # An ORDER BY term that is an output (ORDER BY 2, or its alias) sorts by the value already computed.
    order = tuple((_output_value(outputs.index(o.node)) if o.node in outputs
                   else _row_value(compile_total(o.node, columns)[0]), o.descending, o.nulls_first) for o in plan.order)
    keys = tuple(_row_value(compile_total(Key(i), columns)[0]) for i in range(plan.keys))
    reads = tuple(frozenset(columns.statistics[s] for s in statistics_read(o.node)) for o in plan.outputs)
    positions = [direct_position(o.node, columns) for o in plan.outputs]
    direct = None
    if positions and None not in positions:
        getter = operator.itemgetter(*positions)
        direct = getter if len(positions) > 1 else (lambda row: (getter(row),))
    program = _Program(tuple(f for f, _ in compiled), tuple(k for _, k in compiled), plan.cell_outputs,
                       frozenset(plan.cell_outputs), reads, having, order, keys, direct)
    if len(_PROGRAMS) > 512:
        _PROGRAMS.clear()
    _PROGRAMS[cache_key] = program
    return program


def _row_value(compiled):
    """An ORDER BY term computed from an answered row as released."""
    return lambda entry: compiled(entry[0])


def _output_value(index: int):
    """An ORDER BY term that is output ``index``: its value, already computed."""
    return lambda entry: entry[1][index]


def _order(answered: list, program: _Program, grouping: int | None) -> None:
    """Sort rows by the caller's ORDER BY over released values, then by the keys (stable passes, last key first),
    then, with totals, by which keys a row totals over: a group whose key is NULL and the total over that key read
    alike, and their order must not be the engine's."""
    if grouping is not None:
        answered.sort(key=lambda entry: entry[0][grouping])
    for value in reversed(program.keys):
        answered.sort(key=lambda entry: sort_key(value(entry), descending=False, nulls_first=False))
    for value, descending, nulls_first in reversed(program.order):
        try:
            answered.sort(key=lambda entry: sort_key(value(entry), descending=descending, nulls_first=nulls_first),
                          reverse=descending)
        except TypeError:  # values that do not compare (never within one column the guard accepts)
            answered.sort(key=lambda entry: repr(type(value(entry))), reverse=descending)


def _secondary_sums(rows: list[tuple], equations: _Equations, small: set[int], secondary: set[int], layout: Layout,
                    k: int, dominance: _Rule | None, check: Callable[[], None]) -> dict[int, frozenset[int]]:
    """Per row, the sums secondary suppression withholds besides whole rows, measure by measure.

    For one summed measure: its sums that some but fewer than k entities make up (or that the dominance
    rule withholds) are its primary cells, in a row withheld whole or not, and its size is its count of
    contributors; a sum that no entity makes up is known (0, or NULL) even where its row is withheld, so it
    counts as released and is never chosen to hide another; the rows withheld whole are withheld. More of
    its sums are then withheld until ``_Equations.close``'s conditions hold for that measure. Where some
    amounts are negative (refunds), a sum of withheld cells may cancel some of its members' contributors:
    there a cell's size is its contributors less every entity with a negative amount."""
    contributors_of: dict[frozenset[int], int | None] = {sums: position for position, sums in layout.contributors}
    negatives_of = {sums: position for position, sums in layout.negatives}
    for _, sums in layout.dominance:
        contributors_of.setdefault(sums, None)
    hidden: dict[int, frozenset[int]] = {}
    for index, row in enumerate(rows):
        own = layout.hidden_by_contributors(row, k)
        if dominance is not None:
            own = own | layout.hidden_by_dominance(row, dominance)
        if own:
            hidden[index] = own
    whole = small | secondary
    found: dict[int, frozenset[int]] = defaultdict(frozenset)
    entities_at = layout.columns.statistics[0]
    for sums, contributors_at in contributors_of.items():
        own = {index for index, positions in hidden.items() if positions & sums}
        if not own:
            continue
        if contributors_at is None:
            size_at, known, cancelling = entities_at, set(), 0
        else:
            size_at = contributors_at
            known = {index for index, row in enumerate(rows) if not row[contributors_at]}
            # A sum of several cells counts a cell's contributor only where no amount of another cell can
            # cancel it: at most the entities with a negative amount anywhere (the grand total's count) can.
            cancelling = rows[equations.root][negatives_of[sums]] or 0 if sums in negatives_of else 0
        withheld = (whole | own) - known
        # close() calls the size function only during this call, with this iteration's size_at and cancelling.
        for index in equations.close(withheld, lambda i: max(0, (rows[i][size_at] or 0) - cancelling), k,  # noqa: B023
                                     known=known, check=check):
            found[index] = found[index] | sums
    return found


class _Equations:
    """The additive equations of a ROLLUP's cell table, and secondary suppression over them.

    Each total and the rows it adds up form one equation (the rows of a level partition their total).
    Equations are taken, and ties broken, by the cells' keys and levels, never by the order the engine
    returned them in: the same table gives the same suppression every time (two runs withholding different
    siblings would give the cell away).
    """

    def __init__(self, rows: list[tuple], plan: CellPlan, layout: Layout, check: Callable[[], None] = lambda: None):
        levels, key_positions = len(plan.totals), layout.columns.keys
        grouping_at, last = layout.grouping, len(plan.totals) - 1
        self.order: list[tuple] = []
        rows_by_level: dict[tuple, int] = {}
        self.level = [0] * len(rows)
        self.root = 0
        for index, row in enumerate(rows):
            if not index % 4096:
                check()
            bits = row[grouping_at]
            # A key a total spans sorts apart from a group whose key is NULL (both read NULL).
            self.order.append(tuple((bits >> (last - j) & 1, row[p] is None, row[p])
                                    for j, p in enumerate(key_positions)))
            level = levels - bin(bits).count("1")
            self.level[index] = level
            if not level:
                self.root = index
            rows_by_level[(level, tuple(row[p] for p in key_positions[:level]))] = index
        self.parent: list[int | None] = [None] * len(rows)
        parts: dict[int, list[int]] = defaultdict(list)  # a total's row -> the rows it adds up
        for step, ((level, prefix), index) in enumerate(rows_by_level.items()):
            if not step % 4096:
                check()
            if level > 0:
                total = rows_by_level[(level - 1, prefix[:-1])]
                parts[total].append(index)
                self.parent[index] = total
        check()
        self.parts = {total: sorted(members, key=self.order.__getitem__) for total, members in parts.items()}

    # Left whole (C901): one incremental algorithm whose nested steps share its heaps, queue and strengths.
    def close(self, withheld: set[int], size: Callable[[int], int], k: int, *, known: set[int] = frozenset(),  # noqa: C901
              check: Callable[[], None] = lambda: None) -> set[int]:
        """The rows to withhold besides ``withheld`` so that no withheld row, and no sum of withheld rows of
        fewer than ``k`` (by ``size``: entities, or a measure's contributors), is a total less its released
        parts. Rows in ``known`` count as released whatever they are (their value is known) and are never
        chosen.

        Two conditions on every equation, until both hold everywhere: it does not have exactly one withheld
        member (that member would be the others' difference); and if its total is released, every sum of
        withheld cells it gives covers one cell of ``k`` or more. Those sums are counted as the attacker
        would: the total less its released parts is the sum of its withheld parts, and any withheld total
        among them may be replaced by its own withheld parts (it less its released parts), at any depth. So
        a withheld row's *strength* is the lesser of its size and its withheld parts' largest strength (two
        months of one lone taxpayer are their street's total less its released months), and where every
        part of a released total is withheld, the weakest sum it gives once some cell below it is opened
        through released parts must cover k too. Where one fails, one more is withheld: the released part
        with the smallest size, or, with none left, the total. With the first condition in a tree of
        equations no single cell is any combination of released ones; the second bounds a sum below by its
        largest member, which may withhold more than needed (finding the least is NP-hard), never less.

        Work is incremental: withholding a row re-checks only the equations it is in and those above it
        (strengths are kept per equation in a heap that forgets stale entries); ``check`` is called as it
        goes (the query's deadline).
        """
        order, parts_of, parent = self.order, self.parts, self.parent
        held = [False] * len(order)
        for index in withheld:
            held[index] = True
        strength: dict[int, int] = {}  # per withheld row: the least its withheld parts' sum can be made to cover
        held_parts = {total: sum(held[p] for p in parts) for total, parts in parts_of.items()}
        strengths: dict[int, list] = {total: [] for total in parts_of}  # per equation: (-strength, part), lazily

        def strongest(total: int) -> int:
            """The largest strength of a withheld part of ``total``'s equation; -1 with none."""
            heap = strengths[total]
            while heap and (not held[heap[0][1]] or strength[heap[0][1]] != -heap[0][0]):
                heapq.heappop(heap)
            return -heap[0][0] if heap else -1

        def own_strength(index: int) -> int:
            return min(size(index), strongest(index)) if held_parts.get(index) else size(index)

        for step, index in enumerate(sorted(withheld, key=lambda i: -self.level[i])):  # parts before totals
            if not step % 4096:
                check()
            strength[index] = own_strength(index)
            if parent[index] is not None:
                heapq.heappush(strengths[parent[index]], (-strength[index], index))
        candidates = {}
        for step, (total, parts) in enumerate(parts_of.items()):
            if not step % 4096:
                check()
            heap = [(size(p), order[p], p) for p in parts if not held[p] and p not in known]
            heapq.heapify(heap)
            candidates[total] = heap
        queue = [(order[total], total) for total in parts_of]
        heapq.heapify(queue)
        queued = set(parts_of)
        added: set[int] = set()

        def enqueue(total: int) -> None:
            if total not in queued:
                queued.add(total)
                heapq.heappush(queue, (order[total], total))

        def withhold(index: int) -> None:
            held[index] = True
            added.add(index)
            if index in parts_of:
                enqueue(index)
            child, total = index, parent[index]
            strength[child] = own_strength(child)
            if total is not None:
                held_parts[total] += 1
            while total is not None:  # a strength changed: re-check the equations above, up to where none does
                heapq.heappush(strengths[total], (-strength[child], child))
                enqueue(total)
                if not held[total]:
                    break
                changed = own_strength(total)
                if changed == strength[total]:
                    break
                strength[total] = changed
                child, total = total, parent[total]

        visits = [0]

        def opened(index: int) -> float:
            """The weakest sum withheld row ``index`` gives once some cell at or below it is opened through
            released or known parts (the rest staying withheld); infinite where none can be."""
            visits[0] += 1
            if not visits[0] % 1024:
                check()
            parts = parts_of.get(index)
            if parts is None:
                return math.inf
            withheld_parts = [p for p in parts if held[p]]
            weakest = strongest(index) if len(withheld_parts) < len(parts) else math.inf  # open it here
            if not withheld_parts:
                return weakest
            first = second = -1
            for part in withheld_parts:
                if strength[part] > first:
                    first, second = strength[part], first
                elif strength[part] > second:
                    second = strength[part]
            for part in withheld_parts:  # or keep its parts and open one of them further down
                below = opened(part)
                if below < weakest:
                    weakest = min(weakest, max(below, second if strength[part] == first else first))
            return weakest

        steps = 0
        while queue:
            steps += 1
            if not steps % 256:
                check()
            _, total = heapq.heappop(queue)
            queued.discard(total)
            parts = parts_of[total]
            members_held = held_parts[total] + held[total]
            if members_held == 1:
                pass
            elif held[total] or not held_parts[total]:
                continue
            elif held_parts[total] == len(parts):
                if opened(total) >= k:
                    continue
            elif strongest(total) >= k:
                continue
            heap = candidates[total]
            while heap and held[heap[0][2]]:
                heapq.heappop(heap)
            if heap:
                withhold(heapq.heappop(heap)[2])
            elif not held[total] and total not in known:
                withhold(total)
            else:
                continue
            enqueue(total)
        return added
