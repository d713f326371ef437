"""expand_one_sided_ranges: a range bounded on one side gets the far bound of the widest range a caller can write.

``period >= DATE '2026-01-01'`` is the same filter as ``period BETWEEN DATE '2026-01-01' AND DATE '9999-12-31'``,
which the guard accepts: no literal the guard reads (``literals``) lies beyond ``9999-12-31`` or ``±(1e38 - 1)``, so
the far-bounded range is the widest any accepted query could ask for, and the cells are those of that query. The
rule only adds the missing side; ``reject_invalid_filters`` then checks both sides as for any two-sided range, and
``enforce_range_grid`` snaps a gridded measure's ends, the far one included, so every protection applies as it
would to the query written out. A side whose literal is text other than a date (``industry_code >= '51'``) has no
far bound that every value lies within: it is left alone, and refused as before (``RANGE_NOT_BOUNDED``).
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import conjuncts, row_conditions
from dsbroker.guard.literals import MAX_EXPONENT, read_date, read_timestamp
from dsbroker.guard.reject_invalid_group_keys import DATE_PARTS

_LOWER = (exp.GT, exp.GTE)
_UPPER = (exp.LT, exp.LTE)
# The farthest values a literal the guard reads can have, by kind (literals.number_in_range, read_date,
# read_timestamp): each far bound is one a caller could have written.
_FAR_NUMBER = "9" * MAX_EXPONENT
_FAR_TEXT = {("date", "upper"): "9999-12-31", ("date", "lower"): "0001-01-01",
             ("timestamp", "upper"): "9999-12-31 23:59:59.999999", ("timestamp", "lower"): "0001-01-01 00:00:00"}


def expand_one_sided_ranges(expression: exp.Select) -> exp.Select:
    """AND each range on a column (or its date part) bounded on one side only with the far bound on the other, in
    WHERE and in each WHEN of a CASE bucket."""
    for holder in row_conditions(expression):
        _expand(holder)
    return expression


def _expand(where: exp.Expr) -> None:
    sides: dict[exp.Expr, dict[str, exp.Expr]] = {}
    for term in conjuncts(where.this):
        if isinstance(term, exp.Between):
            sides.setdefault(term.this, {}).update(lower=term.args["low"], upper=term.args["high"])
        elif isinstance(term, (*_LOWER, *_UPPER)):
            subject, value, lower = term.left, term.right, isinstance(term, _LOWER)
            if _literal_kind(subject) is not None:  # 5 < x is x > 5
                subject, value, lower = value, subject, not lower
            sides.setdefault(subject, {}).setdefault("lower" if lower else "upper", value)
    added = []
    for subject, bounds in sides.items():
        if len(bounds) != 1 or not _is_subject(subject):
            continue
        (side, near), = bounds.items()
        far = _far_literal(near, "upper" if side == "lower" else "lower")
        if far is not None:
            comparison = exp.LTE if side == "lower" else exp.GTE
            added.append(comparison(this=subject.copy(), expression=far))
    if added:
        where.set("this", exp.and_(where.this, *added, copy=False))


def _is_subject(node: exp.Expr) -> bool:
    """A column, or a date part of one: what reject_invalid_filters lets a range test."""
    base = node.this if isinstance(node, DATE_PARTS) else node
    return isinstance(base, exp.Column)


def _literal_kind(node: exp.Expr) -> str | None:
    """``number``, ``date`` or ``timestamp`` for a literal of that kind the guard reads; None otherwise."""
    if isinstance(node, exp.Neg):
        return "number" if isinstance(node.this, exp.Literal) and not node.this.is_string else None
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal):
        return "date" if node.to.this == exp.DataType.Type.DATE else "timestamp"
    if not isinstance(node, exp.Literal):
        return None
    if not node.is_string:
        return "number"
    if read_date(node.name) is not None:
        return "date"
    return "timestamp" if read_timestamp(node.name) is not None else None


def _far_literal(near: exp.Expr, side: str) -> exp.Expr | None:
    """The far bound on ``side`` in the form of ``near`` (a DATE literal for a DATE literal, text for text)."""
    kind = _literal_kind(near)
    if kind is None:
        return None
    if kind == "number":
        number = exp.Literal.number(_FAR_NUMBER)
        return number if side == "upper" else exp.Neg(this=number)
    text = exp.Literal.string(_FAR_TEXT[(kind, side)])
    return exp.Cast(this=text, to=near.to.copy()) if isinstance(near, exp.Cast) else text
