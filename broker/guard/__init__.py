"""The guard: checks a requester's SQL against a grant and rewrites it for the sandbox.

Modelled on sqlglot's optimizer: :data:`RULES` is a tuple of small rules, each
a function ``Select -> Select`` in a module named for what it does
(``reject_*`` rules raise a :class:`~broker.errors.GuardError`, ``add_*`` and
``enforce_*`` rules rewrite). Each rule receives only the settings its
signature names. Order matters and is written down here:

1. structure first (one plain SELECT over the granted table),
2. then aliases are expanded so every later rule sees real columns,
3. then the column checks (granted, entity, grouping, aggregates, filters),
4. then the rewrites (row filter, threshold, cap; with joins, every column qualified; the dominance rule
   or the noise policy's bounded cells), and last what the engine's dialect needs beyond sqlglot's
   own translation.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import sqlglot.expressions as exp

from broker.guard._tree import AGGREGATE_TYPES
from broker.guard.add_encrypted_averages import AVG_COUNT_PREFIX, add_encrypted_averages
from broker.guard.add_dominance_rule import FLAG_PREFIX, add_dominance_rule
from broker.guard.add_entity_threshold import add_entity_threshold
from broker.guard.add_noise_measures import PLAN_META, NoisePlan, add_noise_measures
from broker.guard.add_row_filter import add_row_filter
from broker.guard.add_totals import add_totals
from broker.guard.enforce_group_cap import enforce_group_cap
from broker.guard.enforce_range_grid import enforce_range_grid
from broker.guard.expand_output_aliases import expand_output_aliases
from broker.guard.parse import parse
from broker.guard.qualify_joined_columns import qualify_joined_columns
from broker.guard.reject_encryption_unsupported import reject_encryption_unsupported
from broker.guard.reject_entity_misuse import reject_entity_misuse
from broker.guard.reject_invalid_aggregates import reject_invalid_aggregates
from broker.guard.reject_invalid_filters import reject_invalid_filters
from broker.guard.reject_invalid_group_keys import reject_invalid_group_keys
from broker.guard.reject_invalid_totals import reject_invalid_totals
from broker.guard.reject_noise_unsupported import reject_noise_unsupported
from broker.guard.reject_raw_rows import reject_raw_rows
from broker.guard.reject_ungranted_columns import reject_ungranted_columns
from broker.guard.reject_ungranted_result_mode import reject_ungranted_result_mode
from broker.guard.reject_ungrouped_columns import reject_ungrouped_columns
from broker.guard.reject_unsupported_syntax import reject_unsupported_syntax
from broker.guard.resolve_table import resolve_table
from broker.guard.translate_date_parts import translate_date_parts
from broker.policy import Policy, bind_row_filter
from sandbox.bfv import SLOTS

RULES: tuple[Callable[..., exp.Select], ...] = (
    reject_unsupported_syntax,
    resolve_table,
    reject_ungranted_result_mode,
    expand_output_aliases,
    reject_ungranted_columns,
    reject_entity_misuse,
    reject_raw_rows,
    reject_invalid_group_keys,
    reject_invalid_aggregates,
    reject_ungrouped_columns,
    reject_invalid_filters,
    reject_noise_unsupported,
    reject_encryption_unsupported,
    reject_invalid_totals,
    enforce_range_grid,
    add_encrypted_averages,
    add_row_filter,
    add_entity_threshold,
    enforce_group_cap,
    add_totals,
    qualify_joined_columns,
    add_dominance_rule,
    add_noise_measures,
    translate_date_parts,
)

_RULE_PARAMETERS = {rule: tuple(inspect.signature(rule).parameters)[1:] for rule in RULES}
_SUMMARIES = {rule: (inspect.getdoc(rule) or rule.__name__).splitlines()[0].replace("``", "") for rule in RULES}


@dataclass(frozen=True)
class GuardedQuery:
    """A query the guard accepted: the SQL to run and what was applied to it."""

    sql: str
    dataset: str
    entity: str
    min_entities: int
    max_rows: int
    lookups: tuple[str, ...] = ()  # the lookup tables the query joins
    # Per dominance flag column (the last columns of the result): the output columns it withholds.
    dominance_flags: tuple[tuple[int, ...], ...] = ()
    noise: NoisePlan | None = None  # under a noise policy: how the sandbox makes the noisy answer
    outputs: int = 0  # the columns released; flag columns (named ``__...``) follow them and never leave the sandbox
    flags: tuple[str, ...] = ()
    aggregate_outputs: tuple[int, ...] = ()  # the released columns that hold aggregates (the cells a rule withholds)
    totals: tuple[int, ...] = ()  # with ROLLUP: the positions of its keys among the outputs, in ROLLUP order
    suppression: str = "mark"  # the policy's: withheld cells are marked, or their rows dropped
    encrypted: bool = False  # the cells leave the sandbox encrypted under the requester's key
    # Encrypted: per AVG output, its position and the flag column holding its COUNT (the output holds its SUM).
    averages: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class GuardStep:
    """What one rule did to a query, for ``explain``: it checked it, or rewrote it, or had nothing to do."""

    rule: str
    action: str  # "checked", "rewrote" or "unchanged"
    summary: str


def guard(unverified_sql: str, policy: Policy, *, district: str, department: str,
          engine_dialect: str = "duckdb", steps: list[GuardStep] | None = None,
          encrypted: bool = False) -> GuardedQuery:
    """Check ``unverified_sql`` against ``policy`` for a caller and return the SQL to run.

    Raises :class:`~broker.errors.GuardError` naming the rule, table and column
    when the query is refused. With ``steps``, each rule that ran is appended to
    it (the explain path; it costs one SQL generation per rewriting rule).
    ``encrypted`` asks for the result encrypted under the requester's key: the
    grant must allow it, and cells under the threshold are marked for the sandbox,
    which leaves them out (the broker never learns which groups were small).
    """
    suppression = "mark" if encrypted else policy.suppression
    max_groups = min(policy.max_groups, SLOTS) if encrypted else policy.max_groups
    settings: dict[str, Any] = {
        "dataset": policy.dataset,
        "columns": policy.visible_columns(),
        "aggregates": policy.aggregates,
        "min_max": policy.min_max,
        "ranges": policy.ranges,
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
        "row_filter": bind_row_filter(policy.row_filter, district=district, department=department)
        if policy.row_filter else None,
    }
    expression = parse(unverified_sql)
    for rule in RULES:
        before = expression.sql() if steps is not None and not rule.__name__.startswith("reject_") else None
        expression = rule(expression, **{name: settings[name] for name in _RULE_PARAMETERS[rule]})
        if steps is not None:
            action = "checked" if before is None else "rewrote" if expression.sql() != before else "unchanged"
            steps.append(GuardStep(rule.__name__, action, _SUMMARIES[rule]))
    joined = {join.this.name for join in expression.find_all(exp.Join)}
    # Read before generating: generation may change the tree.
    names = [projection.alias_or_name for projection in expression.expressions]
    outputs = [p for p, name in zip(expression.expressions, names) if not name.startswith("__")]
    flags = _dominance_flags(outputs, names)
    noise = expression.meta.get(PLAN_META)
    group = expression.args.get("group")
    rollup = next((key for key in group.expressions if isinstance(key, exp.Rollup)), None) if group is not None else None
    unaliased = [output.unalias() for output in outputs]
    return GuardedQuery(
        sql=expression.sql(dialect=engine_dialect, comments=False, copy=False),  # the tree is not used again
        dataset=policy.dataset,
        entity=policy.entity_column,
        min_entities=policy.min_entities,
        max_rows=max_groups,
        lookups=tuple(sorted(table for table, lookup in policy.lookups.items() if lookup.name in joined)),
        dominance_flags=flags,
        noise=noise,
        outputs=len(outputs),
        flags=tuple(names[len(outputs):]),
        aggregate_outputs=tuple(i for i, output in enumerate(outputs) if output.find(*AGGREGATE_TYPES)),
        totals=tuple(unaliased.index(key) for key in rollup.expressions) if rollup is not None else (),
        suppression=suppression,
        encrypted=encrypted,
        averages=tuple((int(name.removeprefix(AVG_COUNT_PREFIX)), name) for name in names[len(outputs):]
                       if name.startswith(AVG_COUNT_PREFIX)),
    )


def _dominance_flags(outputs: list[exp.Expression], names: list[str]) -> tuple[tuple[int, ...], ...]:
    """Per dominance flag column: the positions of the outputs that read its measure (``__m<i>``)."""
    return tuple(
        tuple(position for position, output in enumerate(outputs)
              if any(f"__m{flag.removeprefix(FLAG_PREFIX)}" == column.name for column in output.find_all(exp.Column)))
        for flag in names if flag.startswith(FLAG_PREFIX))
