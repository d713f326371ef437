"""expand_output_aliases: replace references to output aliases and positions by the expressions.

After this rule every column in GROUP BY, HAVING and ORDER BY is a real
column, so later checks and every engine see the same thing. An alias may
reuse a column's name only for an expression over that very column
(``SUM(revenue) AS revenue``); any other reuse is refused, since engines differ
on which wins. Inside aggregate arguments names always mean columns.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard import internal_names
from dsbroker.guard._tree import AGGREGATE_TYPES, output_name, refuse
from dsbroker.guard.grouping_sets import read_totals
from dsbroker.guard.internal_names import TOTALS_FORM_META, TOTALS_META
from dsbroker.guard.sql_names import sql_name
from dsbroker.guard.node_budget import NodeBudget


def expand_output_aliases(expression: exp.Select, columns: dict) -> exp.Select:
    """Expand aliases and ordinals in GROUP BY, HAVING and ORDER BY; refuse shadowing aliases."""
    projections = expression.expressions
    column_names = {key.split(".")[-1] for key in columns}  # a lookup's columns too
    aliased = _output_aliases(projections, column_names)

    copies = NodeBudget(expression, "expand_output_aliases", "naming its outputs by alias or position")
    _refuse_ambiguous_names(expression, aliased, column_names)
    group = expression.args.get("group")
    if group is not None:
        _refuse_unread_forms(group)
        if group.args.get("all"):
            keys = [copies.copy(p.unalias()) for p in projections if not p.unalias().find(*AGGREGATE_TYPES)]
            group.set("all", None)
            group.set("expressions", keys)
            if not keys:  # GROUP BY ALL over aggregates only: a global aggregate, with no GROUP BY to write
                expression.set("group", None)
                group = None
        else:
            terms = group.expressions
            asked = [term for term in terms if isinstance(term, (exp.Rollup, exp.Cube, exp.GroupingSets))]
            if asked:
                if len(terms) != 1:
                    form = sql_name(asked[0])
                    refuse("expand_output_aliases", "CONSTRUCT_NOT_ALLOWED", "totals are asked for as GROUP BY "
                           "ROLLUP (a, b), CUBE (a, b) or GROUPING SETS ((a, b), (a), ()), alone in GROUP BY",
                           construct=form)
                totals = read_totals(asked[0])
                assert totals is not None
                if not totals.keys:  # GROUPING SETS (()): the grand total alone, a global aggregate
                    expression.set("group", None)
                    return _expand_rest(expression, projections, aliased, copies)
                # Every later rule sees the keys as plain GROUP BY keys; add_totals restores the grouping sets.
                group.set("expressions", list(totals.keys))
                expression.meta[TOTALS_META] = totals.sets
                expression.meta[TOTALS_FORM_META] = totals.form
            group.set("expressions", [_expand(key, projections, aliased, "GROUP BY", copies)
                                      for key in group.expressions])
    return _expand_rest(expression, projections, aliased, copies)


def _expand_rest(expression: exp.Select, projections: list, aliased: dict, copies: NodeBudget) -> exp.Select:
    """Expand aliases and ordinals in HAVING and ORDER BY."""
    having = expression.args.get("having")
    if having is not None:
        having.set("this", _replace_alias_columns(having.this, aliased, copies))
    order = expression.args.get("order")
    if order is not None:
        for ordered in order.expressions:
            ordered.set("this", _expand(ordered.this, projections, aliased, "ORDER BY", copies))
    return expression


def _refuse_unread_forms(group: exp.Group) -> None:
    """Refuse totals written in a form the guard does not read, which it would otherwise answer as plain cells: Hive's
    ``GROUP BY a, b GROUPING SETS (...)``, ``WITH CUBE``, ``WITH ROLLUP``, ClickHouse's ``WITH TOTALS``, and
    ``GROUP BY ALL`` beside anything (``GROUP BY ALL, CUBE (a)``)."""
    for arg, form in (("grouping_sets", "GROUPING SETS"), ("cube", "CUBE"), ("rollup", "ROLLUP"),
                      ("totals", "WITH TOTALS")):
        if group.args.get(arg):
            refuse("expand_output_aliases", "CONSTRUCT_NOT_ALLOWED", "totals are asked for as GROUP BY ROLLUP (a, b), "
                   "CUBE (a, b) or GROUPING SETS ((a, b), (a), ()), alone in GROUP BY", construct=form)
    if group.args.get("all") and group.expressions:
        form = next((sql_name(term) for term in group.expressions
                     if isinstance(term, (exp.Rollup, exp.Cube, exp.GroupingSets))), "GROUP BY ALL")
        refuse("expand_output_aliases", "CONSTRUCT_NOT_ALLOWED", "GROUP BY ALL stands alone; list the keys to ask "
               "for totals over them", construct=form)


def _refuse_ambiguous_names(expression: exp.Select, aliased: dict[str, exp.Expr], column_names: set[str]) -> None:
    """Refuse GROUP BY or HAVING naming an output whose alias is also a column's name (``strftime(period, '%Y-%m')
    AS period ... GROUP BY period``): DuckDB and PostgreSQL read the column there (the day), where the guard would
    read the output (the month); ORDER BY reads the output on every engine, and is left alone."""
    for clause in ("group", "having"):
        node = expression.args.get(clause)
        for column in node.find_all(exp.Column) if node is not None else ():
            name = column.name.lower()
            if column.table or name not in aliased or name not in column_names:
                continue
            if isinstance(aliased[name], exp.Column) and aliased[name].name.lower() == name:
                continue  # street_code AS street_code: the output is the column
            if column.find_ancestor(*AGGREGATE_TYPES) is not None:
                continue  # inside an aggregate a name is always the column
            refuse("expand_output_aliases", "ALIAS_SHADOWS_COLUMN",
                   f"{'GROUP BY' if clause == 'group' else 'HAVING'} {column.name} is ambiguous: an output is "
                   f"named {column.name!r} and so is a column, which the engines read there; name the output "
                   "otherwise, or group by its position", column=column.name)


def _output_aliases(projections: list[exp.Expr], column_names: set[str]) -> dict[str, exp.Expr]:
    """Each output name (lower case) and the expression it names; refuses reserved, shadowing and repeated names."""
    aliased: dict[str, exp.Expr] = {}
    for projection in projections:
        name = output_name(projection)
        if name is None:
            continue
        name = name.lower()
        if internal_names.is_internal(name):
            refuse("expand_output_aliases", "ALIAS_RESERVED",
                   f"output names starting with two underscores are reserved for the guard's rewrites: {name!r}",
                   column=name)
        if name in column_names and name not in {c.name for c in projection.this.find_all(exp.Column)}:
            refuse("expand_output_aliases", "ALIAS_SHADOWS_COLUMN",
                   f"output name {name!r} is also a column name; choose another alias", column=name)
        if name in aliased:
            refuse("expand_output_aliases", "DUPLICATE_ALIAS", f"output name {name!r} is used twice", column=name)
        aliased[name] = projection.this
    return aliased


def _expand(key: exp.Expr, projections: list, aliased: dict, clause: str, copies: NodeBudget) -> exp.Expr:
    if isinstance(key, exp.Literal) and not key.is_string:
        position = int(key.name) if key.name.isdigit() else 0
        if not 1 <= position <= len(projections):
            refuse("expand_output_aliases", "POSITION_OUT_OF_RANGE",
                   f"{clause} position {key.name} does not name an output column")
        return copies.copy(projections[position - 1].unalias())
    return _replace_alias_columns(key, aliased, copies)


def _replace_alias_columns(node: exp.Expr, aliased: dict, copies: NodeBudget) -> exp.Expr:
    if isinstance(node, AGGREGATE_TYPES):
        return node
    if isinstance(node, exp.Column) and not node.table and node.name.lower() in aliased:
        return copies.copy(aliased[node.name.lower()])
    for child in list(node.iter_expressions()):
        replaced = _replace_alias_columns(child, aliased, copies)
        if replaced is not child:
            child.replace(replaced)
    return node
