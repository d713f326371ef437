"""split_levels: a two-level query becomes its protected aggregates and an outer query over their released cells.

Two forms are two levels, and each is split here before any other rule reads the query:

- ``WITH cells AS (<aggregate>) SELECT ... FROM cells ...``, or a subquery in FROM: each WITH query or
  subquery that reads a table that is neither a WITH query nor one of the grant's lookups is a protected
  aggregate. It is guarded as a query of its own, by every rule, exactly as if it had been sent alone
  (so it may read only the granted dataset and lookups), and its place in the outer query is taken by
  its released table (``internal_names.released_table``). Everything else is the outer query: it may
  read only those released tables, WITH queries over them, and the grant's lookups.
- one level with what only the outer query allows outside its aggregates (a window function, QUALIFY,
  ROUND, CASE, COALESCE, a CAST of a value, ...): ``SELECT street_code, SUM(r) / SUM(SUM(r)) OVER () ...``
  is the same query written in one level. It is rewritten here into the first form: FROM, WHERE,
  GROUP BY and HAVING, with the group keys and every aggregate (FILTER included: a conditional aggregate
  stays one, and the aggregate rules refuse it), make the protected aggregate; the outputs, with each
  aggregate and key replaced by its released column, QUALIFY, ORDER BY and LIMIT, the outer query.

Every other query is one level and is left to the rules as before (this returns None for it).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot.expressions as exp

from dsbroker.guard import internal_names as names
from dsbroker.guard._tree import AGGREGATE_TYPES, refuse
from dsbroker.guard.grouping_sets import read_totals
from dsbroker.guard.internal_names import NODES_META, SOURCE_META
from dsbroker.guard.sql_names import sql_name
from dsbroker.policy.model import Lookup

# The most protected aggregates one query may hold: each is a query of the engine's and an audit of its own.
MOST_PARTS = 8
# Outside an aggregate, these are the outer query's alone: where one appears, a one-level query is two.
OUTER_ONLY: tuple[type[exp.Expr], ...] = (
    exp.Window, exp.Round, exp.Coalesce, exp.Nullif, exp.Case, exp.If, exp.TryCast, exp.Abs, exp.Floor, exp.Ceil,
    exp.Greatest, exp.Least, exp.Sign, exp.Is, exp.Mod, exp.IntDiv)


@dataclass(frozen=True)
class Levels:
    """A two-level query: its protected aggregates, and the outer query with their released tables in their place."""

    inners: tuple[exp.Select, ...]
    outer: exp.Select


def split_levels(expression: exp.Select, dataset: str, columns: dict, lookups: dict[str, Lookup]) -> Levels | None:
    """The levels of a two-level query (either form), or None for a one-level query."""
    if not _has_two_levels(expression):
        if not _needs_outer(expression, columns):
            return None
        expression = _written_in_two_levels(expression, columns)
    _refuse_reserved_names(expression)
    splitter = _Splitter(dataset, lookups, expression.meta)
    splitter.visit(expression, frozenset())
    if not splitter.inners:
        refuse("split_levels", "TABLE_REQUIRED", f"the query must aggregate {dataset} in a WITH query or a "
               "subquery, and read its released cells")
    return Levels(tuple(splitter.inners), expression)


def _has_two_levels(expression: exp.Select) -> bool:
    source = expression.args.get("from_")
    joins = expression.args.get("joins") or []
    return bool(expression.args.get("with_")) or (source is not None and isinstance(source.this, exp.Subquery)) \
        or any(isinstance(join.this, exp.Subquery) for join in joins)


def _needs_outer(expression: exp.Select, columns: dict) -> bool:
    """Whether the outputs, QUALIFY or ORDER BY use, outside every aggregate and every group key, what only an outer
    query allows (a group key that is a CASE is a bucket, which the rules check as a key: ``buckets``)."""
    if expression.args.get("qualify"):
        return True
    order = expression.args.get("order")
    projections = expression.expressions
    aliases = {p.alias.lower(): p.this for p in projections if isinstance(p, exp.Alias)}
    group = expression.args.get("group")
    if group is not None and not group.args.get("all"):  # the keys of totals (ROLLUP, CUBE, GROUPING SETS), as keys
        # Copies: the caller's keys stay in the caller's tree, with their parents.
        group = exp.Group(expressions=[key.copy() for term in group.expressions
                                       for key in _keys_of(term)])
    keys = _keys(group, projections, aliases, columns)
    targets = [p.unalias() for p in projections] + ([o.this for o in order.expressions] if order else [])
    return any(_outer_only(target) for target in targets if target not in keys)


def _keys_of(term: exp.Expr) -> tuple[exp.Expr, ...]:
    """The keys a GROUP BY term groups by: a ROLLUP's, CUBE's or GROUPING SETS' keys, or the term itself."""
    totals = read_totals(term)
    return totals.keys if totals is not None else (term,)


