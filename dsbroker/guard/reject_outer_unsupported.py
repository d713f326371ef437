"""reject_outer_unsupported: the outer query of a two-level query uses only the constructs listed here.

An allowlist, like the protected aggregate's (``reject_unsupported_syntax``) but wider: the outer query
reads released cells only, so arithmetic, conditionals, rounding and window functions over them are
post-processing, which no rule needs to limit. What stays out is what could reach past the released
tables (table functions, file reads, settings, catalogs, scalar subqueries: ``split_levels`` and
``resolve_released_tables`` see to the tables) and what the marks of withheld cells could not follow
(IGNORE NULLS, which skips a withheld cell silently; a navigation function's offset that is not a number).
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import AGGREGATE_TYPES, refuse
from dsbroker.guard.parse import written_name
from dsbroker.guard.reject_unsupported_syntax import check_dates
from dsbroker.guard.sql_names import sql_name

AGGREGATES: tuple[type[exp.Expr], ...] = (*AGGREGATE_TYPES,)
RANKINGS: tuple[type[exp.Expr], ...] = (exp.RowNumber, exp.Rank, exp.DenseRank, exp.Ntile, exp.PercentRank,
                                        exp.CumeDist)
NAVIGATIONS: tuple[type[exp.Expr], ...] = (exp.Lag, exp.Lead, exp.FirstValue, exp.LastValue, exp.NthValue)
SCALARS: tuple[type[exp.Expr], ...] = (
    exp.Round, exp.Coalesce, exp.Nullif, exp.Abs, exp.Floor, exp.Ceil, exp.Greatest, exp.Least, exp.Sign,
    exp.TimestampTrunc, exp.DateTrunc, exp.Year, exp.Quarter, exp.Month)
ALLOWED_NODES: tuple[type[exp.Expr], ...] = (
    exp.Select, exp.From, exp.Table, exp.TableAlias, exp.Identifier, exp.Column, exp.Alias, exp.Star,
    exp.With, exp.CTE, exp.Subquery, exp.Join, exp.Where, exp.Group, exp.Having, exp.Qualify, exp.Order,
    exp.Ordered, exp.Limit, exp.Offset, exp.Distinct,
    exp.Literal, exp.Boolean, exp.Null, exp.Neg, exp.Paren, exp.Var,
    exp.And, exp.Or, exp.Not, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In, exp.Between, exp.Is,
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.IntDiv, exp.Case, exp.If,
    exp.Cast, exp.TryCast, exp.DataType, exp.DataTypeParam,
    exp.Window, exp.WindowSpec, exp.Filter,
    *AGGREGATES, *RANKINGS, *NAVIGATIONS, *SCALARS,
)
# What a CAST in the outer query may make (it runs as TRY_CAST: a value that does not fit is NULL).
CAST_TYPES = frozenset({
    exp.DataType.Type.TINYINT, exp.DataType.Type.SMALLINT, exp.DataType.Type.INT, exp.DataType.Type.BIGINT,
    exp.DataType.Type.INT128, exp.DataType.Type.DECIMAL, exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT,
    exp.DataType.Type.VARCHAR, exp.DataType.Type.TEXT, exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP,
    exp.DataType.Type.BOOLEAN})


def reject_outer_unsupported(expression: exp.Select) -> exp.Select:
    """Refuse any construct of the outer query outside the allowlist, naming it as the caller wrote it."""
    for node in expression.walk():
        if isinstance(node, exp.Func) and not isinstance(node, ALLOWED_NODES):
            name = written_name(node)
            refuse("reject_outer_unsupported", "FUNCTION_NOT_ALLOWED",
                   f"function {name} is not allowed on released cells; allowed: arithmetic, CASE, COALESCE, NULLIF, "
                   "ROUND, ABS, FLOOR, CEIL, GREATEST, LEAST, CAST, date parts, COUNT, SUM, AVG, MIN, MAX (with "
                   "FILTER), window functions", function=name)
        if not isinstance(node, ALLOWED_NODES) or type(node) is exp.Expression:
            name = sql_name(node)
            refuse("reject_outer_unsupported", "CONSTRUCT_NOT_ALLOWED", f"{name} is not allowed in the outer query",
                   construct=name)
        if isinstance(node, exp.Join) and (node.args.get("method") or (node.args.get("kind") or "").upper()
                                           not in ("", "INNER", "OUTER", "CROSS")):
            refuse("reject_outer_unsupported", "JOIN_NOT_ALLOWED", "the outer query joins with JOIN, LEFT, RIGHT, "
                   "FULL or CROSS JOIN", construct="JOIN")
        if isinstance(node, (exp.Cast, exp.TryCast)):
            if node.to.this not in CAST_TYPES:
                refuse("reject_outer_unsupported", "CONSTRUCT_NOT_ALLOWED", "CAST on released cells makes a number, "
                       "text, a date, a timestamp or a boolean", construct="CAST")
            if isinstance(node.this, exp.Literal) and node.to.this in (exp.DataType.Type.DATE,
                                                                       exp.DataType.Type.TIMESTAMP):
                check_dates(node)
        if isinstance(node, (exp.Lag, exp.Lead, exp.NthValue)):  # Funcs, named as written
            offset = node.args.get("offset")
            if offset is not None and not (isinstance(offset, exp.Literal) and offset.name.isdigit()):
                refuse("reject_outer_unsupported", "CONSTRUCT_NOT_ALLOWED", f"{written_name(node)}'s offset is a "
                       "whole number", construct=written_name(node))
        if isinstance(node, exp.Func) and isinstance(node, RANKINGS + NAVIGATIONS) \
                and not isinstance(node.parent, exp.Window):
            refuse("reject_outer_unsupported", "CONSTRUCT_NOT_ALLOWED", f"{written_name(node)} needs OVER (...)",
                   construct=written_name(node))
        if isinstance(node, exp.Star) and not isinstance(node.parent, (exp.Select, exp.Count, exp.Column)):
            refuse("reject_outer_unsupported", "CONSTRUCT_NOT_ALLOWED", "* stands for a table's columns or COUNT's "
                   "rows only", construct="STAR")
    return expression
