"""What any SQL the guard emits must satisfy, checked without the guard's code.

This checker is the property test's oracle. It shares nothing with ``dsbroker.guard`` but the policy
(the data it checks against) and sqlglot's parser: it re-reads the emitted SQL and states the
invariants from the outside, so a bug in a guard rule is not repeated here.

The emitted SQL is a cell table computed in two levels. The inner query reads the granted dataset,
joined only to the grant's lookups on their keys, with no column the grant hides and the entity only as
the per-entity group; its WHERE is the row filter bound to the caller ANDed with literal tests of group
or filter columns; it groups by group-level columns (or their year, quarter or month, or a CASE that
maps one group column's values to literals) and the entity, and outputs each key (``__g<i>``), the
entity (``__e``), its row count and plain per-entity aggregates of single measure columns (SUM, COUNT, a
granted MIN or MAX). The outer query reads only that subquery: each key once as ``__k<i>``, then
statistics that are each one plain aggregate of one per-entity column (the count of entities first), a
count of the entities with a nonzero total per summed measure, and with a dominance rule the fixed forms
over their magnitudes; there is no arithmetic, no literal and no condition anywhere else (nothing the
caller computes reaches the engine). HAVING is only the threshold, and only where the grant drops small
cells; ORDER BY names group keys only; LIMIT is no larger than ten times the grant's cap plus one; no
comment.
"""

from __future__ import annotations

import re

import sqlglot
import sqlglot.expressions as exp

from dsbroker.policy.model import ColumnLevel, Policy

AGGREGATES = (exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max)
DATE_PARTS = (exp.TimestampTrunc, exp.DateTrunc, exp.Year, exp.Quarter, exp.Month)
ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Neg)
FORBIDDEN = (exp.With, exp.Union, exp.Intersect, exp.Except, exp.Window, exp.Lateral, exp.Filter,
             exp.Placeholder, exp.Offset, exp.Qualify)
COMPARISONS = (exp.EQ, exp.GT, exp.GTE, exp.LT, exp.LTE)
PER_ENTITY = re.compile(r"^__(sum|count|min|max)_([a-z_][a-z0-9_]*)$")


def violations(sql: str, policy: Policy, *, district: str, department: str) -> list[str]:
    """Every invariant ``sql`` breaks (empty when it is a query the grant allows)."""
    try:
        statements = sqlglot.parse(sql, read="duckdb")
    except sqlglot.errors.SqlglotError as error:
        return [f"the emitted SQL does not parse: {error}"]
    if len(statements) != 1 or not isinstance(statements[0], exp.Select):
        return ["the emitted SQL is not exactly one SELECT"]
    return _Checker(statements[0], policy, district, department).run()


