"""reject_unsupported_syntax: only the constructs the guard understands may appear.

This is an allowlist: a node type not listed here is refused, so a construct
that sqlglot learns tomorrow is refused until someone decides it is safe.
"""

from __future__ import annotations

from typing import NoReturn

import sqlglot.expressions as exp

from dsbroker.guard._tree import AGGREGATE_TYPES, enclosing_aggregate, refuse
from dsbroker.guard.date_texts import strftime_format
from dsbroker.guard.literals import read_date, read_timestamp
from dsbroker.guard.parse import written_name
from dsbroker.guard.sql_names import sql_name

ALLOWED_NODES: tuple[type[exp.Expr], ...] = (
    exp.Select, exp.From, exp.Table, exp.TableAlias, exp.Identifier, exp.Column, exp.Alias,
    exp.Join, exp.Where, exp.Group, exp.Having, exp.Order, exp.Ordered, exp.Limit,
    exp.Literal, exp.Boolean, exp.Null, exp.Neg, exp.Paren,
    exp.And, exp.Or, exp.Not, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In, exp.Between,
    exp.Add, exp.Sub, exp.Mul, exp.Div,
    *AGGREGATE_TYPES, exp.Distinct, exp.Star,
    exp.Cast, exp.DataType, exp.TimestampTrunc, exp.DateTrunc, exp.Var, exp.Year, exp.Quarter, exp.Month,
    exp.Grouping,  # of ROLLUP keys only (reject_invalid_totals): the level of a row, never its data
    exp.TimeToStr,  # strftime of a column's year or month only (date_texts), refused otherwise below
)
_CAST_TYPES = {exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPNTZ}
_TRUNC_UNITS = {"YEAR", "QUARTER", "MONTH"}

# Friendlier reasons for the constructs people most often try.
_NAMED: dict[type[exp.Expr], tuple[str, str]] = {
    exp.Subquery: ("SUBQUERY_NOT_ALLOWED", "subqueries are not allowed; ask for the aggregate directly"),
    exp.With: ("CTE_NOT_ALLOWED", "WITH (common table expressions) is not allowed"),
    exp.Union: ("SET_OPERATION_NOT_ALLOWED", "UNION is not allowed"),
    exp.Intersect: ("SET_OPERATION_NOT_ALLOWED", "INTERSECT is not allowed"),
    exp.Except: ("SET_OPERATION_NOT_ALLOWED", "EXCEPT is not allowed"),
    exp.Window: ("WINDOW_NOT_ALLOWED", "window functions (OVER) are not allowed"),
    exp.Join: ("JOIN_NOT_ALLOWED", "joins are allowed only in the outer query, to the grant's lookup tables"),
    exp.Lateral: ("LATERAL_NOT_ALLOWED", "LATERAL is not allowed"),
    exp.Case: ("CONDITIONAL_NOT_ALLOWED", "CASE is not allowed: conditionals break the per-cell threshold"),
    exp.If: ("CONDITIONAL_NOT_ALLOWED", "IF is not allowed: conditionals break the per-cell threshold"),
    exp.Filter: ("CONDITIONAL_NOT_ALLOWED", "FILTER clauses are not allowed: they break the per-cell threshold"),
    exp.Offset: ("OFFSET_NOT_ALLOWED", "OFFSET is not allowed; use ORDER BY and LIMIT"),
    exp.Qualify: ("WINDOW_NOT_ALLOWED", "QUALIFY is not allowed"),
    exp.Placeholder: ("PARAMETER_NOT_ALLOWED", "query parameters are not allowed; write literals"),
}


def _totals_term(node: exp.Expr, expression: exp.Select) -> bool:
    """Whether ``node`` is GROUP BY's ROLLUP, CUBE or GROUPING SETS, or a set listed in GROUPING SETS."""
    group = expression.args.get("group")
    if isinstance(node, (exp.Rollup, exp.Cube, exp.GroupingSets)):
        return node.parent is group
    return isinstance(node, exp.Tuple) and isinstance(node.parent, exp.GroupingSets) and node.parent.parent is group