def _outer_only(node: exp.Expr) -> bool:
    if isinstance(node, AGGREGATE_TYPES) or (isinstance(node, exp.Filter) and isinstance(node.this, AGGREGATE_TYPES)):
        return False
    if isinstance(node, OUTER_ONLY) or (isinstance(node, exp.Cast) and not isinstance(node.this, exp.Literal)):
        return True
    return any(_outer_only(child) for child in node.iter_expressions())


def _refuse_reserved_names(expression: exp.Select) -> None:
    """Names with two underscores are the guard's (the released tables, their marks): no caller may write one."""
    for identifier in expression.find_all(exp.Identifier):
        if names.is_internal(identifier.name):
            refuse("split_levels", "ALIAS_RESERVED", f"names starting with two underscores are reserved for the "
                   f"guard's rewrites: {identifier.name!r}", column=identifier.name.lower())


class _Splitter:
    """Walks the outer query's SELECTs, taking each protected aggregate out and its released table in."""

    def __init__(self, dataset: str, lookups: dict[str, Lookup], meta: dict) -> None:
        self.schema, self.table = dataset.split(".")
        self.lookup_names = {lookup.name for lookup in lookups.values()}
        self.meta = meta
        self.inners: list[exp.Select] = []

    def visit(self, select: exp.Select, visible: frozenset[str]) -> None:
        """Check one SELECT of the outer query; ``visible`` are the WITH queries it may name."""
        with_ = select.args.get("with_")
        if with_ is not None:
            if with_.args.get("recursive"):
                refuse("split_levels", "CTE_NOT_ALLOWED", "WITH RECURSIVE is not allowed", construct="RECURSIVE")
            for cte in with_.expressions:
                visible = visible | {self._cte_name(cte, visible)}
                self._source(cte.this, visible)
        for source in [select.args["from_"].this] if select.args.get("from_") else []:
            self._from(source, visible)
        for join in select.args.get("joins") or []:
            self._from(join.this, visible)
        for node in select.walk():
            if isinstance(node, (exp.Select, exp.SetOperation)) and node is not select and not _in_from(node, select):
                refuse("split_levels", "SUBQUERY_NOT_ALLOWED", "subqueries are allowed only in WITH and FROM",
                       construct=sql_name(node))

    def _cte_name(self, cte: exp.CTE, visible: frozenset[str]) -> str:
        alias = cte.args.get("alias")
        if alias is not None and alias.columns:
            refuse("split_levels", "CONSTRUCT_NOT_ALLOWED", "name a WITH query's columns in its SELECT, not after "
                   "its name", construct="CTE_COLUMNS")
        name = cte.alias_or_name.lower()
        if name in visible or name == self.table or name in self.lookup_names:
            refuse("split_levels", "AMBIGUOUS_TABLE_NAME", f"{name!r} names two tables in this query; give the WITH "
                   "query another name")
        return name

    def _from(self, source: exp.Expr, visible: frozenset[str]) -> None:
        if isinstance(source, exp.Subquery):
            self._source(source.this, visible)
            return
        if not isinstance(source, exp.Table) or not isinstance(source.this, exp.Identifier):
            refuse("split_levels", "CONSTRUCT_NOT_ALLOWED", "FROM and JOIN must name a table, a WITH query or a "
                   "subquery, not a function",
                   construct=sql_name(source.this if isinstance(source, exp.Table) and source.this else source))
        name, db = source.name.lower(), source.db.lower() if source.db else None
        if (db is None and not source.args.get("catalog") and name in visible) or name in self.lookup_names:
            return  # a WITH query, or a lookup (resolve_released_tables checks its schema)
        if name == self.table and db in (None, self.schema):
            refuse("split_levels", "OUTER_READS_DATASET", f"{self.schema}.{self.table} may be read only by a "
                   "WITH query or subquery that aggregates it; the outer query reads their released cells",
                   table=f"{self.schema}.{self.table}")
        named = ".".join(part for part in (db, name) if part)
        refuse("split_levels", "TABLE_NOT_FOUND", f"table {named!r} does not exist", table=named)

    def _source(self, body: exp.Expr, visible: frozenset[str]) -> None:
        """A WITH query's or subquery's body: a protected aggregate, or one more SELECT of the outer query."""
        if isinstance(body, exp.SetOperation):
            kind = body.key.upper()
            refuse("split_levels", "SET_OPERATION_NOT_ALLOWED", f"{kind} is not allowed; send one SELECT",
                   statement=kind)
        if not isinstance(body, exp.Select):
            refuse("split_levels", "CONSTRUCT_NOT_ALLOWED", "a WITH query or subquery must be a SELECT",
                   construct=sql_name(body))
        if not self._reads_data(body, visible):
            self.visit(body, visible)
            return
        if len(self.inners) == MOST_PARTS:
            refuse("split_levels", "QUERY_TOO_COMPLEX", f"the query is too complex to check: it has more than "
                   f"{MOST_PARTS} aggregates of the data")
        index = len(self.inners)
        body.replace(exp.select(exp.Star()).from_(exp.to_table(names.released_table(index))))
        body.meta[SOURCE_META] = self.meta.get(SOURCE_META)
        body.meta[NODES_META] = sum(1 for _ in body.walk())
        self.inners.append(body)

    def _reads_data(self, body: exp.Select, visible: frozenset[str]) -> bool:
        """Whether ``body`` reads FROM a table that is neither a WITH query nor a lookup: the data, or a table
        the grant does not cover, which the rules then refuse as they refuse it in a query sent alone."""
        source = body.args.get("from_")
        node = source.this if source is not None else None
        if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
            return source is None  # no FROM: the rules' own refusal (TABLE_REQUIRED)
        name = node.name.lower()
        return not ((not node.db and name in visible) or name in self.lookup_names)