class _Checker:
    def __init__(self, tree: exp.Select, policy: Policy, district: str, department: str) -> None:
        self.tree = tree
        self.policy = policy
        self.district = district
        self.department = department
        self.problems: list[str] = []
        self.tables: dict[str, object] = {}

    def fail(self, message: str) -> None:
        self.problems.append(message)

    def run(self) -> list[str]:
        for node in self.tree.walk():
            if node.comments:
                self.fail("a comment reaches the engine")
            if isinstance(node, FORBIDDEN):
                self.fail(f"forbidden construct {node.key}")
        source = self.tree.args.get("from_")
        inner = source.this.this if source is not None and isinstance(source.this, exp.Subquery) else None
        if not isinstance(inner, exp.Select) or source.this.alias != "__cells":
            self.fail("the outer query does not read the per-entity subquery __cells")
            return self.problems
        if any(self.tree.args.get(a) for a in ("joins", "where")):
            self.fail("the outer query joins or filters")
        for node in inner.walk():
            if isinstance(node, exp.Select) and node is not inner:
                self.fail("a subquery inside the per-entity query")
        self.inner = inner
        for branch in self.tree.find_all(exp.If):
            if not isinstance(branch.parent, exp.Case):
                self.fail(f"a condition reaches the engine: {branch.sql()}")
        for case in self.tree.find_all(exp.Case):  # only the count of contributors tests a condition, and buckets
            alias = case.find_ancestor(exp.Alias)
            if not (alias is not None and alias.parent is self.tree and re.fullmatch(r"__c\d+", alias.alias)) \
                    and not self._is_key(case, inner):
                self.fail(f"a condition reaches the engine: {case.sql()}")
        self.check_tables()
        if self.problems:
            return self.problems
        self.check_inner()
        self.check_outer()
        return self.problems

    # -- the inner query: the dataset, per cell and entity --------------------------------------------

    def check_tables(self) -> None:
        main = self.inner.args["from_"].this if self.inner.args.get("from_") else None
        if not isinstance(main, exp.Table) or f"{main.db}.{main.name}" != self.policy.dataset or main.alias:
            self.fail("the inner FROM is not exactly the granted dataset")
            return
        self.tables[main.name] = None
        for join in self.inner.args.get("joins") or []:
            table = join.this
            lookup = self.policy.lookups.get(f"{table.db}.{table.name}") if isinstance(table, exp.Table) else None
            if lookup is None or table.alias or join.side not in ("", "LEFT") or join.kind or join.args.get("method"):
                self.fail(f"a join to something other than a lookup: {join.sql()}")
                continue
            on = join.args.get("on")
            wanted = {(main.name, lookup.joins), (table.name, lookup.key)}
            if not (isinstance(on, exp.EQ) and all(isinstance(c, exp.Column) for c in (on.left, on.right))
                    and {(c.table, c.name) for c in (on.left, on.right)} == wanted):
                self.fail(f"a lookup joined other than on its key: {join.sql()}")
            if table.name in self.tables:
                self.fail(f"{table.name} is joined twice")
            self.tables[table.name] = lookup

    def level(self, column: exp.Column) -> ColumnLevel:
        if self.inner.args.get("joins") and not column.table:
            self.fail(f"column {column.name} is unqualified in a query with joins")
        table = column.table or self.inner.args["from_"].this.name
        if table not in self.tables:
            self.fail(f"column {column.sql()} belongs to no table in the query")
            return ColumnLevel.HIDDEN
        lookup = self.tables[table]
        if lookup is None:
            return self.policy.columns.get(column.name, ColumnLevel.HIDDEN)
        return self.policy.columns[lookup.joins] if column.name in (lookup.key, *lookup.columns) \
            else ColumnLevel.HIDDEN

    def check_inner(self) -> None:
        group = self.inner.args.get("group")
        keys = list(group.expressions) if group is not None else []
        entity = keys[-1] if keys else None
        if not (isinstance(entity, exp.Column) and self.level(entity) is ColumnLevel.ENTITY):
            self.fail("the per-entity query is not grouped by the entity last")
            return
        keys = keys[:-1]
        for key in keys:
            if isinstance(key, exp.Case):
                self._check_bucket(key)
                continue
            base = key.this if isinstance(key, DATE_PARTS) else key
            if not isinstance(base, exp.Column) or self.level(base) is not ColumnLevel.GROUP:
                self.fail(f"GROUP BY {key.sql()} is not a group column")
        projections = list(self.inner.expressions)
        expected = [(f"__g{i}", key) for i, key in enumerate(keys)] + [("__e", entity)]
        for (alias, wanted), projection in zip(expected, projections, strict=False):
            if not (isinstance(projection, exp.Alias) and projection.alias == alias and projection.this == wanted):
                self.fail(f"the per-entity query does not output {wanted.sql()} as {alias}")
        rest = projections[len(expected):]
        if not rest or not (isinstance(rest[0], exp.Alias) and rest[0].alias == "__rows"
                            and isinstance(rest[0].this, exp.Count) and isinstance(rest[0].this.this, exp.Star)):
            self.fail("the per-entity query does not count its rows as __rows")
        for projection in rest[1:]:
            match = PER_ENTITY.match(projection.alias if isinstance(projection, exp.Alias) else "")
            value = projection.this if isinstance(projection, exp.Alias) else projection
            kind = match.group(1) if match else None
            wanted = {"sum": exp.Sum, "count": exp.Count, "min": exp.Min, "max": exp.Max}.get(kind)
            column = value.this if wanted is not None and isinstance(value, wanted) else None
            if not (isinstance(column, exp.Column) and column.name == match.group(2)):
                self.fail(f"per-entity column {projection.sql()} is not one aggregate of its own measure")
                continue
            if self.level(column) is not ColumnLevel.MEASURE:
                self.fail(f"per-entity {kind} of a non-measure column {column.sql()}")
            if kind in ("min", "max") and kind.upper() not in self.policy.min_max.get(column.name, ()):
                self.fail(f"{kind.upper()} of {column.name}, which the grant does not allow")
        self.check_where()

    @staticmethod
    def _is_key(case: exp.Case, inner: exp.Select) -> bool:
        """Whether ``case`` is a whole group key of the per-entity query (its GROUP BY term or its __g output)."""
        group = inner.args.get("group")
        if group is not None and any(case is key for key in group.expressions):
            return True
        alias = case.parent
        return isinstance(alias, exp.Alias) and alias.parent is inner and bool(re.fullmatch(r"__g\d+", alias.alias))

    def _check_bucket(self, case: exp.Case) -> None:
        """A CASE key maps one group column's values to literals: its conditions test that column (or its date
        parts) against literals only, and each label is a literal."""
        labels = [branch.args.get("true") for branch in case.args.get("ifs") or []] + [case.args.get("default")]
        if case.this is not None or not all(label is None or _is_literal(label) or isinstance(label, exp.Null)
                                            for label in labels):
            self.fail(f"a CASE key whose labels are not literals: {case.sql()}")
        columns = {(c.table, c.name) for c in case.find_all(exp.Column)}
        if len(columns) != 1 or any(self.level(c) is not ColumnLevel.GROUP for c in case.find_all(exp.Column)):
            self.fail(f"a CASE key that does not test exactly one group column: {case.sql()}")
        allowed = (exp.Case, exp.If, exp.Column, exp.Identifier, exp.Literal, exp.Null, exp.Neg, exp.Cast,
                   exp.DataType, exp.Paren, exp.And, exp.Or, exp.Not, exp.In, exp.Between, exp.Var, *COMPARISONS,
                   *DATE_PARTS)
        for node in case.walk():
            if not isinstance(node, allowed):
                self.fail(f"a CASE key computes {node.key}: {case.sql()}")

    def check_where(self) -> None:
        where = self.inner.args.get("where")
        terms = list(_conjuncts(where.this)) if where else []
        wanted = self._bound_row_filter()
        if wanted is not None and not any(_unqualified(t) == wanted for t in terms):
            self.fail(f"the row filter {wanted} is missing from WHERE")
        filter_columns = {id(c) for t in terms if wanted is not None and _unqualified(t) == wanted
                          for c in t.find_all(exp.Column)}
        for column in self.inner.find_all(exp.Column):
            if id(column) not in filter_columns and self.level(column) is ColumnLevel.HIDDEN:
                self.fail(f"hidden column {column.sql()}")
        for term in terms:
            if wanted is not None and _unqualified(term) == wanted:
                continue
            self._check_filter(term)

    def _bound_row_filter(self) -> str | None:
        if not self.policy.row_filter:
            return None
        tree = sqlglot.parse_one(self.policy.row_filter, read="duckdb")
        for placeholder in list(tree.find_all(exp.Placeholder)):
            value = {"district": self.district, "department": self.department}[placeholder.name]
            placeholder.replace(exp.Literal.string(value))
        return tree.sql()

    def _check_filter(self, term: exp.Expression) -> None:
        if isinstance(term, exp.In):
            subject, values = term.this, term.expressions
        elif isinstance(term, exp.Between):
            subject, values = term.this, [term.args["low"], term.args["high"]]
        elif isinstance(term, COMPARISONS):
            subject, values = term.this, [term.expression]
            if _is_literal(subject):
                subject, values = term.expression, [term.this]
        else:
            self.fail(f"WHERE holds {term.key}: {term.sql()}")
            return
        base = subject.this if isinstance(subject, DATE_PARTS) else subject
        if not isinstance(base, exp.Column) or self.level(base) not in (ColumnLevel.GROUP, ColumnLevel.FILTER,
                                                                        ColumnLevel.MEASURE):
            self.fail(f"WHERE tests {subject.sql()}, which is not a group or filter column")
        elif self.level(base) is ColumnLevel.MEASURE and base.name not in self.policy.ranges:
            self.fail(f"WHERE tests measure {base.name}, which the grant gives no range grid")
        if not values or not all(_is_literal(v) for v in values):
            self.fail(f"WHERE compares with something other than literals: {term.sql()}")

    # -- the outer query: per cell, from the per-entity rows -------------------------------------------

    def check_outer(self) -> None:
        projections = list(self.tree.expressions)
        if any(not isinstance(p, exp.Alias) for p in projections):
            self.fail("an output is not named")
            return
        group = self.tree.args.get("group")
        rollup = group.expressions[0] if group is not None and group.expressions and isinstance(
            group.expressions[0], exp.Rollup) else None
        keys = list(rollup.expressions if rollup is not None else group.expressions) if group is not None else []
        if [k.sql() for k in keys] != [f"__g{i}" for i in range(len(keys))]:
            self.fail("the outer query groups by something other than the cell keys")
        for index in range(len(keys)):
            if index >= len(projections) or projections[index].alias != f"__k{index}" \
                    or projections[index].this.sql() != f"__g{index}":
                self.fail(f"cell key {index} is not output as __k{index}")
        entities = "COUNT(DISTINCT __e)" if rollup is not None else "COUNT(__e)"
        for projection in projections[len(keys):]:
            alias, value = projection.alias, projection.this
            text = value.sql()
            if alias == "__s0":
                ok = text == entities
            elif re.fullmatch(r"__s\d+", alias):
                ok = text == "SUM(__rows)" or bool(re.fullmatch(
                    r"(SUM\(__(sum|count)|MIN\(__min|MAX\(__max)_[a-z_0-9]+\)", text)) and self._per_entity(value.this)
            elif re.fullmatch(r"__c\d+", alias):
                inner = r"CASE WHEN (__sum_[a-z_0-9]+) <> 0 THEN __e END"
                ok = bool(re.fullmatch(rf"COUNT\(DISTINCT {inner}\)" if rollup is not None else rf"COUNT\({inner}\)",
                                       text))
            elif alias == "__grouping":
                ok = rollup is not None and text == f"GROUPING({', '.join(f'__g{i}' for i in range(len(keys)))})"
            elif re.fullmatch(r"__d\d+_(total|top|largest|top2)", alias):
                ok = bool(re.fullmatch(r"SUM\(ABS\(__sum_[a-z_0-9]+\)\)|MAX\(ABS\(__sum_[a-z_0-9]+\)\)|"
                                       r"LIST_SUM\(MAX\(ABS\(__sum_[a-z_0-9]+\), \d+\)\)", text))
            else:
                ok = False
            if not ok:
                self.fail(f"the output computes {text} AS {alias}: nothing the caller computes may reach the engine")
        if not projections[len(keys):] or projections[len(keys)].alias != "__s0":
            self.fail("the count of entities is not statistic 0")
        self.check_having(entities)
        self.check_order(entities)
        self.check_limit()

    def _per_entity(self, column: exp.Expression) -> bool:
        names = {p.alias for p in self.inner.expressions if isinstance(p, exp.Alias)}
        return isinstance(column, exp.Column) and column.name in names

    def check_having(self, entities: str) -> None:
        having = self.tree.args.get("having")
        wanted = f"{entities} >= {self.policy.min_entities}"
        if self.policy.suppression == "drop" and not self.tree.find(exp.Rollup):
            if having is None or having.this.sql() != wanted:
                self.fail(f"the threshold {wanted} is not the whole of HAVING")
        elif having is not None:
            self.fail(f"HAVING {having.this.sql()} where the grant marks small cells or asks for totals")

    def check_order(self, entities: str) -> None:
        order = self.tree.args.get("order")
        terms = list(order.expressions) if order is not None else []
        if terms and terms[0].this.sql() == f"{entities} >= {self.policy.min_entities}" and terms[0].args.get("desc"):
            terms = terms[1:]  # encrypted: the groups that are released come first, then the keys
        for ordered in terms:
            if not (isinstance(ordered.this, exp.Column) and re.fullmatch(r"__k\d+", ordered.this.name)
                    and not ordered.this.table):
                self.fail(f"ORDER BY {ordered.this.sql()}: the engine may order by group keys only")

    def check_limit(self) -> None:
        limit = self.tree.args.get("limit")
        value = limit.expression if limit else None
        cap = 1_000_001 if self.tree.find(exp.Rollup) else self.policy.max_groups * 10 + 1
        if not (isinstance(value, exp.Literal) and value.name.isdigit() and int(value.name) <= cap):
            self.fail(f"LIMIT is missing or above the cap of {cap}")


def _conjuncts(node: exp.Expression):
    node = node.unnest()
    if isinstance(node, exp.And):
        yield from _conjuncts(node.left)
        yield from _conjuncts(node.right)
    else:
        yield node


def _unqualified(node: exp.Expression) -> str:
    copy = node.copy()
    for column in copy.find_all(exp.Column):
        column.set("table", None)
    return copy.sql()


def _is_literal(node: exp.Expression) -> bool:
    if isinstance(node, (exp.Neg, exp.Cast)):
        node = node.this
    return isinstance(node, exp.Literal)
