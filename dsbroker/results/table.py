"""Encodes engine rows as a columnar ResultTable (the wire form of every result)."""

from __future__ import annotations

import datetime as dt
import decimal

from dsbroker.v1 import results_pb2 as pb

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                  "UINTEGER", "UBIGINT", "UHUGEINT"}


def column_type(engine_type: str, values: list) -> int:
    """The wire type of a column, from the engine's type name and (for wide integers) its values."""
    name = engine_type.upper()
    if name in INTEGER_TYPES:
        fits = all(v is None or INT64_MIN <= v <= INT64_MAX for v in values)
        return pb.COLUMN_TYPE_INTEGER if fits else pb.COLUMN_TYPE_DECIMAL
    if name == "BOOLEAN":
        return pb.COLUMN_TYPE_BOOLEAN
    if name in {"DOUBLE", "FLOAT", "REAL"}:
        return pb.COLUMN_TYPE_DOUBLE
    if name.startswith("DECIMAL"):
        return pb.COLUMN_TYPE_DECIMAL
    if name == "DATE":
        return pb.COLUMN_TYPE_DATE
    if name.startswith("TIMESTAMP"):
        return pb.COLUMN_TYPE_TIMESTAMP
    return pb.COLUMN_TYPE_STRING


def encode_table(names: list[str], types: list[str], rows: list[tuple], *,
                 withheld: list[frozenset[int]] | None = None,
                 rolled_up: list[frozenset[int]] | None = None) -> pb.ResultTable:
    """Turn engine rows into a ResultTable, column by column; ``withheld`` and ``rolled_up`` give, per
    row, the positions of the cells disclosure control withheld and of the keys a total spans."""
    table = pb.ResultTable(row_count=len(rows))
    for index, (name, engine_type) in enumerate(zip(names, types, strict=True)):
        values = [row[index] for row in rows]
        kind = column_type(engine_type, values)
        column = table.columns.add(name=name, type=kind)
        if any(v is None for v in values):
            column.nulls.extend(v is None for v in values)
        for marks, field in ((withheld, column.withheld), (rolled_up, column.rolled_up)):
            if marks and any(index in row_marks for row_marks in marks):
                field.extend(index in row_marks for row_marks in marks)
        _fill(column, values)
    return table


def table_like(template: pb.ResultTable, rows: list[tuple]) -> pb.ResultTable:
    """A ResultTable of ``rows`` (values as :func:`decode_table` gives them) with ``template``'s columns."""
    table = pb.ResultTable(row_count=len(rows))
    for index, source in enumerate(template.columns):
        values = [row[index] for row in rows]
        column = table.columns.add(name=source.name, type=source.type)
        if any(v is None for v in values):
            column.nulls.extend(v is None for v in values)
        _fill(column, values)
    return table


def _fill(column: pb.ResultColumn, values: list) -> None:
    if column.type in (pb.COLUMN_TYPE_INTEGER, pb.COLUMN_TYPE_BOOLEAN):
        column.int_values.extend(0 if v is None else int(v) for v in values)
    elif column.type == pb.COLUMN_TYPE_DOUBLE:
        column.double_values.extend(0.0 if v is None else float(v) for v in values)
    else:
        column.string_values.extend(v if type(v) is str else "" if v is None else _text(v) for v in values)


def decode_table(table: pb.ResultTable) -> tuple[list[str], list[list]]:
    """Turn a ResultTable back into column names and rows of Python values."""
    columns = []
    for column in table.columns:
        kind = column.type
        values: list[object]
        if kind == pb.COLUMN_TYPE_INTEGER:
            values = list(column.int_values)
        elif kind == pb.COLUMN_TYPE_BOOLEAN:
            values = [bool(v) for v in column.int_values]
        elif kind == pb.COLUMN_TYPE_DOUBLE:
            values = list(column.double_values)
        elif kind == pb.COLUMN_TYPE_DECIMAL:
            values = [decimal.Decimal(v) if v else None for v in column.string_values]
        elif kind == pb.COLUMN_TYPE_DATE:
            values = [dt.date.fromisoformat(v) if v else None for v in column.string_values]
        elif kind == pb.COLUMN_TYPE_TIMESTAMP:
            values = [dt.datetime.fromisoformat(v) if v else None for v in column.string_values]
        else:
            values = list(column.string_values)
        if column.nulls:
            values = [None if null else value for value, null in zip(values, column.nulls, strict=False)]
        columns.append(values)
    rows = [list(row) for row in zip(*columns, strict=False)] if columns else []
    return [c.name for c in table.columns], rows


def wire_keys(table: pb.ResultTable) -> tuple[tuple, ...]:
    """The rows of ``table`` as tuples of their wire values (text, integers or floats; None where NULL).

    Cheaper than decoding, and equal exactly when the decoded values are: what matches groups across
    partitions. :func:`table_like` turns such rows back into a table."""
    if not table.columns:
        return ((),) * table.row_count
    columns = []
    for column in table.columns:
        values: list[int | float | str | None]
        if column.type in (pb.COLUMN_TYPE_INTEGER, pb.COLUMN_TYPE_BOOLEAN):
            values = list(column.int_values)
        elif column.type == pb.COLUMN_TYPE_DOUBLE:
            values = list(column.double_values)
        else:
            values = list(column.string_values)
        if len(values) != table.row_count:
            raise ValueError("a column does not hold row_count cells")
        if column.nulls:
            values = [None if null else value for value, null in zip(values, column.nulls, strict=True)]
        columns.append(values)
    return tuple(zip(*columns, strict=True))


def group_keys(table: pb.ResultTable) -> tuple[tuple, ...]:
    """The rows of ``table`` as tuples of values (a table without columns: ``row_count`` empty rows)."""
    if not table.columns:
        return ((),) * table.row_count
    return tuple(tuple(row) for row in decode_table(table)[1])


def _text(value: object) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def marked_cells(table: pb.ResultTable, mark: str) -> set[tuple[int, int]]:
    """The (row, column) of every cell a ResultTable marks ``withheld`` or ``rolled_up``."""
    return {(row, index) for index, column in enumerate(table.columns)
            for row, flagged in enumerate(getattr(column, mark)) if flagged}
