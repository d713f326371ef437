"""The guard: checks a requester's SQL against a grant and rewrites it for the sandbox.

Modelled on sqlglot's optimizer: :data:`RULES` is a tuple of small rules, each
a function ``Select -> Select`` in a module named for what it does
(``reject_*`` rules raise a :class:`~dsbroker.errors.GuardError`, ``add_*``,
``enforce_*`` and ``split_*`` rules rewrite). Each rule receives only the settings
its signature names. Order matters and is written down here:

1. structure first (one plain SELECT over the granted table; limits on size and depth in ``parse``; a
   DISTINCT over plain keys is its GROUP BY before anything checks it, and EXTRACT of a year, quarter or
   month is year(), quarter() or month(), a literal date plus a literal interval the date it comes to),
2. then aliases and positions are expanded against the caller's own outputs, so every later rule sees
   real columns and no position can name a column the guard adds later,
3. then the column checks (granted, entity, grouping, linear aggregates, filters, and, given the
   engine's column types, filter literals and measure types); before the checks of filters, the safe forms
   become the ones they know (an OR of equalities on one column is its IN, a one-sided range gets its far
   bound, a complement on an enumerated column is the IN of the other values),
4. then the rewrites: the filters (ranges on a grid, the row filter), the cap on groups, and the split
   into the cells the engine computes and the plan the sandbox computes from released cells
   (``split_cells``); on the cell query, the threshold where small cells are dropped, totals, with
   joins every column qualified, the dominance rule's statistics, or the noise policy's bounded cells;
   last what the engine's dialect needs beyond sqlglot's own translation.

A two-level query (``split_levels``: WITH or a subquery in FROM, or one level with window functions, ROUND
and the like over its aggregates) is split first into its protected aggregates, each guarded by every rule
above as a query of its own, and an outer query over their released cells, which the rules of
:data:`OUTER_RULES` check and rewrite; the sandbox runs it after disclosure control (``outer_plan``).
"""

from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import sqlglot.expressions as exp

from dsbroker.errors import DsbrokerError
from dsbroker.guard._tree import AGGREGATE_TYPES, refuse
from dsbroker.guard.add_withheld_marks import add_withheld_marks
from dsbroker.guard.add_dominance_rule import add_dominance_rule
from dsbroker.guard.add_entity_cells import add_entity_cells
from dsbroker.guard.add_entity_threshold import add_entity_threshold
from dsbroker.guard.add_noise_measures import NoisePlan, add_noise_measures
from dsbroker.guard.add_row_filter import add_row_filter
from dsbroker.guard.add_totals import add_totals
from dsbroker.guard.enforce_group_cap import enforce_group_cap
from dsbroker.guard.enforce_range_grid import enforce_range_grid
from dsbroker.guard.expand_complements import expand_complements
from dsbroker.guard.expand_date_forms import expand_date_forms
from dsbroker.guard.expand_distinct_groups import expand_distinct_groups, lists_groups
from dsbroker.guard.expand_simple_case import expand_simple_case
from dsbroker.guard.expand_one_sided_ranges import expand_one_sided_ranges
from dsbroker.guard.expand_or_equalities import expand_or_equalities
from dsbroker.guard.expand_output_aliases import expand_output_aliases
from dsbroker.guard.parse import admit, parse
from dsbroker.guard.qualify_joined_columns import qualify_joined_columns
from dsbroker.guard.reject_encryption_unsupported import reject_encryption_unsupported
from dsbroker.guard.reject_entity_misuse import reject_entity_misuse
from dsbroker.guard.reject_invalid_aggregates import reject_invalid_aggregates
from dsbroker.guard.reject_invalid_filters import reject_invalid_filters
from dsbroker.guard.reject_invalid_group_keys import reject_invalid_group_keys
from dsbroker.guard.reject_invalid_totals import reject_invalid_totals
from dsbroker.guard.reject_mistyped_filters import reject_mistyped_filters
from dsbroker.guard.reject_mistyped_key_texts import reject_mistyped_key_texts
from dsbroker.guard.reject_noise_unsupported import reject_noise_unsupported
from dsbroker.guard.reject_raw_rows import reject_raw_rows
from dsbroker.guard.reject_ungranted_columns import reject_ungranted_columns
from dsbroker.guard.reject_ungranted_result_mode import reject_ungranted_result_mode
from dsbroker.guard.reject_ungrouped_columns import reject_ungrouped_columns
from dsbroker.guard.reject_unsummable_measures import reject_unsummable_measures
from dsbroker.guard.reject_unsupported_syntax import reject_unsupported_syntax
from dsbroker.guard.outer_plan import OuterPlan, ReleasedTable
from dsbroker.guard.reject_outer_unsupported import reject_outer_unsupported
from dsbroker.guard.release_plan import CellPlan
from dsbroker.guard.resolve_released_tables import resolve_released_tables
from dsbroker.guard.resolve_table import resolve_table
from dsbroker.guard.split_cells import split_cells
from dsbroker.guard.split_levels import split_levels
from dsbroker.guard.translate_date_parts import translate_date_parts
from dsbroker.guard.translate_grouping import translate_grouping
from dsbroker.guard.translate_sums import translate_sums
from dsbroker.guard import internal_names as names
from dsbroker.guard.internal_names import CELL_PLAN_META, COVERAGE_META, NOISE_PLAN_META
from dsbroker.results.parameters import SLOTS
from dsbroker.policy.model import Dominance, Policy, bind_row_filter

