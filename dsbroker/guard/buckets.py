"""buckets: a CASE that buckets one group column, as a group key, is a coarser cell.

``CASE WHEN size_class IN ('large', 'medium') THEN 'big' ELSE 'small' END`` maps each value of ``size_class`` to
a fixed label, so grouping by it groups the rows of a fixed union of the column's values: a cell like any other
(the threshold, the dominance rule, marks and the row filter apply to it as written), whose definition no row
can change. That holds only while the CASE reads nothing but that one column's value, so a bucket is:

- WHEN conditions that are each what WHERE accepts for a group column after the safe forms (``=``, ``IN``, ranges
  on literals, an OR of equalities, ``<>`` on a listed column; ``reject_invalid_filters`` checks each one as it
  checks WHERE), all on ONE group column (or its date parts): never a measure (``CASE WHEN vat_paid > 1e6`` is a
  switch on one firm's amount), the entity, a filter-only column (grouping by it is refused), or two columns;
- THEN and ELSE literals of one kind (text or numbers; NULL, or no ELSE, is the NULL bucket): never a column,
  an expression or another CASE, and never two kinds, which the engine would cast into one.

The auditor needs nothing more: a cell's coverage is ``SELECT <keys> FROM ... WHERE ...`` and groups rows by
the CASE as the engine computes it, so a bucket is a union of blocks like any cell of a coarser key.
"""

from __future__ import annotations

from typing import NoReturn

import sqlglot.expressions as exp

from dsbroker.guard._tree import column_key, refuse, table_of
from dsbroker.policy.model import ColumnLevel


def bucket_column(case: exp.Case, dataset: str, columns: dict) -> exp.Column:
    """The group column ``case`` buckets; refuses (``BUCKET_NOT_ALLOWED``) a CASE that is not a bucket."""
    if case.this is not None:  # expand_simple_case wrote every simple CASE as WHEN x = v
        _refuse("a CASE bucket is written CASE WHEN <column> = <value> THEN <label> ... END", dataset, None)
    labels = [branch.args.get("true") for branch in case.args.get("ifs") or []]
    labels += [case.args["default"]] if case.args.get("default") is not None else []
    kinds = set()
    for label in labels:
        kind = _label_kind(label)
        if kind is None:
            inside = label.find(exp.Column) if label is not None else None
            _refuse("THEN and ELSE of a CASE bucket must be literals (text or numbers): a bucket's labels may not "
                    "depend on a row", table_of(inside, dataset) if inside is not None else dataset, inside)
        if kind != "null":
            kinds.add(kind)
    subject: exp.Column | None = None
    for branch in case.args.get("ifs") or []:
        for column in branch.this.find_all(exp.Column):
            level = columns.get(column_key(column))
            if level is not ColumnLevel.GROUP:
                _refuse(f"a CASE bucket may test a group column only, and {column.name!r} is a "
                        f"{level.value if level is not None else 'hidden'} column", table_of(column, dataset), column)
            if subject is not None and column_key(column) != column_key(subject):
                _refuse(f"a CASE bucket tests one group column; this one tests {subject.name!r} and "
                        f"{column.name!r}", table_of(column, dataset), column)
            subject = column
    if subject is None:
        _refuse("each WHEN of a CASE bucket tests a group column against literals", dataset, None)
    if len(kinds) > 1:
        _refuse(f"the labels of the CASE bucket on {subject.name!r} are text and numbers; give them one type",
                table_of(subject, dataset), subject)
    return subject


def _label_kind(label: exp.Expr | None) -> str | None:
    """``text``, ``number`` or ``null`` for a literal a bucket may label its values with; None otherwise."""
    if isinstance(label, exp.Null):
        return "null"
    if isinstance(label, exp.Neg):
        label = label.this
        return "number" if isinstance(label, exp.Literal) and not label.is_string else None
    if isinstance(label, exp.Literal):
        return "text" if label.is_string else "number"
    return None


def _refuse(message: str, table: str, column: exp.Column | None) -> NoReturn:
    refuse("reject_invalid_group_keys", "BUCKET_NOT_ALLOWED", message, table=table,
           column=column.name if column is not None else None, construct="CASE")
