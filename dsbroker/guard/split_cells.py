"""split_cells: split the query into the cells the engine computes and what the sandbox computes from them.

The engine gets a query that returns only cells: each group key, and per cell the statistics the
caller's aggregates are made of (distinct entities, rows, per-measure sums and counts, granted minima
and maxima), each a plain aggregate of one column. None of them can fail or overflow for any data: a
sum of integers is computed in a type wider than any table's total, and no caller arithmetic reaches the
engine. Everything else (the caller's outputs, arithmetic on aggregates, HAVING, ORDER BY, LIMIT)
becomes a :class:`~dsbroker.guard.release_plan.CellPlan` that the sandbox evaluates on the cells that
disclosure control released. Positions and names are resolved against the caller's own outputs here,
before any internal column exists, and the engine's columns carry names no caller can write.

The engine still orders and cuts the rows when the order is by group keys alone and nothing needs
every cell (no HAVING, no totals): which rows come back then depends on no cell's value.
"""

from __future__ import annotations

from fractions import Fraction
from typing import cast

import sqlglot.expressions as exp

from dsbroker.guard import internal_names as names
from dsbroker.guard._tree import AGGREGATE_TYPES, aliased, column_key, refuse
from dsbroker.guard.date_texts import FORMATS, engine_key, strftime_format
from dsbroker.guard.linear_forms import linear_form, number_literal, widest
from dsbroker.guard.literals import read_date, read_timestamp
from dsbroker.guard.release_plan import (Average, Call, CellPlan, Const, Grouping, Key, Linear, Node, Ordering,
                                       Output, Stat, Statistic, statistics_read)
from dsbroker.policy.model import Dominance, Noise
from dsbroker.guard.internal_names import (CELL_PLAN_META, COVERAGE_META, LINEAR_FORM_META,
                                           RELEASED_FIRST_META, TOTALS_META)
from dsbroker.guard.sql_names import sql_name

# Where HAVING or ORDER BY by a value must see every cell, the engine may return this many times the
# grant's cap. Those cells are the ones the answer shows or marks (where small cells are dropped, the
# engine drops them first), so the cap counts nothing the caller does not see.
WHOLE_TABLE_FACTOR = 10
# A table with totals, and a noise policy's cells, are computed whole, small cells included: secondary
# suppression and the noisy threshold must see every one. A table larger than this is refused; it is a
# bound on resources, like memory, and says only that the table holds more cells than any report needs.
MOST_CELLS = 1_000_000
# What the sandbox computes from each released cell (outputs, HAVING, ORDER BY, constants folded) is
# bounded, so that the work after the engine is bounded by the cells it returned.
MOST_OPERATIONS = 2_000

_ARITHMETIC: dict[type[exp.Expr], str] = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/"}
_COMPARISONS: dict[type[exp.Expr], str] = {exp.EQ: "=", exp.NEQ: "<>", exp.LT: "<", exp.LTE: "<=", exp.GT: ">",
                                           exp.GTE: ">="}
_DATE_PARTS: dict[type[exp.Expr], str] = {exp.Year: "year", exp.Quarter: "quarter", exp.Month: "month"}
_TRUNC_UNITS = {"YEAR": "trunc_year", "QUARTER": "trunc_quarter", "MONTH": "trunc_month"}
# strftime of a year or a month: the engine groups by the date part (date_texts), the sandbox writes the text.
TEXT_OPS = {"year": "text_year", "month": "text_month"}


