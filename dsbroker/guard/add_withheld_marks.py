"""add_withheld_marks: whatever the outer query computes from a withheld cell is withheld too (NULL, and marked).

In the in-memory engine a withheld cell is NULL, and beside every column that disclosure control may
withhold a mark column says, row by row, whether it did (``internal_names.withheld_mark``). This rule
rewrites the outer query (qualified by ``resolve_released_tables``) so that every SELECT computes beside
each of its outputs whether that output reads a withheld cell, and outputs NULL where it does:

- a row's expression reads a withheld cell when any column it reads is marked (``COALESCE(v, 0)`` of a
  withheld ``v`` is withheld, not 0);
- an aggregate, when any row it adds up (its FILTER passing, or its FILTER itself) is marked, or any
  group key of the SELECT is (a withheld key's rows could belong to any group); a window function, when
  any row of its frame is marked, or an ORDER BY or PARTITION BY of the window reads a marked value in its
  partition (ranks and neighbours then depend on where the withheld value lies); ``LAG``, ``LEAD`` and
  the other navigations take the mark of the row they read.

Which rows a SELECT keeps is a different matter. In the outermost SELECT, WHERE, HAVING, QUALIFY and ORDER
BY see a withheld cell as NULL, as a one-level query's HAVING and ORDER BY do; nothing is computed from the
rows they leave. Anywhere else the rows kept would feed a later aggregate unmarked, so a filter, a
grouping or a DISTINCT on a cell value, and a join on one, are refused there (and beside aggregates or
window functions in the outermost SELECT too: FILTER (WHERE ...) says the same and is marked); LIMIT and
OFFSET only in the outermost SELECT. CAST runs as TRY_CAST, so that no value (released or not) makes the
outer query fail.

Marks are never wrong in the other direction: a mark that says withheld where the value could not have
changed costs an answer, one missing would present a value computed from a hidden cell as if it were whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot.expressions as exp
from sqlglot.optimizer.scope import traverse_scope

from dsbroker.guard import internal_names as names
from dsbroker.guard._tree import AGGREGATE_TYPES, refuse
from dsbroker.guard.reject_outer_unsupported import NAVIGATIONS, RANKINGS
from dsbroker.guard.sql_names import sql_name

Marks = dict[str, str]  # per column (lower case) of a table: its mark column, where it can be withheld


@dataclass(frozen=True)
class MarkedQuery:
    """The outer query with its marks: per output column, the result position of its mark (or None)."""

    expression: exp.Select
    names: tuple[str, ...]
    marks: tuple[int | None, ...]


def add_withheld_marks(expression: exp.Select, released: dict[str, Marks]) -> MarkedQuery:
    """Rewrite the qualified outer query to mark (and NULL) every output that reads a withheld cell.

    ``released`` gives, per released table, the mark of each column that may be withheld."""
    for cast in list(expression.find_all(exp.Cast)):
        if not isinstance(cast, exp.TryCast) and not (isinstance(cast.this, exp.Literal) and cast.to.this in (
                exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP)):
            cast.replace(exp.TryCast(this=cast.this, to=cast.to))
    relations: dict[int, Marks] = {}
    root: tuple[tuple[str, ...], tuple[int | None, ...]] = ((), ())
    for scope in traverse_scope(expression):
        select = scope.expression
        if not isinstance(select, exp.Select):
            refuse("add_withheld_marks", "SET_OPERATION_NOT_ALLOWED", "UNION, INTERSECT and EXCEPT are not allowed "
                   "in the outer query", construct=sql_name(select))
        sources: dict[str, Marks] = {}
        for alias, source in scope.sources.items():
            if isinstance(source, exp.Table):
                sources[alias] = released.get(source.name, {})
            else:
                sources[alias] = relations[id(source.expression)]
        marked = _Select(select, sources, final=scope.is_root)
        relations[id(select)] = marked.rewrite()
        if scope.is_root:
            root = marked.outputs, marked.positions
    return MarkedQuery(expression, *root)


class _Select:
    """One SELECT of the outer query, with the marks of its sources."""

    def __init__(self, select: exp.Select, sources: dict[str, Marks], *, final: bool) -> None:
        self.select, self.sources, self.final = select, sources, final
        self.aggregated = bool(select.args.get("group")) or any(
            _aggregate_outside_windows(p) for p in select.expressions)
        self.outputs: tuple[str, ...] = ()
        self.positions: tuple[int | None, ...] = ()

    def rewrite(self) -> Marks:
        """Mark the outputs, refuse the filters the marks cannot follow; the marks of this SELECT's outputs."""
        self._check_filters()
        return self._mark_outputs([self.value(projection.unalias()) for projection in self.select.expressions])

    def _check_filters(self) -> None:
        """Refuse what decides which rows a SELECT keeps from a cell value, where a later aggregate reads them."""
        select = self.select
        windowed = any(p.find(exp.Window) for p in select.expressions)
        where = select.args.get("where")
        if where is not None and self.row(where.this) is not None and (not self.final or self.aggregated or windowed):
            self._refuse("WHERE", "use FILTER (WHERE ...) in the aggregate, or filter in the outermost SELECT")
        for join in select.args.get("joins") or []:
            on = join.args.get("on")
            using = [exp.column(i.name, table=t) for i in join.args.get("using") or [] for t in self.sources]
            if (on is not None and self.row(on) is not None) or any(self.row(c) is not None for c in using):
                self._refuse("JOIN", "join released tables on their keys")
        group = select.args.get("group")
        self.key_mark = _any([self.row(key) for key in group.expressions]) if group is not None else None
        if self.key_mark is not None and not self.final:
            self._refuse("GROUP BY", "group by a cell value in the outermost SELECT only")
        if not self.final:
            for arg, clause in (("HAVING", "having"), ("QUALIFY", "qualify")):
                node = select.args.get(clause)
                if node is not None and self.value(node.this) is not None:
                    self._refuse(arg, "filter on a cell value in the outermost SELECT only")
            for arg in ("limit", "offset"):
                if select.args.get(arg) is not None:
                    refuse("add_withheld_marks", "OUTER_LIMIT_NOT_ALLOWED", "LIMIT and OFFSET are allowed in the "
                           "outermost SELECT only: which rows they keep would decide, unmarked, what a later "
                           "aggregate adds up", construct=arg.upper())
        if select.args.get("distinct") and not self.final and any(
                self.value(projection.unalias()) is not None for projection in select.expressions):
            self._refuse("DISTINCT", "use DISTINCT on cell values in the outermost SELECT only")

    def _mark_outputs(self, marks: list[exp.Expr | None]) -> Marks:
        """Each output that reads a withheld cell NULL where it does, and its mark beside the outputs."""
        select = self.select
        own: Marks = {}
        positions: list[int | None] = []
        width = len(select.expressions)
        extra = []
        for index, (projection, mark) in enumerate(zip(list(select.expressions), marks, strict=True)):
            if mark is None:
                positions.append(None)
                continue
            mark = exp.func("COALESCE", mark, exp.false())
            value = projection.unalias()
            value.replace(exp.Case(ifs=[exp.If(this=mark, true=exp.null())], default=value.copy()))
            name = names.withheld_mark(index)
            extra.append(exp.alias_(mark.copy(), name))
            own[projection.alias_or_name.lower()] = name
            positions.append(width + len(extra) - 1)
        select.set("expressions", list(select.expressions) + extra)
        self.outputs = tuple(projection.alias_or_name for projection in select.expressions[:width])
        self.positions = tuple(positions)
        return own

    def _refuse(self, clause: str, fix: str) -> None:
        refuse("add_withheld_marks", "OUTER_FILTER_ON_CELL", f"{clause} reads a released cell here, so a withheld "
               f"cell could change unmarked what is computed from the rows it keeps; {fix}", construct=clause)

    def row(self, node: exp.Expr) -> exp.Expr | None:
        """The mark of ``node`` computed on one row of the sources (None: it can never be withheld)."""
        if isinstance(node, exp.Column):
            mark = self.sources.get(node.table, {}).get(node.name.lower())
            return exp.column(mark, table=node.table) if mark is not None else None
        return _any([self.row(child) for child in node.iter_expressions()])

    def value(self, node: exp.Expr) -> exp.Expr | None:
        """The mark of ``node`` where this SELECT computes it: per row, or per group where it aggregates."""
        if isinstance(node, exp.Window):
            return self._window(node)
        if _is_aggregate(node):
            return self._aggregate(node)
        if isinstance(node, exp.Column):
            mark = self.row(node)
            if mark is not None and self.aggregated:
                return exp.func("COALESCE", exp.LogicalOr(this=mark), exp.false())  # a key: its rows' marks
            return mark
        return _any([self.value(child) for child in node.iter_expressions()])

    def _aggregate(self, node: exp.Expr) -> exp.Expr | None:
        aggregate, condition = (node.this, node.expression.this) if isinstance(node, exp.Filter) else (node, None)
        read = _any([self.row(child) for child in aggregate.iter_expressions()])
        if condition is not None:
            tested = self.row(condition)
            passing = exp.and_(exp.func("COALESCE", condition.copy(), exp.false()), read) if read is not None else None
            read = _any([tested, passing])
        mark = exp.func("COALESCE", exp.LogicalOr(this=read), exp.false()) if read is not None else None
        return _any([mark, self._keys_marked()])

    def _keys_marked(self) -> exp.Expr | None:
        """Where a group key may be withheld in some row, every group may hold rows that belong to another."""
        if self.key_mark is None:
            return None
        return exp.Window(this=exp.LogicalOr(this=exp.LogicalOr(this=self.key_mark.copy())), over="OVER")

    def _window(self, window: exp.Window) -> exp.Expr | None:
        function = window.this
        if isinstance(function, RANKINGS):
            read = None
        elif isinstance(function, NAVIGATIONS):
            read = self.value(function.this)
            if read is not None:
                navigation = function.copy()
                navigation.set("this", read)
                if isinstance(function, (exp.Lag, exp.Lead)):  # past the partition's edge the default is no cell
                    navigation.set("offset", function.args.get("offset") or exp.Literal.number(1))
                    navigation.set("default", exp.false())
                read = _over(navigation, window)
        else:
            aggregate, condition = (function.this, function.expression.this) if isinstance(function, exp.Filter) \
                else (function, None)
            read = _any([self.value(child) for child in aggregate.iter_expressions()])
            if condition is not None:
                passing = exp.and_(exp.func("COALESCE", condition.copy(), exp.false()), read) \
                    if read is not None else None
                read = _any([self.value(condition), passing])
            read = _over(exp.LogicalOr(this=read), window) if read is not None else None
        order = window.args.get("order")
        ordered = _any([self.value(o.this) for o in order.expressions]) if order is not None else None
        partitions = window.args.get("partition_by") or []
        partitioned = _any([self.value(p) for p in partitions])
        if ordered is not None:
            ordered = exp.Window(this=exp.LogicalOr(this=ordered), partition_by=[p.copy() for p in partitions],
                                 over="OVER")
        if partitioned is not None:
            partitioned = exp.Window(this=exp.LogicalOr(this=partitioned), over="OVER")
        marks = [read, ordered, partitioned, self._keys_marked() if self.aggregated else None]
        return _any([exp.func("COALESCE", mark, exp.false()) if mark is not None else None for mark in marks])


def _over(function: exp.Expr, window: exp.Window) -> exp.Window:
    """``function`` over ``window``'s partition, order and frame."""
    over = window.copy()
    over.set("this", function)
    return over


def _any(marks: list[exp.Expr | None]) -> exp.Expr | None:
    present = [mark for mark in marks if mark is not None]
    if not present:
        return None
    combined = present[0]
    for mark in present[1:]:
        combined = exp.or_(combined, mark)
    return combined


def _is_aggregate(node: exp.Expr) -> bool:
    return isinstance(node, AGGREGATE_TYPES) or (isinstance(node, exp.Filter) and isinstance(node.this,
                                                                                             AGGREGATE_TYPES))


def _aggregate_outside_windows(node: exp.Expr) -> bool:
    if isinstance(node, exp.Window):
        function = node.this.this if isinstance(node.this, exp.Filter) else node.this
        return any(_aggregate_outside_windows(child) for child in function.iter_expressions())
    if _is_aggregate(node):
        return True
    return any(_aggregate_outside_windows(child) for child in node.iter_expressions())