def _in_from(node: exp.Expr, select: exp.Select) -> bool:
    """Whether ``node`` (a SELECT inside ``select``) is a WITH query's, a subquery's in FROM or JOIN, or inside one."""
    while node.parent is not None and node.parent is not select:
        node = node.parent
    return node.arg_key in ("with_", "from_", "joins")


def _written_in_two_levels(expression: exp.Select, columns: dict) -> exp.Select:
    """A one-level query that uses the outer query's constructs, written as WITH <aggregate> SELECT ... FROM it."""
    group = expression.args.get("group")
    _refuse_totals(group)
    projections = expression.expressions
    aliases = {p.alias.lower(): p.this for p in projections if isinstance(p, exp.Alias)}
    taken = {i.name.lower() for i in expression.find_all(exp.Identifier)} | {c.split(".")[-1] for c in columns}
    keys = _keys(group, projections, aliases, columns)
    split = _Split(keys, taken)
    own = frozenset(aliases)
    outer = exp.Select(expressions=[_output(projection, split) for projection in projections])
    for arg in ("qualify", "order"):
        clause = expression.args.get(arg)
        if clause is not None:
            outer.set(arg, split.outer(clause.copy(), outer_aliases=own))
    for arg in ("limit", "offset", "distinct"):
        if expression.args.get(arg) is not None:
            outer.set(arg, expression.args[arg].copy())
    if not split.aggregates and not keys:
        refuse("split_levels", "RAW_ROWS", "a window function reads the aggregates of groups, not raw rows: "
               "aggregate by group columns, e.g. SUM(SUM(x)) OVER ()")
    inner = exp.Select(expressions=[exp.alias_(k.copy(), n) for k, n in zip(keys, split.key_names, strict=True)]
                       + [exp.alias_(a.copy(), n) for a, n in split.aggregates])
    for arg in ("from_", "joins", "where"):
        if expression.args.get(arg):
            inner.set(arg, expression.args[arg].copy())
    if keys:
        inner.set("group", exp.Group(expressions=[k.copy() for k in keys]))
    having = expression.args.get("having")
    if having is not None:  # the protected aggregate's: it sees withheld cells as NULL, as in a one-level query
        inner.set("having", _expanded(having.copy(), aliases, columns))
    cte = _free("cells", taken)
    outer.set("from_", exp.From(this=exp.to_table(cte)))
    outer.set("with_", exp.With(expressions=[exp.CTE(this=inner, alias=exp.TableAlias(this=exp.to_identifier(cte)))]))
    outer.meta.update(expression.meta)
    return outer


def _refuse_totals(group: exp.Group | None) -> None:
    if group is not None and (group.args.get("rollup") or group.args.get("cube") or group.args.get("grouping_sets")
                              or any(isinstance(k, (exp.Rollup, exp.Cube, exp.GroupingSets))
                                     for k in group.expressions)):
        refuse("split_levels", "TWO_LEVELS_NOT_SUPPORTED", "totals (ROLLUP, CUBE, GROUPING SETS) are not combined "
               "with window functions or the outer query's functions", construct=_totals_form(group))


def _totals_form(group: exp.Group) -> str:
    """The construct of totals the caller wrote, for the refusal."""
    if group.args.get("cube"):
        return "CUBE"
    if group.args.get("rollup"):
        return "ROLLUP"
    term = next((k for k in group.expressions if isinstance(k, (exp.Rollup, exp.Cube, exp.GroupingSets))), None)
    return sql_name(term) if term is not None else "GROUPING SETS"


