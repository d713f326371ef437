"""resolve_table: the query reads exactly the granted dataset, named as the grant names it.

A table outside the grant is reported exactly as one that does not exist, so a
caller learns nothing about tables it may not see.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from broker.guard._tree import refuse


def resolve_table(expression: exp.Select, dataset: str) -> exp.Select:
    """Check the FROM clause against ``dataset`` ("schema.table") and drop column qualifiers."""
    schema, table = dataset.split(".")
    source = expression.args.get("from_")
    if source is None:
        refuse("resolve_table", "TABLE_REQUIRED", f"the query must read FROM {dataset}")
    node = source.this
    if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
        refuse("resolve_table", "CONSTRUCT_NOT_ALLOWED", "FROM must name a table, not a function or subquery")
    named = ".".join(part.name.lower() for part in (node.args.get("catalog"), node.args.get("db"), node.this) if part)
    if node.args.get("catalog") or node.name.lower() != table or (node.db and node.db.lower() != schema):
        refuse("resolve_table", "TABLE_NOT_FOUND", f"table {named!r} does not exist", table=named, permission=True)
    alias = node.alias.lower() if node.alias else None
    known_qualifiers = {table, alias} - {None}
    for column in expression.find_all(exp.Column):
        qualifier = column.table.lower() if column.table else None
        if column.args.get("catalog") or column.args.get("db") or (qualifier and qualifier not in known_qualifiers):
            refuse("resolve_table", "TABLE_NOT_FOUND", f"table {qualifier!r} does not exist",
                   table=qualifier, permission=True)
        column.set("table", None)
        column.set("this", exp.to_identifier(column.name.lower()))
    source.set("this", exp.table_(table, db=schema))
    return expression
