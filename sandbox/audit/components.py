"""Which coverages an audit must read: those whose rows can meet the new answer's, directly or through others.

Cells whose rows never meet cannot be combined into anything about the same taxpayers' rows: the released
cells' row space splits into parts over coverages whose rows are apart, and a leak the new answer causes
lies in the part its own coverage is in (a failing total that spans parts is made of totals of each part,
and a part's total of too few taxpayers is itself one; two parts that pass the rules pass together). The last
holds for the dominance rule only where no taxpayer's amounts change sign: a refund in one part and payments in
another cancel in a total of both, and the others' shares grow past the rule though each part passes. So where
a summed measure is negative somewhere in the dataset and the grant has a dominance rule, the auditor audits
every part together (``Auditor._may_change_sign``; tests/test_attack_refunds.py).
So an audit reads only the coverages of the new one's part, which in a district's monthly reporting is
that month's queries, not every month's.

Whether two coverages' rows can meet is decided from their WHERE alone, never from the data, and only
where it is certain: both constrain one column to values that do not meet (``period = DATE '2025-01-01'``
and ``period = DATE '2025-02-01'``; ``street_code IN ('1', '2')`` and ``= '3'``; ranges on a grid). Anything
else (OR, a function, a column one of them leaves free) counts as meeting. Parts are kept per scope as
union-find over coverages, each part with the union of its members' constraints, so that a new coverage
is compared with each part once.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
from dataclasses import dataclass

import sqlglot
import sqlglot.expressions as exp

# The most values a part's summary keeps of one column; past it the column is free there. Each coverage added to a
# part copies the part's set, and 6,000 coverages of one IN list each (registration_type IN ('173', 'x<i>')) took
# seconds; a free column only makes more coverages meet, which reads more of them, never fewer.
MOST_PART_VALUES = 1_000

# A column's constraint: a finite set of values, or an interval [low, high) of comparable values (None: open).
Values = frozenset
Interval = tuple


@dataclass
class Constraints:
    """Per column (as written, qualified), what a coverage's WHERE lets it be; a column not here is free."""

    columns: dict[str, Values | Interval]

    def meets(self, other: Constraints) -> bool:
        """Whether some row could satisfy both (False only where one column's constraints cannot meet)."""
        for column, mine in self.columns.items():
            theirs = other.columns.get(column)
            if theirs is not None and not _meet(mine, theirs):
                return False
        return True

    def union(self, other: Constraints) -> Constraints:
        """Constraints that every row of either satisfies (a column free in either is free)."""
        joined: dict[str, Values | Interval] = {}
        for column, mine in self.columns.items():
            theirs = other.columns.get(column)
            if theirs is not None:
                both = _join(mine, theirs)
                if both is not None:
                    joined[column] = both
        return Constraints(joined)


class Parts:
    """The parts of one scope's coverages (see the module), grown one coverage at a time."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.part_of: dict[str, int] = {}  # coverage -> its part's id
        self.members: dict[int, list[str]] = {}
        self.summary: dict[int, Constraints] = {}
        self._next = 0

    def add(self, coverage: str) -> int:
        """Place ``coverage`` in a part, merging every part its rows could meet; its part's id."""
        if coverage in self.part_of:
            return self.part_of[coverage]
        mine = constraints_of(coverage, self.dialect)
        meeting = [part for part, summary in self.summary.items() if summary.meets(mine)]
        if meeting:
            part = meeting[0]
        else:
            part, self._next = self._next, self._next + 1
            self.members[part] = []
        summary = mine
        for other in meeting:
            summary = summary.union(self.summary[other])
            if other != part:
                for member in self.members.pop(other):
                    self.part_of[member] = part
                    self.members[part].append(member)
                del self.summary[other]
        self.members[part].append(coverage)
        self.part_of[coverage] = part
        self.summary[part] = summary
        return part

    def with_(self, coverage: str) -> list[str]:
        """Every coverage in the part of ``coverage`` (added first if new)."""
        return list(self.members[self.add(coverage)])


@functools.lru_cache(maxsize=8192)
def constraints_of(coverage: str, dialect: str) -> Constraints:
    """The constraints a coverage's WHERE sets on its columns (only the conjuncts read with certainty)."""
    select = sqlglot.parse_one(coverage, read=dialect)
    where = select.args.get("where")
    table = select.args["from_"].this.name.lower()
    lookups = lookup_names(select)
    columns: dict[str, Values | Interval] = {}
    for term in _conjuncts(where.this) if where is not None else ():
        found = _constraint(term, table, lookups)
        if found is None:
            continue
        column, constraint = found
        columns[column] = _intersect(columns[column], constraint) if column in columns else constraint
    return Constraints(columns)


def _conjuncts(node: exp.Expr):
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        yield from _conjuncts(node.this)
        yield from _conjuncts(node.expression)
    else:
        yield node


def lookup_names(select: exp.Expr) -> dict[str, str]:
    """Per lookup a coverage joins, by the name that qualifies its columns: a name for the lookup that says which
    table it is and on which columns it is joined. Two grants on one dataset may each join a lookup of the same table
    name (``tax.industries`` and ``ref.industries``, or one table on two columns of the dataset), whose columns read
    alike (``industries.section_name``) yet give other values."""
    names = {}
    for join in select.args.get("joins") or []:
        table = join.this
        qualifier = table.alias_or_name.lower()
        on = join.args.get("on")
        sides = sorted(("lookup_" if c.table.lower() == qualifier else "dataset_") + c.name.lower()
                       for c in on.find_all(exp.Column)) if on is not None else \
            ["using_" + i.name.lower() for i in join.args.get("using") or []]
        names[qualifier] = "__" + "__".join([table.db.lower(), table.name.lower(), *sides])
    return names


