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
  an expression or another CASE, and never two kinds, which the engine would cast into one; numbers that one
  decimal type of 38 digits holds together (digits before the point of the longest, after it of the finest).
  DuckDB gives the labels one type and casts each row's label to it as the row takes its branch: a 38-digit label
  beside 0.5 is DECIMAL(38, 1), which it does not fit, so the query would fail if and only if some row took that
  branch, an existence test by error.

The auditor needs nothing more: a cell's coverage is ``SELECT <keys> FROM ... WHERE ...`` and groups rows by
the CASE as the engine computes it, so a bucket is a union of blocks like any cell of a coarser key.
"""

from __future__ import annotations

import decimal
from typing import NoReturn

import sqlglot.expressions as exp

from dsbroker.guard._tree import column_key, refuse, table_of
from dsbroker.guard.column_types import MOST_DIGITS
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
    if _number_digits(labels) > MOST_DIGITS:
        _refuse(f"the number labels of the CASE bucket on {subject.name!r} need more than {MOST_DIGITS} digits in "
                "one type (the longest before the point, the finest after it); shorten them",
                table_of(subject, dataset), subject)
    return subject


def _number_digits(labels: list) -> int:
    """The digits one decimal type needs to hold every number label: the most before the point plus the most
    after it, as written (``5.0`` has one after it, as the engine reads it)."""
    before, after = 0, 0
    for label in labels:
        literal = label.this if isinstance(label, exp.Neg) else label
        if not (isinstance(literal, exp.Literal) and not literal.is_string):
            continue
        _, digits, exponent = decimal.Decimal(literal.name).as_tuple()
        if not isinstance(exponent, int):  # parse admits only finite numbers; NaN or infinity never get here
            continue
        before, after = max(before, len(digits) + exponent), max(after, -exponent)
    return before + after


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
