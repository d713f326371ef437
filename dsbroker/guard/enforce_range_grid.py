"""enforce_range_grid: a range on a measure snaps outward to the grant's grid for that measure.

Were ranges on a measure free, two queries could move one end a little at a time until a single
enterprise falls in between (``employees BETWEEN 1000 AND 1040`` and ``... 1041``). On a grid of g
every range becomes ``>= a AND < b`` with a and b multiples of g, and always holds the range asked for:
a lower end rounds down, an upper end up. Explain shows the range that ran.
"""

from __future__ import annotations

import decimal
import math
from typing import TypeGuard

import sqlglot.expressions as exp

from dsbroker.guard._tree import column_key, conjuncts


def enforce_range_grid(expression: exp.Select, ranges: dict) -> exp.Select:
    """Rewrite each range on a gridded measure in WHERE to ``>= a AND < b`` on the grid."""
    where = expression.args.get("where")
    if not ranges or where is None:
        return expression
    for term in list(conjuncts(where.this)):
        if isinstance(term, exp.Between) and _gridded(term.this, ranges):
            grid = ranges[column_key(term.this)]
            term.replace(exp.paren(exp.and_(
                _at_least(term.this, _number(term.args["low"]), grid),
                _below(term.this, _number(term.args["high"]), grid, inclusive=True), copy=False), copy=False))
        elif isinstance(term, (exp.GT, exp.GTE, exp.LT, exp.LTE)):
            column, value, lower = term.left, term.right, isinstance(term, (exp.GT, exp.GTE))
            if not isinstance(column, exp.Column):  # 5 < x is x > 5
                column, value, lower = value, column, not lower
            if not _gridded(column, ranges):
                continue
            grid = ranges[column_key(column)]
            term.replace(_at_least(column, _number(value), grid) if lower
                         else _below(column, _number(value), grid, inclusive=isinstance(term, (exp.LTE, exp.GTE))))
    return expression


def _gridded(node: exp.Expr, ranges: dict) -> TypeGuard[exp.Column]:
    return isinstance(node, exp.Column) and column_key(node) in ranges


def _number(node: exp.Expr) -> decimal.Decimal:
    """The value of a numeric literal, possibly negated (reject_invalid_filters allowed no other)."""
    if isinstance(node, exp.Neg):
        return -_number(node.this)
    return decimal.Decimal(node.name)


def _at_least(column: exp.Column, value: decimal.Decimal, grid: int) -> exp.Expr:
    # x > v and x >= v both round down to the grid line at or below v: the range only widens.
    return exp.GTE(this=column.copy(), expression=_literal(math.floor(value / grid) * grid))


def _below(column: exp.Column, value: decimal.Decimal, grid: int, *, inclusive: bool) -> exp.Expr:
    # x < v rounds up to the grid line at or above v; x <= v must keep v itself, so to the line above it.
    line = (math.floor(value / grid) + 1) * grid if inclusive else math.ceil(value / grid) * grid
    return exp.LT(this=column.copy(), expression=_literal(line))


def _literal(value: int) -> exp.Expr:
    return exp.Literal.number(value) if value >= 0 else exp.Neg(this=exp.Literal.number(-value))