def split_cells(expression: exp.Select, dataset: str, columns: dict, entity: str, max_groups: int,
                min_entities: int, encrypted: bool, dominance: Dominance | None, noise: Noise | None) -> exp.Select:
    """Rewrite into the cell query (keys and per-cell statistics) and attach the plan of what follows.

    The engine returns at most the grant's ``max_groups`` (one more, to tell a cut table), or, where
    HAVING, ORDER BY or totals need every cell, up to ``WHOLE_TABLE_FACTOR`` times as many; the
    sandbox refuses a table larger than that rather than filter or order a part of it.
    """
    if noise is not None:
        return expression  # add_noise_measures writes the noise policy's own query
    group = expression.args.get("group")
    keys = list(group.expressions) if group is not None else []
    lowering = _Lowering(keys, columns, dataset, entity)
    outputs = tuple(Output(_output_name(p), node := lowering.lower(p.unalias()), _is_cell(node))
                    for p in expression.expressions)
    having = expression.args.get("having")
    having_node = lowering.lower(having.this) if having is not None else None
    order = expression.args.get("order")
    ordering = tuple(Ordering(lowering.lower(o.this), bool(o.args.get("desc")), bool(o.args.get("nulls_first")))
                     for o in (order.expressions if order is not None else ()))
    limit = expression.args.get("limit")  # enforce_group_cap checked it and capped it at max_groups + 1
    limit = int(limit.expression.name) if limit is not None else None
    sets = expression.meta.get(TOTALS_META) or ()
    totals = bool(sets)
    engine_ordered = bool(ordering) and having is None and not totals and all(
        isinstance(o.node, Key) for o in ordering)
    order_asked = bool(ordering)
    if (engine_ordered or not ordering) and having is None and not totals:
        # The engine orders by the keys asked for and then by every other key, so which rows a LIMIT keeps,
        # and in what order they come, depends on the released keys alone, never on how the engine
        # happened to work (ties included).
        ordered = {_key_index(o.node) for o in ordering}
        ordering = ordering + tuple(Ordering(Key(i), False, False) for i in range(len(keys)) if i not in ordered)
        engine_ordered = bool(ordering)
    plan = CellPlan(
        keys=len(keys), statistics=tuple(lowering.statistics), outputs=outputs, having=having_node, order=ordering,
        limit=limit, engine_ordered=engine_ordered,
        summed=_summed(lowering.statistics),
        dominated=_summed(lowering.statistics) if dominance is not None else (),
        totals=tuple(next(i for i, o in enumerate(outputs) if o.node in (Key(k), _text_of(Key(k), keys[k])))
                     for k in range(len(keys))) if totals else (),
        grouping_sets=tuple(sets),
        whole_table=having is not None or totals or (order_asked and not engine_ordered))

    size = sum(_plan_size(o.node) for o in plan.outputs) + _plan_size(plan.having) + sum(
        _plan_size(o.node) for o in plan.order)
    if size > MOST_OPERATIONS:
        refuse("split_cells", "QUERY_TOO_COMPLEX", f"the query is too complex to check: what it computes from each "
               f"cell takes more than {MOST_OPERATIONS} operations")
    # The engine groups by strftime's date part; the caller's text is the plan's, from the released key.
    keys = [engine_key(key) if strftime_format(key) is not None else key for key in keys]
    coverage = _coverage(expression, keys)
    cells = exp.Select(expressions=[aliased(key.copy(), names.key(i)) for i, key in enumerate(keys)]
                       + [aliased(_statistic_sql(s, entity), names.statistic(i))
                          for i, s in enumerate(plan.statistics)])
    for arg in ("from_", "joins", "where"):
        if expression.args.get(arg):
            cells.set(arg, expression.args[arg])
    if keys:
        cells.set("group", exp.Group(expressions=keys))  # the caller's query is not used again
    if engine_ordered:
        by_keys = [exp.Ordered(this=exp.column(names.key(_key_index(o.node))), desc=o.descending,
                               nulls_first=o.nulls_first) for o in ordering]
        if encrypted:
            # Small groups never leave the sandbox in this mode, so they must not take the places the cap
            # leaves: the released ones come first, and which of them come back depends on them alone.
            released = exp.GTE(this=exp.Count(this=exp.Distinct(expressions=[exp.column(entity)])),
                               expression=exp.Literal.number(min_entities))
            first = exp.Ordered(this=released, desc=True, nulls_first=False)
            first.meta[RELEASED_FIRST_META] = min_entities  # add_entity_cells adds the contributor rule to it
            by_keys.insert(0, first)
        cells.set("order", exp.Order(expressions=by_keys))
    if totals:
        engine_limit = MOST_CELLS + 1
    elif plan.whole_table:
        engine_limit = max_groups * WHOLE_TABLE_FACTOR + 1
    else:
        engine_limit = min(limit, max_groups + 1) if limit is not None else max_groups + 1
    cells.set("limit", exp.Limit(expression=exp.Literal.number(engine_limit)))
    cells.meta.update(expression.meta)
    cells.meta[CELL_PLAN_META] = plan
    cells.meta[COVERAGE_META] = coverage
    return cells


