"""expand_simple_case: ``CASE x WHEN v THEN ...`` is ``CASE WHEN x = v THEN ...``.

The two forms are the same function on every engine the guard writes for (a NULL ``x`` matches no ``WHEN``
in either), so the simple form becomes the searched one, the only form a bucket (``buckets``) is checked in;
each ``x = v`` is then read exactly as WHERE reads it. A CASE inside an aggregate is rewritten too and still
refused there.
"""

from __future__ import annotations

import sqlglot.expressions as exp


def expand_simple_case(expression: exp.Select) -> exp.Select:
    """Write every ``CASE x WHEN v THEN ...`` as ``CASE WHEN x = v THEN ...``."""
    for case in list(expression.find_all(exp.Case)):
        operand = case.this
        if operand is None:
            continue
        for branch in case.args.get("ifs") or []:
            branch.set("this", exp.EQ(this=operand.copy(), expression=branch.this))
        case.set("this", None)
    return expression
