"""What any SQL the guard emits must satisfy, checked without the guard's code.

This checker is the property test's oracle. It shares nothing with ``broker.guard`` but the policy
(the data it checks against) and sqlglot's parser: it re-reads the emitted SQL and states the
invariants from the outside, so a bug in a guard rule is not repeated here.

The invariants: one plain SELECT over the granted dataset, joined only to the grant's lookups on
their keys; no column the grant hides; the entity only as COUNT(DISTINCT entity); the output is a cell
table: each group key exactly once, then statistics that are each one plain aggregate of one column
(COUNT(DISTINCT entity) first, then COUNT(*), and SUM, COUNT, or a granted MIN or MAX of a measure),
with no arithmetic, no literal and no condition anywhere in the output (nothing the caller computes
reaches the engine); GROUP BY only group-level columns (or their year, quarter or month); WHERE an AND
of the row filter bound to the caller and literal tests of group or filter columns; HAVING only the
threshold ``COUNT(DISTINCT entity) >= k``, and only where the grant drops small cells; ORDER BY only
group keys; a LIMIT no larger than ten times the grant's cap plus one; no function outside the short
allowlist; no comment.
"""

from __future__ import annotations

import sqlglot
import sqlglot.expressions as exp

from broker.policy import ColumnLevel, Policy

AGGREGATES = (exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max)
DATE_PARTS = (exp.TimestampTrunc, exp.DateTrunc, exp.Year, exp.Quarter, exp.Month)
ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Paren, exp.Neg)
FORBIDDEN = (exp.Subquery, exp.With, exp.Union, exp.Intersect, exp.Except, exp.Window, exp.Lateral, exp.Filter,
             exp.Case, exp.If, exp.Placeholder, exp.Offset, exp.Qualify)
