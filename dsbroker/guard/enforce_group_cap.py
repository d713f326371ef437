"""enforce_group_cap: a query returns at most the grant's number of groups."""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import refuse


def enforce_group_cap(expression: exp.Select, max_groups: int) -> exp.Select:
    """Cap LIMIT at one more than ``max_groups``.

    The extra row lets the sandbox tell "exactly at the cap" from "cut at the
    cap" (it returns at most ``max_groups`` rows and flags truncation).
    """
    cap = max_groups + 1
    limit = expression.args.get("limit")
    if limit is not None:
        value = limit.expression
        if not (isinstance(value, exp.Literal) and not value.is_string and value.name.isdigit()):
            refuse("enforce_group_cap", "LIMIT_NOT_ALLOWED", "LIMIT takes a whole number")
        cap = min(cap, int(value.name))
    expression.set("limit", exp.Limit(expression=exp.Literal.number(cap)))
    return expression