# The rules that need the engine's column types: the broker may lack them, the sandbox never does.
SCHEMA_RULES = ("reject_mistyped_filters", "reject_unsummable_measures")

RULES: tuple[Callable[..., exp.Select], ...] = (
    expand_distinct_groups,
    expand_simple_case,
    expand_or_equalities,  # before expand_date_forms: an OR of strftime (or EXTRACT) equalities is then one IN it reads
    expand_date_forms,
    reject_unsupported_syntax,
    resolve_table,
    reject_ungranted_result_mode,
    expand_output_aliases,
    reject_ungranted_columns,
    expand_complements,
    expand_one_sided_ranges,
    reject_entity_misuse,
    reject_raw_rows,
    reject_invalid_group_keys,
    reject_invalid_aggregates,
    reject_ungrouped_columns,
    reject_invalid_filters,
    reject_mistyped_key_texts,
    reject_mistyped_filters,
    reject_unsummable_measures,
    reject_noise_unsupported,
    reject_encryption_unsupported,
    reject_invalid_totals,
    enforce_range_grid,
    add_row_filter,
    enforce_group_cap,
    split_cells,
    add_entity_threshold,
    add_totals,
    qualify_joined_columns,
    add_entity_cells,
    add_dominance_rule,
    add_noise_measures,
    translate_date_parts,
    translate_sums,
    translate_grouping,
)

# A two-level query's own rules, in order: before RULES run on each protected aggregate, split_levels; after,
# on the outer query, the others.
OUTER_RULES: tuple[Callable[..., Any], ...] = (
    split_levels, reject_outer_unsupported, resolve_released_tables, add_withheld_marks)

_RULE_PARAMETERS = {rule: tuple(inspect.signature(rule).parameters)[1:] for rule in RULES}
_SUMMARIES = {rule: (inspect.getdoc(rule) or rule.__name__).splitlines()[0].replace("``", "")
              for rule in RULES + OUTER_RULES}


@dataclass(frozen=True)
class GuardedQuery:
    """A query the guard accepted: the SQL the engine runs, and how the sandbox makes the answer from it."""

    sql: str
    dataset: str
    entity: str
    min_entities: int
    max_rows: int  # the most rows the answer holds (the grant's cap on groups)
    engine_rows: int = 0  # the most rows the engine query returns (its LIMIT)
    lookups: tuple[str, ...] = ()  # the lookup tables the query joins
    cells: CellPlan | None = None  # the cell table's layout and what to compute from its released cells
    noise: NoisePlan | None = None  # under a noise policy: how the sandbox makes the noisy answer instead
    dominance: Dominance | None = None  # the rule the sandbox applies to the cells' largest contributions
    suppression: str = "mark"  # the policy's: withheld cells are marked, or their rows dropped
    encrypted: bool = False  # the cells leave the sandbox encrypted under the requester's key
    # SELECT <the cell keys> FROM/JOIN/WHERE of the cell query, in the engine's dialect: which rows each cell
    # adds up (the released-cell auditor, sandbox.audit, reads it). Empty under a noise plan.
    coverage: str = ""
    # A two-level query: each protected aggregate guarded as a query of its own, and what the sandbox computes
    # from their released cells. ``sql`` is then all of their SQL, each part's as it runs (what the plan carries).
    parts: tuple[GuardedQuery, ...] = ()
    outer: OuterPlan | None = None

    @property
    def output_names(self) -> tuple[str, ...]:
        """The answer's column names."""
        if self.outer is not None:
            return self.outer.names
        if self.cells is not None:
            return tuple(output.name for output in self.cells.outputs)
        if self.noise is None:
            raise AssertionError("a guarded query has a cell plan or a noise plan")
        return tuple(output.name for output in self.noise.outputs)