def _coverage(expression: exp.Select, keys: list[exp.Expr]) -> exp.Select:
    """SELECT <the keys> FROM/JOIN/WHERE of the query: the rows each cell adds up (``GuardedQuery.coverage``)."""
    coverage = exp.Select(expressions=[aliased(key.copy(), names.key(i)) for i, key in enumerate(keys)] or
                          [exp.Literal.number(1)])
    for arg in ("from_", "where"):
        if expression.args.get(arg):
            coverage.set(arg, expression.args[arg].copy())
    if expression.args.get("joins"):
        coverage.set("joins", [join.copy() for join in expression.args["joins"]])
    return coverage


class _Lowering:
    """Turns the caller's expressions over aggregates and keys into release-plan nodes, collecting statistics."""

    def __init__(self, keys: list[exp.Expr], columns: dict, dataset: str, entity: str) -> None:
        self.keys, self.columns, self.dataset, self.entity = keys, columns, dataset, entity
        self.statistics: list[Statistic] = [Statistic("entities")]  # statistic 0: the threshold's count

    def statistic(self, kind: str, measure: str | None = None) -> int:
        wanted = Statistic(kind, measure)
        if wanted not in self.statistics:
            self.statistics.append(wanted)
        return self.statistics.index(wanted)

    def lower(self, node: exp.Expr) -> Node:
        for index, key in enumerate(self.keys):
            if node == key:
                return _text_of(Key(index), key)
        if isinstance(node, AGGREGATE_TYPES):
            return self.aggregate(node)
        if isinstance(node, exp.Paren):
            return self.lower(node.this)
        if isinstance(node, (exp.Literal, exp.Boolean, exp.Null, exp.Cast)):
            return self.constant(node)
        if isinstance(node, exp.Grouping):  # reject_invalid_totals let it through of ROLLUP keys only
            # The key itself, not what the caller sees of it (a strftime key is lowered to the key's text).
            return Grouping(tuple(_key_index(_key_of(self.lower(key))) for key in node.expressions))
        return self.operation(node)

    def constant(self, node: exp.Literal | exp.Boolean | exp.Null | exp.Cast) -> Const:
        if isinstance(node, exp.Literal):
            if node.is_string:
                return Const(node.name, "text")
            value, kind = number_literal(node, rule="split_cells", dataset=self.dataset)
            return Const(value, kind)
        if isinstance(node, exp.Boolean):
            return Const(node.this, "bool")
        if isinstance(node, exp.Null):
            return Const(None, "null")
        return _date_literal(node, self.dataset)  # reject_unsupported_syntax allows a DATE or TIMESTAMP literal only

    def operation(self, node: exp.Expr) -> Node:
        """An operator over lowered arguments (numbers alone folded into one constant)."""
        if isinstance(node, exp.Neg):
            return _folded(Call("neg", (self.lower(node.this),)))
        if isinstance(node, exp.Not):
            return Call("not", (self.lower(node.this),))
        if isinstance(node, exp.Binary) and type(node) in _ARITHMETIC:
            return _folded(Call(_ARITHMETIC[type(node)], (self.lower(node.left), self.lower(node.right))))
        if isinstance(node, exp.Binary) and type(node) in _COMPARISONS:
            return Call(_COMPARISONS[type(node)], (self.lower(node.left), self.lower(node.right)))
        if isinstance(node, (exp.And, exp.Or)):
            return Call("and" if isinstance(node, exp.And) else "or", (self.lower(node.left), self.lower(node.right)))
        if isinstance(node, exp.In):
            return Call("in", (self.lower(node.this), *(self.lower(v) for v in node.expressions)))
        if isinstance(node, exp.Between):
            return Call("between", (self.lower(node.this), self.lower(node.args["low"]),
                                    self.lower(node.args["high"])))
        if type(node) in _DATE_PARTS:
            return Call(_DATE_PARTS[type(node)], (self.lower(node.this),))
        if isinstance(node, (exp.TimestampTrunc, exp.DateTrunc)):
            return Call(_TRUNC_UNITS[node.text("unit").upper()], (self.lower(node.this),))
        # reject_ungrouped_columns and reject_unsupported_syntax let nothing else through.
        refuse("split_cells", "CONSTRUCT_NOT_ALLOWED", f"{sql_name(node)} is not allowed here", table=self.dataset,
               construct=sql_name(node))

    def aggregate(self, aggregate: exp.Expr) -> Node:
        argument = aggregate.this
        if isinstance(aggregate, exp.Count):
            if isinstance(argument, exp.Star):
                return Stat(self.statistic("rows"))
            if isinstance(argument, exp.Distinct):
                return Stat(0)
            return Stat(self.statistic("count", column_key(argument)))
        name = type(aggregate).__name__.upper()
        form = aggregate.meta.get(LINEAR_FORM_META) or linear_form(argument, aggregate=name, columns=self.columns,
                                                                   dataset=self.dataset)
        if isinstance(aggregate, exp.Sum):
            return Linear(tuple((coefficient, self.statistic("sum", measure))
                                for measure, coefficient in form.terms.items()), form.kind)
        ((measure, coefficient),) = form.terms.items()  # reject_invalid_aggregates allows one measure term here
        if isinstance(aggregate, exp.Avg):
            return Average(coefficient, self.statistic("sum", measure), self.statistic("count", measure))
        kind = "min" if isinstance(aggregate, exp.Min) else "max"
        return Linear(((coefficient, self.statistic(kind, measure)),), widest(form.kind, "int"))


