"""resolve_table: the query reads the granted dataset, and joins only the grant's lookup tables on their keys.

A lookup's key matches the dataset's column of the same name, or the one the grant names (``joins``:
``tax.industries: {key: code, joins: industry_code, ...}`` is joined ``ON d.industry_code = i.code``, never
``USING``, which needs one name on both sides); any other join condition is refused, naming the two columns
the grant allows.

A table outside the grant is reported exactly as one that does not exist, so a
caller learns nothing about tables it may not see. Afterwards every dataset
column is unqualified and every lookup column is qualified by the lookup's
table name, so the later rules see one column map (``Policy.visible_columns``)
and no alias the caller chose.
"""

from __future__ import annotations

from typing import NoReturn

import sqlglot.expressions as exp

from dsbroker.guard._tree import refuse
from dsbroker.policy.model import ColumnLevel, Lookup

_JOIN_SHAPE = "join a lookup table on its key only: JOIN <lookup> USING (<key>), or ON <dataset>.<key> = <lookup>.<key>"


def resolve_table(expression: exp.Select, dataset: str, columns: dict, lookups: dict[str, Lookup]) -> exp.Select:
    """Check FROM against ``dataset`` ("schema.table") and JOINs against ``lookups``; drop caller aliases."""
    schema, table = dataset.split(".")
    source = expression.args.get("from_")
    if source is None:
        refuse("resolve_table", "TABLE_REQUIRED", f"the query must read FROM {dataset}")
    node = source.this
    if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
        refuse("resolve_table", "CONSTRUCT_NOT_ALLOWED", "FROM must name a table, not a function or subquery")
    if node.args.get("catalog") or node.name.lower() != table or (node.db and node.db.lower() != schema):
        _refuse_unknown_table(node)
    qualifiers: dict[str, Lookup | None] = {}  # None is the dataset itself
    _add_qualifiers(qualifiers, node, None, table)
    joined: list[Lookup] = []
    for join in expression.args.get("joins") or []:
        joined.append(_resolve_join(join, dataset, lookups, qualifiers, joined))
    for column in expression.find_all(exp.Column):
        _resolve_column(column, columns, qualifiers, joined)
    source.set("this", exp.table_(table, db=schema))
    return expression


def _resolve_join(join: exp.Join, dataset: str, lookups: dict[str, Lookup], qualifiers: dict,
                  joined: list[Lookup]) -> Lookup:
    if not lookups:
        refuse("resolve_table", "JOIN_NOT_ALLOWED", "joins are not allowed by this grant")
    side, kind = join.side.upper(), join.kind.upper()
    if join.args.get("method") or side not in ("", "LEFT") or kind not in ("", "INNER", "OUTER") \
            or (kind == "OUTER" and side != "LEFT") or (kind == "INNER" and side):
        refuse("resolve_table", "JOIN_NOT_ALLOWED", f"only JOIN and LEFT JOIN are allowed; {_JOIN_SHAPE}")
    node = join.this
    if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier) or node.args.get("catalog"):
        refuse("resolve_table", "JOIN_NOT_ALLOWED", f"a join must name a lookup table; {_JOIN_SHAPE}")
    lookup = _lookup_named(node, lookups)
    if lookup is None:
        if node.name.lower() == dataset.split(".")[1] and (not node.db or node.db.lower() == dataset.split(".")[0]):
            refuse("resolve_table", "JOIN_NOT_ALLOWED", f"{dataset} may not be joined to itself", table=dataset)
        _refuse_unknown_table(node)
    if lookup in joined:
        refuse("resolve_table", "JOIN_NOT_ALLOWED", f"{lookup.table} may be joined once", table=lookup.table)
    _add_qualifiers(qualifiers, node, lookup, lookup.name)
    if not _joins_on_key(join, lookup, qualifiers):
        shape = _JOIN_SHAPE if lookup.joins == lookup.key else (
            f"join {lookup.table} on its key only: ON <dataset>.{lookup.joins} = <lookup>.{lookup.key}")
        refuse("resolve_table", "JOIN_CONDITION_NOT_ALLOWED", shape, table=lookup.table, column=lookup.key)
    dataset_key = exp.column(lookup.joins)
    lookup_key = exp.column(lookup.key, table=lookup.name)
    lookup_key.meta["table"] = lookup.table
    join.replace(exp.Join(this=exp.table_(lookup.name, db=lookup.table.split(".")[0]),
                          on=exp.EQ(this=dataset_key, expression=lookup_key), side=side or None))
    return lookup


def _lookup_named(node: exp.Table, lookups: dict[str, Lookup]) -> Lookup | None:
    name = node.name.lower()
    for lookup in lookups.values():
        if lookup.name == name and (not node.db or node.db.lower() == lookup.table.split(".")[0]):
            return lookup
    return None


def _add_qualifiers(qualifiers: dict, node: exp.Table, target: Lookup | None, name: str) -> None:
    for qualifier in {name, node.alias.lower() if node.alias else None} - {None}:
        if qualifier in qualifiers and qualifiers[qualifier] is not target:
            refuse("resolve_table", "AMBIGUOUS_TABLE_NAME",
                   f"{qualifier!r} names two tables in this query; give each its own alias")
        qualifiers[qualifier] = target


def _joins_on_key(join: exp.Join, lookup: Lookup, qualifiers: dict) -> bool:
    using = join.args.get("using")
    if using:
        return len(using) == 1 and isinstance(using[0], exp.Identifier) and using[0].name.lower() == lookup.key \
            and lookup.joins == lookup.key
    condition = join.args.get("on")
    condition = condition.unnest() if condition is not None else None
    if not isinstance(condition, exp.EQ):
        return False
    sides = set()
    for column in (condition.left, condition.right):
        if not (isinstance(column, exp.Column) and column.table and not column.args.get("db")
                and column.table.lower() in qualifiers):
            return False
        target = qualifiers[column.table.lower()]  # the lookup, or None for the dataset (never another lookup)
        is_lookup = target is lookup
        if column.name.lower() != (lookup.key if is_lookup else lookup.joins) or not (is_lookup or target is None):
            return False
        sides.add(is_lookup)
    return sides == {True, False}


def _resolve_column(column: exp.Column, columns: dict, qualifiers: dict, joined: list[Lookup]) -> None:
    if "table" in column.meta:  # a key resolve_table wrote itself
        return
    name = column.name.lower()
    qualifier = column.table.lower() if column.table else None
    if column.args.get("catalog") or column.args.get("db") or (qualifier and qualifier not in qualifiers):
        refuse("resolve_table", "TABLE_NOT_FOUND", f"table {qualifier!r} does not exist",
               table=qualifier)
    if qualifier is not None:
        target = qualifiers[qualifier]
    elif columns.get(name, ColumnLevel.HIDDEN) is not ColumnLevel.HIDDEN:
        target = None
    else:
        candidates = [lookup for lookup in joined if name in (lookup.key, *lookup.columns)]
        if len(candidates) > 1:
            refuse("resolve_table", "AMBIGUOUS_COLUMN",
                   f"column {name!r} is in {candidates[0].table} and {candidates[1].table}; qualify it",
                   column=name)
        target = candidates[0] if candidates else None
    column.set("this", exp.to_identifier(name))
    if target is None:
        column.set("table", None)
    else:
        column.set("table", exp.to_identifier(target.name))
        column.meta["table"] = target.table


def _refuse_unknown_table(node: exp.Table) -> NoReturn:
    named = ".".join(part.name.lower() for part in (node.args.get("catalog"), node.args.get("db"), node.this) if part)
    refuse("resolve_table", "TABLE_NOT_FOUND", f"table {named!r} does not exist", table=named)