def _constraint(term: exp.Expr, table: str, lookups: dict[str, str]) -> tuple[str, Values | Interval] | None:
    """(column, constraint) of one conjunct read with certainty, else None. A column of the dataset's own
    table is named bare whether or not the coverage qualifies it (it does when it joins a lookup); a lookup's,
    by :func:`lookup_names`."""
    name = functools.partial(_name, table=table, lookups=lookups)
    if isinstance(term, exp.EQ) and isinstance(term.this, exp.Column):
        value = _literal(term.expression)
        return (name(term.this), frozenset([value])) if value is not None else None
    if isinstance(term, exp.In) and isinstance(term.this, exp.Column) and not term.args.get("query"):
        values = [_literal(v) for v in term.expressions]
        return (name(term.this), frozenset(values)) if values and None not in values else None
    if isinstance(term, exp.Between) and isinstance(term.this, exp.Column):
        low, high = _literal(term.args["low"]), _literal(term.args["high"])
        if low is None or high is None:
            return None
        return name(term.this), (low, high, True)  # BETWEEN includes its upper end
    bounds = {exp.GTE: "low", exp.GT: "low", exp.LT: "high", exp.LTE: "high"}
    for kind, side in bounds.items():
        if isinstance(term, kind) and isinstance(term.this, exp.Column):
            value = _literal(term.expression)
            if value is None:
                return None
            # Open ends are kept wide (a strict bound read as inclusive): only ever more meeting, never less.
            return name(term.this), (value, None, True) if side == "low" else (None, value, True)
    return None


def _name(column: exp.Column, *, table: str, lookups: dict[str, str]) -> str:
    qualifier = column.table.lower()
    return f"{lookups.get(qualifier, qualifier)}.{column.name.lower()}" if qualifier and qualifier != table \
        else column.name.lower()


def _literal(node: exp.Expr):
    """A literal's value with its kind, so values of different kinds never compare: ("s", text), ("n", number),
    ("d", date), or None for anything else."""
    if isinstance(node, exp.Paren):
        return _literal(node.this)
    if isinstance(node, exp.Neg):
        inner = _literal(node.this)
        return ("n", -inner[1]) if inner is not None and inner[0] == "n" else None
    if isinstance(node, exp.Literal):
        if node.is_string:
            return ("s", node.name)
        try:
            return ("n", decimal.Decimal(node.name))
        except decimal.InvalidOperation:
            return None
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string \
            and node.to.this == exp.DataType.Type.DATE:
        try:
            return ("d", dt.date.fromisoformat(node.this.name))
        except ValueError:
            return None
    return None


def _kinds(side) -> set:
    if isinstance(side, frozenset):
        return {value[0] for value in side}
    return {end[0] for end in side[:2] if end is not None}


def _meet(a, b) -> bool:
    if len(_kinds(a) | _kinds(b)) > 1:
        return True  # a text compared with a date, say: the engine's casts decide, so not read with certainty
    if isinstance(a, frozenset) and isinstance(b, frozenset):
        return bool(a & b)
    if isinstance(a, frozenset):
        return any(_inside(v, b) for v in a)
    if isinstance(b, frozenset):
        return any(_inside(v, a) for v in b)
    low = _max_low(a[0], b[0])
    high = _min_high(a[1], b[1])
    return low is None or high is None or low[1] <= high[1]


def _inside(value, interval) -> bool:
    low, high, _ = interval
    for end in (low, high):
        if end is not None and end[0] != value[0]:
            return True  # values of other kinds: not read with certainty
    return (low is None or low[1] <= value[1]) and (high is None or value[1] <= high[1])


def _max_low(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a if a[0] != b[0] or a[1] >= b[1] else b


def _min_high(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a if a[0] != b[0] or a[1] <= b[1] else b


def _intersect(a, b):
    """A column constrained twice in one WHERE: anything both allow (kept wide where unsure)."""
    if len(_kinds(a) | _kinds(b)) > 1:
        return a
    if isinstance(a, frozenset) and isinstance(b, frozenset):
        return a & b
    if isinstance(a, frozenset):
        return frozenset(v for v in a if _inside(v, b))
    if isinstance(b, frozenset):
        return frozenset(v for v in b if _inside(v, a))
    return (_max_low(a[0], b[0]), _min_high(a[1], b[1]), True)


def _join(a, b):
    """What either allows: a set with a set is their union (free past :data:`MOST_PART_VALUES`); anything with an
    interval is the widest interval holding both, or free (None) where that cannot be said."""
    if isinstance(a, frozenset) and isinstance(b, frozenset):
        both = a | b
        return both if len(both) <= MOST_PART_VALUES else None
    values = [v for side in (a, b) if isinstance(side, frozenset) for v in side]
    intervals = [side for side in (a, b) if not isinstance(side, frozenset)]
    ends = [end for interval in intervals for end in interval[:2]]
    if None in ends:
        return None
    points = ends + values
    if len({p[0] for p in points}) != 1:
        return None
    ordered = sorted(p[1] for p in points)
    kind = points[0][0]
    return ((kind, ordered[0]), (kind, ordered[-1]), True)
