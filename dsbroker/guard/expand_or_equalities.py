"""expand_or_equalities: an OR of equalities on one column is the IN list of their values.

``industry_code = '51' OR industry_code = '52'`` selects exactly the rows of ``industry_code IN ('51', '52')``,
which the guard accepts: the same rows, so the same cells, and every later rule (the filter checks, the row
filter, the threshold, the auditor's coverage) sees only the IN. An OR over two columns, or of anything but
``=`` and ``IN`` on literals, is left as written and refused (``OR_NOT_ALLOWED``): it is how a condition is padded
into a tracker.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import conjuncts, row_conditions


def expand_or_equalities(expression: exp.Select) -> exp.Select:
    """Rewrite each ANDed term that is an OR (or NOT of an OR) of ``x = literal`` and ``x IN (literals)`` on one
    ``x`` to one IN, in WHERE and in each WHEN of a CASE bucket."""
    for holder in row_conditions(expression):
        _expand(holder)
    return expression


def _expand(holder: exp.Expr) -> None:
    for term in list(conjuncts(holder.this)):
        if isinstance(term, exp.Not) and isinstance(term.this.unnest(), exp.Or):
            term = term.this.unnest()  # NOT (x = a OR x = b) is x NOT IN (a, b), for expand_complements
        if isinstance(term, exp.Or):
            alternatives = [_alternative(part) for part in _disjuncts(term)]
            subjects = {subject for subject, _ in alternatives if subject is not None}
            if len(subjects) == 1 and all(subject is not None for subject, _ in alternatives):
                (subject,) = subjects
                values = [value.copy() for _, listed in alternatives for value in listed]
                term.replace(exp.In(this=subject.copy(), expressions=values))


def _disjuncts(condition: exp.Expr) -> list[exp.Expr]:
    """The terms of an OR tree, parentheses unwrapped."""
    condition = condition.unnest()
    if isinstance(condition, exp.Or):
        return _disjuncts(condition.left) + _disjuncts(condition.right)
    return [condition]


def _alternative(term: exp.Expr) -> tuple[exp.Expr | None, list[exp.Expr]]:
    """``(x, [values])`` for ``x = v``, ``v = x`` or ``x IN (values)``; ``(None, [])`` for anything else."""
    if isinstance(term, exp.EQ):
        left, right = term.left, term.right
        if _is_value(left) and not _is_value(right):
            left, right = right, left
        return (left, [right]) if _is_value(right) and not _is_value(left) else (None, [])
    if isinstance(term, exp.In) and term.expressions and not term.args.get("query") and not term.args.get("unnest"):
        return (term.this, list(term.expressions)) if not _is_value(term.this) else (None, [])
    return None, []


def _is_value(node: exp.Expr) -> bool:
    """A literal as reject_invalid_filters reads one (it checks each value again after the rewrite)."""
    if isinstance(node, exp.Neg):
        node = node.this
    if isinstance(node, exp.Cast):
        node = node.this
    return isinstance(node, (exp.Literal, exp.Null))
