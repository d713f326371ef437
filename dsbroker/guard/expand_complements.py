"""expand_complements: ``<>`` and ``NOT IN`` on a column whose values the grant lists are the IN of the others.

``size_class <> 'micro'`` under a grant that lists ``values: {size_class: [large, medium, micro, small]}`` is
``size_class IN ('large', 'medium', 'small')``, which the guard accepts: the same cells, and every later rule
(the filter checks, the row filter, the threshold, the auditor's coverage) sees only the IN. Both leave out rows
where the column is NULL, as SQL's ``<>`` does. A complement the grant cannot write as an IN stays refused, and
says why: on a column without listed values (``NEGATION_NOT_ALLOWED``, naming it), with a NULL in the list (SQL's
``NOT IN (…, NULL)`` selects no row, which no IN list says), or leaving no value at all (``FILTER_NOT_ALLOWED``).

What the answer covers is the grant's list: a value the data holds and the list lacks is in no IN list a caller
could write from the grant, and so in no cell of the rewrite; the owner keeps the list complete (a code list).
Each IN is as long as the list, so what the rewrites add is counted against the query's size limit
(``node_budget``): a bucket's WHENs are not nested, and many complements on a long list would otherwise multiply
the query after ``parse`` checked it.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import column_key, conjuncts, refuse, row_conditions, table_of
from dsbroker.guard.node_budget import NodeBudget, size


def expand_complements(expression: exp.Select, dataset: str, values: dict) -> exp.Select:
    """Rewrite each ANDed ``x <> v``, ``NOT x = v``, ``x NOT IN (...)`` on a listed column to the IN of the rest, in
    WHERE and in each WHEN of a CASE bucket."""
    budget = NodeBudget(expression, "expand_complements", "writing each complement as the IN of the other values")
    for holder in row_conditions(expression) if values else ():
        _expand(holder, dataset, values, budget)
    return expression


def _expand(holder: exp.Expr, dataset: str, values: dict, budget: NodeBudget) -> None:
    for term in list(conjuncts(holder.this)):
        complement = _complement(term)
        if complement is None:
            continue
        column, excluded = complement
        listed = values.get(column_key(column))  # a lookup's column is keyed by its table: never listed
        if listed is None:
            continue  # reject_invalid_filters refuses it, naming the column
        if any(isinstance(value, exp.Null) for value in excluded):
            refuse("expand_complements", "FILTER_NOT_ALLOWED", f"<> NULL, or NOT IN with a NULL, on {column.name!r} "
                   "selects no row; leave the NULL out", table=dataset, column=column.name, construct="NULL")
        if not all(isinstance(value, exp.Literal) and value.is_string for value in excluded):
            refuse("expand_complements", "FILTER_NOT_ALLOWED", f"{column.name!r} lists text values; compare it with "
                   "quoted text", table=dataset, column=column.name, construct="<>")
        names = {value.name for value in excluded}
        remaining = [value for value in listed if value not in names]
        if not remaining:
            refuse("expand_complements", "FILTER_NOT_ALLOWED", f"the condition on {column.name!r} leaves out every "
                   "value the grant lists", table=table_of(column, dataset), column=column.name, construct="<>")
        budget.spend(size(column) + 1 + len(remaining) - size(term))
        term.replace(exp.In(this=column.copy(), expressions=[exp.Literal.string(value) for value in remaining]))


def _complement(term: exp.Expr) -> tuple[exp.Column, list[exp.Expr]] | None:
    """``(column, [excluded values])`` for a complement of literals on a plain column; None for anything else."""
    if isinstance(term, exp.NEQ):
        left, right = term.left, term.right
        if not isinstance(left, exp.Column):
            left, right = right, left
        return (left, [right]) if isinstance(left, exp.Column) and _is_value(right) else None
    if not isinstance(term, exp.Not):
        return None
    inner = term.this.unnest()
    if isinstance(inner, exp.In) and isinstance(inner.this, exp.Column) and inner.expressions and not (
            inner.args.get("query") or inner.args.get("unnest")) and all(_is_value(v) for v in inner.expressions):
        return inner.this, list(inner.expressions)
    if isinstance(inner, exp.EQ):
        return _complement(exp.NEQ(this=inner.left, expression=inner.right))
    return None


def _is_value(node: exp.Expr) -> bool:
    return isinstance(node, (exp.Literal, exp.Null)) or (
        isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal))