def _output(projection: exp.Expr, split: _Split) -> exp.Expr:
    """One output of the outer query, named as the caller's engine would name it in one level."""
    name = projection.alias if isinstance(projection, exp.Alias) else None
    if name is None and not isinstance(projection, exp.Column):
        name = projection.sql(dialect="duckdb")
    value = split.outer(projection.unalias().copy(), outer_aliases=frozenset())
    if name is None or (isinstance(value, exp.Column) and value.name == name):
        return value
    return exp.alias_(value, exp.to_identifier(name))


def _keys(group: exp.Group | None, projections: list, aliases: dict, columns: dict) -> list[exp.Expr]:
    """The group keys as expressions: positions, output aliases and ALL resolved against the outputs."""
    if group is None:
        return []
    if group.args.get("all"):
        return [p.unalias() for p in projections if not p.unalias().find(*AGGREGATE_TYPES, exp.Window)]
    keys = []
    for key in group.expressions:
        if isinstance(key, exp.Literal) and not key.is_string and key.name.isdigit() \
                and 1 <= int(key.name) <= len(projections):
            key = projections[int(key.name) - 1].unalias()
        elif isinstance(key, exp.Column) and not key.table and key.name.lower() in aliases \
                and key.name.lower() not in columns:
            key = aliases[key.name.lower()]
        keys.append(key)
    return keys


def _expanded(node: exp.Expr, aliases: dict, columns: dict) -> exp.Expr:
    """HAVING with the caller's output aliases replaced by what they name (it moves below the outputs)."""
    def expand(child: exp.Expr) -> exp.Expr:
        if isinstance(child, exp.Column) and not child.table and child.name.lower() in aliases \
                and child.name.lower() not in columns:
            named: exp.Expr = aliases[child.name.lower()]
            return named.copy()
        return child
    expanded: exp.Expr = node.transform(expand)
    return expanded


def _free(base: str, taken: set[str]) -> str:
    """``base``, or ``base_2``, ``base_3``...: the first name the query does not use; taken from then on."""
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


class _Split:
    """Replaces, in the outer query's expressions, each aggregate and group key by its released column."""

    def __init__(self, keys: list[exp.Expr], taken: set[str]) -> None:
        self.keys = keys
        self.taken = taken
        self.key_names: list[str] = []
        for key in keys:  # a column keeps its name (the answer's, as in one level); others get a free one
            column = key.name.lower() if isinstance(key, exp.Column) else None
            self.key_names.append(column if column is not None and column not in self.key_names
                                  else _free("key", taken))
        self.aggregates: list[tuple[exp.Expr, str]] = []

    def outer(self, node: exp.Expr, *, outer_aliases: frozenset[str]) -> exp.Expr:
        for index, key in enumerate(self.keys):
            if node == key:
                return exp.column(self.key_names[index])
        if isinstance(node, AGGREGATE_TYPES) or (isinstance(node, exp.Filter)
                                                 and isinstance(node.this, AGGREGATE_TYPES)):
            return exp.column(self._aggregate(node))
        if isinstance(node, exp.Window):
            return self._window(node, outer_aliases)
        if isinstance(node, exp.Column):
            if not node.table and node.name.lower() in outer_aliases:
                return node  # an output's alias, in QUALIFY or ORDER BY
            refuse("split_levels", "OUTPUT_NOT_AGGREGATED", f"column {node.name!r} is neither aggregated nor in "
                   "GROUP BY; a window function reads the aggregates' results, e.g. SUM(SUM(x)) OVER ()",
                   column=node.name.lower())
        for child in list(node.iter_expressions()):
            replaced = self.outer(child, outer_aliases=outer_aliases)
            if replaced is not child:
                child.replace(replaced)
        return node

    def _window(self, node: exp.Window, outer_aliases: frozenset[str]) -> exp.Window:
        """The window's own function stays outside; what it reads (aggregates, keys) is replaced."""
        function = node.this
        inner = function.this if isinstance(function, exp.Filter) else function
        for child in list(inner.iter_expressions()) + ([function.expression] if isinstance(function, exp.Filter)
                                                      else []):
            replaced = self.outer(child, outer_aliases=outer_aliases)
            if replaced is not child:
                child.replace(replaced)
        for arg in ("partition_by", "order"):
            value = node.args.get(arg)
            if isinstance(value, list):
                node.set(arg, [self.outer(v, outer_aliases=outer_aliases) for v in value])
            elif value is not None:
                node.set(arg, self.outer(value, outer_aliases=outer_aliases))
        return node

    def _aggregate(self, aggregate: exp.Expr) -> str:
        for existing, name in self.aggregates:
            if existing == aggregate:
                return name
        name = _free("agg", self.taken)
        self.aggregates.append((aggregate.copy(), name))
        return name
