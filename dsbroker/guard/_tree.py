"""Helpers the guard's rules share: refusals, conjunct splitting, aggregate lookup."""

from __future__ import annotations

from typing import Any, Iterator, NoReturn

import sqlglot.expressions as exp

from dsbroker.errors import REASONS, GuardError, GuardPermissionError

AGGREGATE_TYPES: tuple[type[exp.Expr], ...] = (exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max)
AGGREGATE_NAMES: dict[type[exp.Expr], str] = {exp.Count: "COUNT", exp.Sum: "SUM", exp.Avg: "AVG", exp.Min: "MIN",
                                              exp.Max: "MAX"}


def refuse(rule: str, reason: str, message: str, *, table: str | None = None,
           column: str | None = None, **metadata: Any) -> NoReturn:
    """Raise the guard's refusal; ``rule``, ``table`` and ``column`` go into ErrorInfo metadata. A reason whose
    code is PERMISSION_DENIED (a table or column the grant does not cover) raises a GuardPermissionError."""
    cls = GuardPermissionError if REASONS[reason].code == "PERMISSION_DENIED" else GuardError
    raise cls(message, reason=reason, rule=rule, table=table, column=column, **metadata)


def conjuncts(condition: exp.Expr | None) -> Iterator[exp.Expr]:
    """The terms of an AND tree (parentheses unwrapped); nothing for None."""
    if condition is None:
        return
    condition = condition.unnest()
    if isinstance(condition, exp.And):
        yield from conjuncts(condition.left)
        yield from conjuncts(condition.right)
    else:
        yield condition


def row_conditions(expression: exp.Select) -> list[exp.Expr]:
    """The nodes whose ``this`` is a condition on rows: WHERE, and each WHEN of a CASE outside every aggregate
    and outside WHERE (a bucket of a group column, ``buckets``). The safe forms and the filter checks treat
    each alike, so a bucket's WHEN means exactly what the same condition means in WHERE."""
    holders: list[exp.Expr] = []
    where = expression.args.get("where")
    if where is not None:
        holders.append(where)
    for case in expression.find_all(exp.Case):
        if enclosing_aggregate(case) is None and case.find_ancestor(exp.Where) is None:
            holders.extend(case.args.get("ifs") or [])
    return holders


def enclosing_aggregate(node: exp.Expr) -> exp.Expr | None:
    """The nearest aggregate function above ``node``, if any."""
    parent = node.parent
    while parent is not None:
        if isinstance(parent, AGGREGATE_TYPES):
            return parent
        parent = parent.parent
    return None


def select_clauses(select: exp.Select) -> Iterator[tuple[str, exp.Expr]]:
    """Each clause of the query that can hold columns, with its SQL name."""
    for projection in select.expressions:
        yield "SELECT", projection
    for name, key in (("WHERE", "where"), ("GROUP BY", "group"), ("HAVING", "having"), ("ORDER BY", "order")):
        clause = select.args.get(key)
        if clause is not None:
            yield name, clause


def column_key(column: exp.Column) -> str:
    """How the grant's column map names ``column``: ``name`` in the dataset, ``table.name`` in a lookup."""
    return f"{column.table}.{column.name}" if column.table else column.name


def aliased(node: exp.Expr, name: str) -> exp.Alias:
    """``node AS name`` for a name the guard wrote (a plain identifier), taking ``node`` as it is."""
    return exp.Alias(this=node, alias=exp.Identifier(this=name, quoted=False))


def internal_column(name: str) -> exp.Column:
    """A reference to a column the guard named (a plain identifier)."""
    return exp.Column(this=exp.Identifier(this=name, quoted=False))


def table_of(column: exp.Expr, dataset: str) -> str:
    """The full name of the table ``column`` belongs to (set by resolve_table for lookup columns)."""
    table: str = column.meta.get("table", dataset)
    return table


def output_name(projection: exp.Expr) -> str | None:
    """The alias of a projection, if it has one."""
    return projection.alias if isinstance(projection, exp.Alias) else None


def per_cell_and_entity(expression: exp.Select, keys: list, entity_column: exp.Column) -> exp.Select:
    """Move the query's source (FROM, joins, WHERE) into a query per cell and entity: group keys as
    ``cell_key(i)``, the entity as ``ENTITY`` and its row count as ``ROWS``; the caller adds per-entity sums."""
    from dsbroker.guard import internal_names as names

    # ``keys`` and ``entity_column`` move into the inner query, which groups by copies of them.
    inner = exp.Select(expressions=[aliased(key, names.cell_key(i)) for i, key in enumerate(keys)]
                       + [aliased(entity_column, names.ENTITY), aliased(exp.Count(this=exp.Star()), names.ROWS)])
    inner.set("from_", expression.args["from_"].pop())
    for arg in ("joins", "where"):
        if expression.args.get(arg):
            inner.set(arg, expression.args[arg])
            expression.set(arg, None)
    inner.set("group", exp.Group(expressions=[key.copy() for key in keys] + [entity_column.copy()]))
    return inner