@dataclass(frozen=True)
class GuardStep:
    """What one rule did to a query, for ``explain``: it checked it, or rewrote it, or had nothing to do."""

    rule: str
    action: str  # "checked", "rewrote" or "unchanged"
    summary: str


def guard(unverified_sql: str, policy: Policy, *, district: str, department: str,
          engine_dialect: str = "duckdb", steps: list[GuardStep] | None = None,
          encrypted: bool = False, column_types: dict[str, dict[str, str]] | None = None,
          deadline: float | None = None, clock: Callable[[], float] = time.monotonic) -> GuardedQuery:
    """Check ``unverified_sql`` against ``policy`` for a caller and return the SQL to run.

    Raises :class:`~dsbroker.errors.GuardError` naming the rule, table and column
    when the query is refused. With ``steps``, each rule that ran is appended to
    it (the explain path; it costs one SQL generation per rewriting rule).
    ``encrypted`` asks for the result encrypted under the requester's key: the
    grant must allow it; the sandbox leaves cells under the threshold out (the broker never learns
    which groups were small), and where the grant marks them, counts them per group in the encrypted
    answer (``partitions_withheld``).
    ``column_types`` maps each table ("schema.table") to its columns' engine types, for the rules that
    need them (:data:`SCHEMA_RULES`). ``deadline`` is a time on ``clock`` by which the guard must be done;
    past it, the query is refused (DEADLINE_EXCEEDED ``GUARD_TIMEOUT``) between two rules.
    """
    admit(unverified_sql)
    expression = parse(unverified_sql)
    level = functools.partial(_one_level, policy=policy, district=district, department=department,
                              engine_dialect=engine_dialect, steps=steps, encrypted=encrypted,
                              column_types=column_types, deadline=deadline, clock=clock)
    levels = split_levels(expression, policy.dataset, policy.visible_columns(), policy.lookups)
    if levels is None:
        return level(expression)
    _step(steps, split_levels, "rewrote")
    if encrypted or policy.noise is not None:
        mode = "encrypted results" if encrypted else "a noise policy"
        refuse("split_levels", "TWO_LEVELS_NOT_SUPPORTED", f"a query of two levels is not answered under {mode} yet; "
               "send the aggregate alone", construct="ENCRYPTED" if encrypted else "NOISE")
    parts = tuple(level(inner) for inner in levels.inners)
    for part in parts:
        if part.cells is None or part.cells.totals:
            refuse("split_levels", "TWO_LEVELS_NOT_SUPPORTED", "totals (ROLLUP, CUBE, GROUPING SETS) are not read by "
                   "an outer query", construct="ROLLUP" if part.cells is None or part.cells.rollup else "GROUPING SETS")
        repeated = {name for name in part.output_names if part.output_names.count(name) > 1}
        if repeated:
            refuse("split_levels", "DUPLICATE_ALIAS", f"output name {sorted(repeated)[0]!r} is used twice in an "
                   "aggregate the outer query reads; name each output", column=sorted(repeated)[0])
    outer = reject_outer_unsupported(levels.outer)
    _step(steps, reject_outer_unsupported, "checked")
    outer, lookups_read = resolve_released_tables(outer, [part.output_names for part in parts], policy.lookups)
    _step(steps, resolve_released_tables, "rewrote")
    tables = tuple(ReleasedTable(names.released_table(i), i, part.output_names, part.cells.cell_outputs)
                   for i, part in enumerate(parts) if part.cells is not None)
    marked = add_withheld_marks(outer, {table.name: {table.columns[p].lower(): names.withheld_mark(p)
                                                     for p in table.cells} for table in tables})
    _step(steps, add_withheld_marks, "rewrote")
    # The outer query runs on the sandbox's in-memory DuckDB, whatever engine holds the data.
    outer_sql = marked.expression.sql(dialect="duckdb", comments=False)
    plan = OuterPlan(outer_sql, marked.names, marked.marks, tables, lookups_read)
    sql = "\n".join([f"-- {table.name}, on the data:\n{part.sql};" for table, part in zip(tables, parts, strict=True)]
                    + [f"-- on the released cells:\n{outer_sql}"])
    return GuardedQuery(
        sql=sql, dataset=policy.dataset, entity=policy.entity_column, min_entities=policy.min_entities,
        max_rows=min(policy.max_groups, SLOTS), lookups=tuple(sorted({table for part in parts for table in part.lookups}
                                                                      | {lookup.table for lookup in lookups_read})),
        dominance=policy.dominance, suppression=policy.suppression, parts=parts, outer=plan)