def reject_unsupported_syntax(expression: exp.Select) -> exp.Select:
    """Refuse any node outside the allowlist, naming the construct."""
    _refuse_query_clauses(expression)
    unsupported: list[exp.Expr] = []
    for node in expression.walk():
        if isinstance(node, exp.Select) and node is not expression:
            refuse("reject_unsupported_syntax", "SUBQUERY_NOT_ALLOWED", _NAMED[exp.Subquery][1])
        if isinstance(node, exp.Join) and node.parent is expression:
            continue  # resolve_table allows joins to the grant's lookup tables on their keys, and no others
        if _totals_term(node, expression):
            continue  # totals: expand_output_aliases accepts ROLLUP, CUBE or GROUPING SETS alone, of keys
        if _may_be_bucket(node):
            continue  # reject_invalid_group_keys accepts a CASE that buckets a group column as a key, and no other
        if type(node) in _NAMED:
            reason, message = _NAMED[type(node)]
            refuse("reject_unsupported_syntax", reason, message, construct=sql_name(node))
        if not isinstance(node, ALLOWED_NODES) or type(node) is exp.Expression:
            if isinstance(node, exp.Func):
                _refuse_node(node)  # a function is named first: it is what the caller wrote
            unsupported.append(node)
        if isinstance(node, exp.Star) and not isinstance(node.parent, exp.Count):
            refuse("reject_unsupported_syntax", "RAW_ROWS", "SELECT * returns raw rows; ask for aggregates by group")
        check_dates(node)
        if isinstance(node, exp.Var) and not isinstance(node.parent, (exp.TimestampTrunc, exp.DateTrunc)):
            unsupported.append(node)
    if unsupported:
        _refuse_node(unsupported[0])
    return expression


def _may_be_bucket(node: exp.Expr) -> bool:
    """A CASE outside every aggregate and outside WHERE, or one of its WHEN branches: a group key's bucket, or
    refused later (as a key that is no bucket, or as an expression that is no key)."""
    case = node.parent if isinstance(node, exp.If) and node.arg_key == "ifs" else node
    return isinstance(case, exp.Case) and enclosing_aggregate(case) is None and case.find_ancestor(exp.Where) is None


def _refuse_query_clauses(expression: exp.Select) -> None:
    """Refuse the outer query's clauses that are not SELECT ... FROM ... WHERE ... GROUP BY ... HAVING ...
    ORDER BY ... LIMIT (the walk over the nodes does not see all of them)."""
    for arg in ("distinct", "laterals", "qualify", "windows", "into", "locks", "sample",
                "kind", "prewhere", "connect", "match", "pivots", "settings", "format", "options", "offset",
                "cluster", "distribute", "sort", "with_"):
        value = expression.args.get(arg)
        if value:
            node = value[0] if isinstance(value, list) else value
            if isinstance(node, exp.Expression) and type(node) in _NAMED:
                reason, message = _NAMED[type(node)]
                refuse("reject_unsupported_syntax", reason, message, construct=sql_name(node))
            if isinstance(node, exp.Pivot):
                name = sql_name(node)
                refuse("reject_unsupported_syntax", "CONSTRUCT_NOT_ALLOWED", f"{name} is not allowed in a query",
                       construct=name)
            refuse("reject_unsupported_syntax", "CONSTRUCT_NOT_ALLOWED",
                   f"{arg.rstrip('_').upper()} is not allowed in a query", construct=arg.rstrip("_").upper())


def check_dates(node: exp.Expr) -> None:
    """CAST only writes a DATE or TIMESTAMP literal, and a real one; date_trunc only to a year, quarter or month;
    strftime only of a column's year or month (``date_texts``: the only texts with an exact equivalent)."""
    if isinstance(node, exp.TimeToStr) and strftime_format(node) is None:
        _refuse_node(node)
    if isinstance(node, exp.Cast) and not (isinstance(node.this, exp.Literal) and node.to.this in _CAST_TYPES):
        refuse("reject_unsupported_syntax", "CONSTRUCT_NOT_ALLOWED",
               "CAST is allowed only to write DATE or TIMESTAMP literals", construct="CAST")
    if isinstance(node, exp.Cast) and (read_date if node.to.this == exp.DataType.Type.DATE
                                       else read_timestamp)(node.this.name) is None:
        kind = "DATE 'YYYY-MM-DD'" if node.to.this == exp.DataType.Type.DATE else "TIMESTAMP 'YYYY-MM-DD HH:MM:SS'"
        refuse("reject_unsupported_syntax", "LITERAL_INVALID",
               f"write dates as {kind}, a real one; no other form is read", construct="CAST")
    if isinstance(node, (exp.TimestampTrunc, exp.DateTrunc)) and node.text("unit").upper() not in _TRUNC_UNITS:
        refuse("reject_unsupported_syntax", "CONSTRUCT_NOT_ALLOWED",
               "date_trunc may truncate to year, quarter or month only", construct="DATE_TRUNC")


def _refuse_node(node: exp.Expr) -> NoReturn:
    if isinstance(node, exp.Func):
        name = written_name(node)
        refuse("reject_unsupported_syntax", "FUNCTION_NOT_ALLOWED",
               f"function {name} is not allowed; allowed: COUNT, SUM, AVG (MIN, MAX where granted), "
               "date_trunc, year, quarter, month, strftime(<date column>, '%Y' or '%Y-%m')", function=name)
    name = sql_name(node)
    refuse("reject_unsupported_syntax", "CONSTRUCT_NOT_ALLOWED", f"{name} is not allowed in a query", construct=name)
