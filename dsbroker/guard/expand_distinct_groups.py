"""expand_distinct_groups: SELECT DISTINCT over group columns is a GROUP BY of those columns.

``SELECT DISTINCT street_code, size_class FROM t`` returns exactly the groups of ``SELECT street_code,
size_class FROM t GROUP BY street_code, size_class``, which every later rule then checks: the keys must be group
columns (or their date parts), the threshold applies to each group, and the answer lists only groups of k or more
taxpayers. What a DISTINCT releases is the list of non-empty groups, so its small groups are left out, never
marked (``guard`` runs it under ``suppressed: drop``): a marked row would still show that the group exists.
Only a DISTINCT without aggregates, GROUP BY, HAVING or ON is rewritten; any other stays, and is refused as before.
"""

from __future__ import annotations

import sqlglot.expressions as exp


def expand_distinct_groups(expression: exp.Select) -> exp.Select:
    """Rewrite ``SELECT DISTINCT a, b ...`` without aggregates to ``SELECT a, b ... GROUP BY a, b``."""
    if not lists_groups(expression):
        return expression
    keys = [projection.unalias().copy() for projection in expression.expressions]
    expression.set("distinct", None)
    expression.set("group", exp.Group(expressions=keys))
    return expression


def lists_groups(expression: exp.Select) -> bool:
    """Whether ``expression`` is a plain DISTINCT this rule rewrites: each output reads a column (a bare literal
    would become a GROUP BY position), and none has an aggregate or a star; no ON, GROUP BY or HAVING."""
    distinct = expression.args.get("distinct")
    return (isinstance(distinct, exp.Distinct) and not distinct.args.get("on") and not expression.args.get("group")
            and not expression.args.get("having")
            and bool(expression.expressions)
            and all(projection.find(exp.Column) is not None and projection.find(exp.AggFunc, exp.Star) is None
                    for projection in expression.expressions))