COMPARISONS = (exp.EQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


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

    def run(self) -> list[str]:
        self.check_constructs()
        self.check_tables()
        if self.problems:
            return self.problems
        self.check_columns()
        self.check_aggregates()
        self.check_functions()
        keys = self.check_group_keys()
        self.check_outputs(keys)
        self.check_where()
        self.check_having()
        self.check_order()
        self.check_limit()
        return self.problems

    def fail(self, message: str) -> None:
        self.problems.append(message)

    def check_constructs(self) -> None:
        for node in self.tree.walk():
            if node is not self.tree and isinstance(node, (exp.Select, *FORBIDDEN)):
                self.fail(f"forbidden construct {node.key}")
            if node.comments:
                self.fail("a comment reaches the engine")
        for arg in ("with_", "distinct", "laterals", "windows", "qualify", "offset", "into", "settings", "sample"):
            if self.tree.args.get(arg):
                self.fail(f"forbidden clause {arg}")

    def check_tables(self) -> None:
        source = self.tree.args.get("from_")
        main = source.this if source else None
        if not isinstance(main, exp.Table) or f"{main.db}.{main.name}" != self.policy.dataset or main.alias:
            self.fail("FROM is not exactly the granted dataset")
            return
        self.tables[main.name] = None
        for join in self.tree.args.get("joins") or []:
            table = join.this
            lookup = self.policy.lookups.get(f"{table.db}.{table.name}") if isinstance(table, exp.Table) else None
            if lookup is None or table.alias or join.side not in ("", "LEFT") or join.kind or join.args.get("method"):
                self.fail(f"a join to something other than a lookup: {join.sql()}")
                continue
            on = join.args.get("on")
            wanted = {(main.name, lookup.key), (table.name, lookup.key)}
            if not (isinstance(on, exp.EQ) and all(isinstance(c, exp.Column) for c in (on.left, on.right))
                    and {(c.table, c.name) for c in (on.left, on.right)} == wanted):
                self.fail(f"a lookup joined other than on its key: {join.sql()}")
            if table.name in self.tables:
                self.fail(f"{table.name} is joined twice")
            self.tables[table.name] = lookup

    def level(self, column: exp.Column) -> ColumnLevel:
        if self.tree.args.get("joins") and not column.table:
            self.fail(f"column {column.name} is unqualified in a query with joins")
        table = column.table or self.tree.args["from_"].this.name
        if table not in self.tables:
            self.fail(f"column {column.sql()} belongs to no table in the query")
            return ColumnLevel.HIDDEN
        lookup = self.tables[table]
        if lookup is None:
            return self.policy.columns.get(column.name, ColumnLevel.HIDDEN)
        return self.policy.columns[lookup.key] if column.name in (lookup.key, *lookup.columns) else ColumnLevel.HIDDEN

    def check_columns(self) -> None:
        # The grant's own row filter may test columns the caller cannot see (district_code).
        where = self.tree.args.get("where")
        wanted = self._bound_row_filter()
        filter_columns = {id(c) for term in (_conjuncts(where.this) if where else ())
                          if _unqualified(term) == wanted for c in term.find_all(exp.Column)}
        order = self.tree.args.get("order")
        ordered = {id(c) for c in order.find_all(exp.Column)} if order is not None else set()  # check_order's
        for column in self.tree.find_all(exp.Column):
            if id(column) in filter_columns or id(column) in ordered:
                continue
            level = self.level(column)
            if level is ColumnLevel.HIDDEN:
                self.fail(f"hidden column {column.sql()}")
            if level is ColumnLevel.ENTITY:
                distinct = column.parent
                if not (isinstance(distinct, exp.Distinct) and isinstance(distinct.parent, exp.Count)
                        and len(distinct.expressions) == 1):
                    self.fail(f"the entity column outside COUNT(DISTINCT): {column.parent.sql()}")

    def check_aggregates(self) -> None:
        for aggregate in self.tree.find_all(*AGGREGATES):
            if aggregate.find_ancestor(*AGGREGATES):
                self.fail(f"nested aggregate {aggregate.sql()}")
            argument = aggregate.this
            if isinstance(aggregate, exp.Count) and isinstance(argument, exp.Star):
                continue
            if isinstance(argument, exp.Distinct):
                inner = argument.expressions
                if not (isinstance(aggregate, exp.Count) and len(inner) == 1 and isinstance(inner[0], exp.Column)
                        and self.level(inner[0]) is ColumnLevel.ENTITY):
                    self.fail(f"DISTINCT other than COUNT(DISTINCT entity): {aggregate.sql()}")
                continue
            name = aggregate.key.upper()
            if isinstance(aggregate, (exp.Min, exp.Max)):
                for column in argument.find_all(exp.Column):
                    if name not in self.policy.min_max.get(column.name, ()):
                        self.fail(f"{name} of {column.name}, which the grant does not allow")
            elif name not in self.policy.aggregates:
                self.fail(f"aggregate {name} is not granted")
            if aggregate.expressions:
                self.fail(f"{name} with more than one argument")
            for node in argument.walk():
                if isinstance(node, exp.Column):
                    if self.level(node) is not ColumnLevel.MEASURE:
                        self.fail(f"{name} over a non-measure column {node.sql()}")
                elif isinstance(node, exp.Literal):
                    if node.is_string:
                        self.fail(f"{name} over a text literal")
                elif not isinstance(node, (*ARITHMETIC, exp.Identifier)):
                    self.fail(f"{name} over {node.key}")

    def check_functions(self) -> None:
        for function in self.tree.find_all(exp.Func):
            if isinstance(function, AGGREGATES + DATE_PARTS + (exp.Connector, exp.Grouping)):  # AND, OR: Funcs too
                continue
            if isinstance(function, exp.Cast) and isinstance(function.this, exp.Literal):
                continue
            self.fail(f"function {function.sql()} is not on the allowlist")
        for part in self.tree.find_all(exp.TimestampTrunc, exp.DateTrunc):
            if part.text("unit").upper() not in ("YEAR", "QUARTER", "MONTH"):
                self.fail(f"date_trunc to {part.text('unit')}")

    def check_group_keys(self) -> list[exp.Expression]:
        group = self.tree.args.get("group")
        keys = list(group.expressions) if group else []
        if group is not None and any(group.args.get(a) for a in ("all", "rollup", "cube", "grouping_sets")):
            self.fail("GROUP BY ALL, ROLLUP, CUBE or GROUPING SETS reached the engine")
        for key in keys:
            base = key.this if isinstance(key, DATE_PARTS) else key
            if not isinstance(base, exp.Column) or self.level(base) is not ColumnLevel.GROUP:
                self.fail(f"GROUP BY {key.sql()} is not a group column")
        return keys

    def check_outputs(self, keys: list[exp.Expression]) -> None:
        """The projections are the keys in GROUP BY order, then plain statistics, named as the sandbox reads them."""
        entity = self.policy.entity_column
        projections = list(self.tree.expressions)
        if any(not isinstance(p, exp.Alias) for p in projections):
            self.fail("an output is not named")
            return
        names = [p.alias for p in projections]
        for index, key in enumerate(keys):
            if index >= len(projections) or names[index] != f"__k{index}" or projections[index].this != key:
                self.fail(f"group key {key.sql()} is not output {index} as __k{index}")
        statistics = projections[len(keys):]
        if self.tree.find(exp.Rollup):
            if not statistics or statistics[-1].alias != "__grouping" or not isinstance(statistics[-1].this, exp.Grouping):
                self.fail("a ROLLUP without its grouping column")
            statistics = statistics[:-1]
        for index, projection in enumerate(statistics):
            value = projection.this
            if projection.alias != f"__s{index}":
                self.fail(f"statistic {index} is named {projection.alias}")
            if index == 0 and _unqualified(value) != f"COUNT(DISTINCT {entity})":
                self.fail(f"statistic 0 is not COUNT(DISTINCT {entity}) but {value.sql()}")
            if not isinstance(value, AGGREGATES):
                self.fail(f"statistic {value.sql()} is not one aggregate")
                continue
            argument = value.this
            if not (isinstance(argument, (exp.Star, exp.Column))
                    or (isinstance(argument, exp.Distinct) and index == 0)):
                self.fail(f"statistic {value.sql()} aggregates an expression, not one column")
            if isinstance(value, (exp.Sum, exp.Min, exp.Max)) and not isinstance(argument, exp.Column):
                self.fail(f"{value.sql()} takes a column")
        for node in self.tree.find_all(*ARITHMETIC, exp.Literal, *COMPARISONS, exp.Boolean):
            if node.find_ancestor(*DATE_PARTS) is None and any(node.find_ancestor(exp.Alias) is p for p in projections):
                self.fail(f"the output computes {node.sql()}: nothing the caller computes may reach the engine")
                break

    def check_where(self) -> None:
        where = self.tree.args.get("where")
        terms = list(_conjuncts(where.this)) if where else []
        wanted = self._bound_row_filter()
        if wanted is not None and not any(_unqualified(t) == wanted for t in terms):
            self.fail(f"the row filter {wanted} is missing from WHERE")
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
        if not isinstance(base, exp.Column) or self.level(base) not in (ColumnLevel.GROUP, ColumnLevel.FILTER):
            self.fail(f"WHERE tests {subject.sql()}, which is not a group or filter column")
        if not values or not all(_is_literal(v) for v in values):
            self.fail(f"WHERE compares with something other than literals: {term.sql()}")

    def check_having(self) -> None:
        having = self.tree.args.get("having")
        entity = self.policy.entity_column
        wanted = f"COUNT(DISTINCT {entity}) >= {self.policy.min_entities}"
        if self.policy.suppression == "drop" and not self.tree.find(exp.Rollup):
            if having is None or _unqualified(having.this) != wanted:
                self.fail(f"the threshold {wanted} is not the whole of HAVING")
        elif having is not None:
            self.fail(f"HAVING {having.this.sql()} where the grant marks small cells or asks for totals")

    def check_order(self) -> None:
        order = self.tree.args.get("order")
        terms = list(order.expressions) if order is not None else []
        released_first = f"COUNT(DISTINCT {self.policy.entity_column}) >= {self.policy.min_entities}"
        if terms and _unqualified(terms[0].this) == released_first and terms[0].args.get("desc"):
            terms = terms[1:]  # encrypted: the groups that are released come first, then the keys
        for ordered in terms:
            if not (isinstance(ordered.this, exp.Column) and ordered.this.name.startswith("__k")
                    and not ordered.this.table):
                self.fail(f"ORDER BY {ordered.this.sql()}: the engine may order by group keys only")

    def check_limit(self) -> None:
        limit = self.tree.args.get("limit")
        value = limit.expression if limit else None
        if not (isinstance(value, exp.Literal) and value.name.isdigit()
                and int(value.name) <= self.policy.max_groups * 10 + 1):
            self.fail(f"LIMIT is missing or above the cap of {self.policy.max_groups * 10 + 1}")


def _conjuncts(node: exp.Expression):
    node = node.unnest()
    if isinstance(node, exp.And):
        yield from _conjuncts(node.left)
        yield from _conjuncts(node.right)
    else:
        yield node


def _inside_aggregate(node: exp.Expression) -> bool:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, AGGREGATES):
            return True
        parent = parent.parent
    return False


def _unqualified(node: exp.Expression) -> str:
    copy = node.copy()
    for column in copy.find_all(exp.Column):
        column.set("table", None)
    return copy.sql()


def _is_literal(node: exp.Expression) -> bool:
    if isinstance(node, (exp.Neg, exp.Cast)):
        node = node.this
    return isinstance(node, exp.Literal)