def _text_of(key: Key, written: exp.Expr) -> Node:
    """``key`` where the caller grouped by a column or date part; the text of it where by strftime (date_texts)."""
    format_ = strftime_format(written)
    return key if format_ is None else Call(TEXT_OPS[FORMATS[format_]], (key,))


def _key_of(node: Node) -> Node:
    """The key ``node`` is, or writes the text of (:func:`_text_of`); ``node`` itself otherwise."""
    if isinstance(node, Call) and node.op in TEXT_OPS.values() and isinstance(node.args[0], Key):
        return node.args[0]
    return node


def _folded(call: Call) -> Node:
    """Arithmetic on numbers alone, done once here, exactly, rather than once per released cell."""
    numbers = [arg for arg in call.args if isinstance(arg, Const) and arg.kind in ("int", "decimal", "double")]
    if len(numbers) != len(call.args):
        return call
    values = [cast(Fraction, arg.value) for arg in numbers]  # a number's value is exact: number_literal
    if call.op == "neg":
        return Const(-values[0], numbers[0].kind)
    left, right = values
    kind = "double" if call.op == "/" else widest(*(arg.kind for arg in numbers))
    if call.op == "/":
        return Const(None, "null") if right == 0 else Const(Fraction(left) / right, kind)
    return Const(left + right if call.op == "+" else left - right if call.op == "-" else left * right, kind)


def _plan_size(node: Node | None) -> int:
    """The number of operations evaluating ``node`` takes, per cell."""
    if isinstance(node, Call):
        return 1 + sum(_plan_size(arg) for arg in node.args)
    if isinstance(node, Linear):
        return len(node.terms)
    return 0 if node is None else 1


def _statistic_sql(statistic: Statistic, entity: str) -> exp.Expr:
    if statistic.kind == "entities":
        return exp.Count(this=exp.Distinct(expressions=[exp.column(entity)]))
    if statistic.kind == "rows":
        return exp.Count(this=exp.Star())
    column = exp.column(_measure(statistic))
    return {"sum": exp.Sum, "count": exp.Count, "min": exp.Min, "max": exp.Max}[statistic.kind](this=column)


def _summed(statistics: list[Statistic]) -> tuple[str, ...]:
    """The measures a SUM statistic adds up, in order."""
    return tuple(_measure(s) for s in statistics if s.kind == "sum")


def _measure(statistic: Statistic) -> str:
    if statistic.measure is None:
        raise AssertionError(f"a {statistic.kind} statistic is always of a measure")
    return statistic.measure


def _key_index(node: Node) -> int:
    """The key an ORDER BY term the engine applies names: the engine orders by group keys alone."""
    if not isinstance(node, Key):
        raise AssertionError("the engine orders by group keys only")
    return node.index


def _is_cell(node: Node) -> bool:
    return bool(statistics_read(node))


def _output_name(projection: exp.Expr) -> str:
    if isinstance(projection, exp.Alias):
        return projection.alias
    if isinstance(projection, exp.Column):
        return projection.name
    return projection.sql(dialect="duckdb")


def _date_literal(node: exp.Cast, dataset: str) -> Const:
    """A DATE or TIMESTAMP literal (reject_unsupported_syntax read it already, in the strict form)."""
    is_date = node.to.this == exp.DataType.Type.DATE
    value = (read_date if is_date else read_timestamp)(node.this.name)
    return Const(value, "date" if is_date else "timestamp")