def _lists_keys(expression: exp.Select) -> bool:
    """Whether ``expression`` groups and outputs no aggregate: its answer is the list of its groups."""
    # GROUPING() is an aggregate to sqlglot, but it reads a row's level, not its data: keys and levels list groups.
    return bool(expression.args.get("group")) and all(projection.find(*AGGREGATE_TYPES) is None
                                                       for projection in expression.expressions)


def _step(steps: list[GuardStep] | None, rule: Callable[..., Any], action: str) -> None:
    if steps is not None:
        steps.append(GuardStep(rule.__name__, action, _SUMMARIES[rule]))


def _one_level(expression: exp.Select, *, policy: Policy, district: str, department: str, engine_dialect: str,
               steps: list[GuardStep] | None, encrypted: bool, column_types: dict[str, dict[str, str]] | None,
               deadline: float | None, clock: Callable[[], float]) -> GuardedQuery:
    """:data:`RULES` on one SELECT over the dataset: a query of one level, or a protected aggregate of two."""
    # A DISTINCT lists groups (expand_distinct_groups), and so does a GROUP BY that outputs no aggregate: a row of a
    # small group would show it exists, with no cell to mark (and an outer query could count such rows: the
    # months one firm declares in).
    drop = _filters_a_measure(expression, policy.ranges) or lists_groups(expression) or _lists_keys(expression)
    suppression = "drop" if drop else policy.suppression
    max_groups = min(policy.max_groups, SLOTS)  # one row per BFV slot if encrypted else policy.max_groups
    settings: dict[str, Any] = {
        "dataset": policy.dataset,
        "columns": policy.visible_columns(),
        "aggregates": policy.aggregates,
        "min_max": policy.min_max,
        "ranges": policy.ranges,
        "values": policy.values,
        "lookups": policy.lookups,
        "entity": policy.entity_column,
        "min_entities": policy.min_entities,
        "max_groups": max_groups,
        "dominance": policy.dominance,
        "noise": policy.noise,
        "suppression": suppression,
        "results": policy.results,
        "encrypted": encrypted,
        "engine_dialect": engine_dialect,
        "column_types": column_types,
        "row_filter": bind_row_filter(policy.row_filter, district=district, department=department)
        if policy.row_filter else None,
    }
    for rule in RULES:
        if deadline is not None and clock() > deadline:
            raise DsbrokerError("the query's deadline passed while it was being checked", reason="GUARD_TIMEOUT",
                                rule=rule.__name__)
        before = expression.sql() if steps is not None and not rule.__name__.startswith("reject_") else None
        expression = rule(expression, **{name: settings[name] for name in _RULE_PARAMETERS[rule]})
        if steps is not None:
            action = "checked" if before is None else "rewrote" if expression.sql() != before else "unchanged"
            steps.append(GuardStep(rule.__name__, action, _SUMMARIES[rule]))
    joined = {join.this.name for join in _joins(expression)}
    coverage = expression.meta.get(COVERAGE_META)
    if coverage is not None:
        coverage = translate_date_parts(qualify_joined_columns(coverage), engine_dialect)
    limit = expression.args.get("limit")
    return GuardedQuery(
        sql=expression.sql(dialect=engine_dialect, comments=False, copy=False),  # the tree is not used again
        dataset=policy.dataset,
        entity=policy.entity_column,
        min_entities=policy.min_entities,
        max_rows=max_groups,
        engine_rows=int(limit.expression.name) if limit is not None else 0,
        lookups=tuple(sorted(table for table, lookup in policy.lookups.items() if lookup.name in joined)),
        cells=expression.meta.get(CELL_PLAN_META),
        noise=expression.meta.get(NOISE_PLAN_META),
        dominance=policy.dominance,
        suppression=suppression,
        encrypted=encrypted,
        coverage=coverage.sql(dialect=engine_dialect, comments=False) if coverage is not None else "",
    )


def _filters_a_measure(expression: exp.Select, ranges: dict) -> bool:
    """Whether WHERE tests a measure in a range (``ranges``). Such a query's small cells are left out, never
    marked: which rows a marked answer shows would say which band of the grid a lone taxpayer is in."""
    where = expression.args.get("where")
    return bool(ranges) and where is not None and any(
        column.name.lower() in ranges for column in where.find_all(exp.Column))


def _joins(expression: exp.Select) -> Iterator[exp.Join]:
    """The lookup joins of the engine query, wherever the rewrites moved them (a per-entity subquery)."""
    return expression.find_all(exp.Join)
