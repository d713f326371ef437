"""expand_simple_case: ``CASE x WHEN v THEN ...`` is ``CASE WHEN x = v THEN ...``.

The two forms are the same function on every engine the guard writes for (a NULL ``x`` matches no ``WHEN``
in either), so the simple form becomes the searched one, the only form a bucket (``buckets``) is checked in;
each ``x = v`` is then read exactly as WHERE reads it. A CASE inside an aggregate is rewritten too and still
refused there. The operand is copied into every WHEN, so the copies are counted against the query's size limit
(``node_budget``): a long operand under many WHENs would otherwise multiply the query after ``parse`` checked it.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard.node_budget import NodeBudget


def expand_simple_case(expression: exp.Select) -> exp.Select:
    """Write every ``CASE x WHEN v THEN ...`` as ``CASE WHEN x = v THEN ...``."""
    copies = NodeBudget(expression, "expand_simple_case", "writing each CASE x WHEN v as CASE WHEN x = v")
    for case in list(expression.find_all(exp.Case)):
        operand = case.this
        if operand is None:
            continue
        for branch in case.args.get("ifs") or []:
            branch.set("this", exp.EQ(this=copies.copy(operand), expression=branch.this))
        case.set("this", None)
    return expression
