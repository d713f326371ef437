"""resolve_released_tables: the outer query reads the released tables and the grant's lookups, and only their columns.

``split_levels`` put each protected aggregate's released table in its place and refused every other table
but the WITH queries over them and the grant's lookups. Here each lookup becomes its in-memory table
(``internal_names.lookup_table``), which holds the key and the granted columns only, and sqlglot's
``qualify`` resolves every column of the outer query against those tables: each column is then qualified
by the table it is read from, ``*`` is expanded to the released columns (never a mark), and a column that
no released table or granted lookup column has, the entity's or a hidden one included, is refused alike.
"""

from __future__ import annotations

import sqlglot.expressions as exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.qualify import qualify

from dsbroker.guard import internal_names as names
from dsbroker.guard._tree import refuse
from dsbroker.guard.outer_plan import OuterLookup
from dsbroker.policy.model import Lookup


def resolve_released_tables(expression: exp.Select, released: list[tuple[str, ...]],
                            lookups: dict[str, Lookup]) -> tuple[exp.Select, tuple[OuterLookup, ...]]:
    """Qualify the outer query against the released tables (each one's column names, by part) and the
    lookups it reads; returns the query and those lookups' in-memory tables."""
    read: dict[str, OuterLookup] = {}
    ctes = {cte.alias_or_name.lower() for cte in expression.find_all(exp.CTE)}
    for table in list(expression.find_all(exp.Table)):
        name = table.name.lower()
        if names.is_internal(name) or (not table.db and name in ctes):
            continue
        lookup = next((lookup for lookup in lookups.values() if lookup.name == name), None)
        if lookup is None:  # split_levels lets only WITH queries and lookups through; refused, never a crash
            refuse("resolve_released_tables", "TABLE_NOT_FOUND", f"table {name!r} does not exist", table=name)
        if lookup.table not in read:
            read[lookup.table] = OuterLookup(names.lookup_table(len(read)), lookup.table,
                                             (lookup.key, *lookup.columns))
        alias = table.alias or lookup.name
        table.replace(exp.Table(this=exp.to_identifier(read[lookup.table].name),
                                alias=exp.TableAlias(this=exp.to_identifier(alias))))
    schema: dict[str, object] = {names.released_table(i): dict.fromkeys(columns, "UNKNOWN")
                                 for i, columns in enumerate(released)}
    schema.update({lookup.name: dict.fromkeys(lookup.columns, "UNKNOWN") for lookup in read.values()})
    # Names the caller may read besides the tables' columns: the outputs of its own SELECTs and WITH queries.
    known = {column.lower() for columns in released for column in columns} | {
        column.lower() for lookup in read.values() for column in lookup.columns} | {
        alias.alias.lower() for alias in expression.find_all(exp.Alias)}
    try:
        qualified = qualify(expression, schema=schema, dialect="duckdb", quote_identifiers=False,
                            validate_qualify_columns=True)
    except OptimizeError:
        column = next((c.name.lower() for c in expression.find_all(exp.Column)
                       if c.name.lower() not in known), None)
        refuse("resolve_released_tables", "OUTER_COLUMN_NOT_FOUND",
               f"column {column!r} is not a column of the released cells or of a granted lookup; the outer query "
               "reads only the outputs of its WITH queries and the lookups' granted columns" if column else
               "a column of the outer query is not a column of the released cells or of a granted lookup, or is "
               "ambiguous; qualify it with its table", column=column)
    if not isinstance(qualified, exp.Select):
        raise AssertionError("qualify keeps a SELECT a SELECT")
    return qualified, tuple(read.values())

