"""add_noise_measures: under a noise policy, compute each cell's bounded, exact measures for the sandbox.

The sandbox adds the noise (OpenDP) and applies a noisy threshold; what the engine computes must
have the sensitivity the noise is calibrated to. So the query aggregates per cell and taxpayer
first (``__cells``), keeps at most ``groups_per_entity`` cells per taxpayer (chosen by a hash of the
taxpayer and the cell, so the choice neither favours early periods nor is the same for everyone; MD5 of
their text, which every engine computes alike, so each keeps the same cells),
clips each taxpayer's row count to ``rows_per_entity`` and its total of each measure to the policy's
bounds, and only then adds up per cell. ORDER BY and LIMIT move to the sandbox, which applies them to
the noisy values, and the exact threshold gives way to the noisy one (an exact threshold would tell
whether a cell holds k or k - 1 taxpayers). The plan of what each output is travels in :class:`NoisePlan`.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot.expressions as exp

from dsbroker.guard import internal_names as internal
from dsbroker.guard._tree import per_cell_and_entity
from dsbroker.policy.model import Noise
from dsbroker.guard.internal_names import NOISE_PLAN_META



@dataclass(frozen=True)
class NoisyQuantity:
    """One exact per-cell sum the sandbox adds noise to: column ``noisy_quantity(index)`` of the engine's result."""

    kind: str  # "rows", "sum" or "count" (non-null rows of a measure)
    measure: str | None
    bound: int  # the most one taxpayer adds to one cell


@dataclass(frozen=True)
class NoisyOutput:
    """What one output column of the answer is: a group key passed through, or a noisy aggregate."""

    name: str
    kind: str  # "key", "entities", "rows", "sum" or "avg"
    column: int  # the engine column of a key; the quantity of rows or sum (avg: of its sum)
    count: int | None = None  # avg: the quantity counting the measure's rows


@dataclass(frozen=True)
class NoisePlan:
    """How the sandbox turns the engine's exact, bounded cells into the noisy answer."""

    outputs: tuple[NoisyOutput, ...]
    keys: int  # the engine's first columns are the key outputs; then ENTITIES, then each noisy quantity
    quantities: tuple[NoisyQuantity, ...]
    order: tuple[tuple[int, bool], ...]  # (output position, descending), in order
    limit: int
    groups_per_entity: int


def add_noise_measures(expression: exp.Select, entity: str, noise: Noise | None) -> exp.Select:
    """Rewrite to per-taxpayer bounded cells; ORDER BY and LIMIT go into the plan for the sandbox."""
    if noise is None:
        return expression
    group = expression.args.get("group")
    keys = list(group.expressions) if group is not None else []
    # With a lookup joined, dataset columns are qualified by the dataset's table name (qualify_joined_columns).
    table = expression.args["from_"].this.name if expression.args.get("joins") else None
    entity_column = exp.column(entity, table=table)
    inner = per_cell_and_entity(expression, keys, entity_column)

    projections = [p.unalias() for p in expression.expressions]
    names = [p.alias if isinstance(p, exp.Alias) else p.name if isinstance(p, exp.Column) else p.sql(dialect="duckdb")
             for p in expression.expressions]
    quantities: list[NoisyQuantity] = []
    key_outputs: list[exp.Expr] = []
    outputs: list[NoisyOutput] = []

    def quantity(kind: str, measure: str | None, bound: int) -> int:
        wanted = NoisyQuantity(kind, measure, bound)
        if wanted not in quantities:
            quantities.append(wanted)
            source = _source(wanted)
            if kind != "rows" and source not in {p.alias for p in inner.expressions}:
                column = exp.column(_measured(wanted), table=table)
                aggregated = exp.Sum(this=column) if kind == "sum" else exp.Count(this=column)
                inner.expressions.append(aggregated.as_(source, copy=False))
        return quantities.index(wanted)

    for name, output in zip(names, projections, strict=True):
        if isinstance(output, exp.Count) and isinstance(output.this, exp.Distinct):
            outputs.append(NoisyOutput(name, "entities", -1))
        elif isinstance(output, exp.Count):
            outputs.append(NoisyOutput(name, "rows", quantity("rows", None, noise.rows_per_entity)))
        elif isinstance(output, (exp.Sum, exp.Avg)):
            measure = output.this.name
            total = quantity("sum", measure, noise.magnitude(measure))
            if isinstance(output, exp.Sum):
                outputs.append(NoisyOutput(name, "sum", total))
            else:
                outputs.append(NoisyOutput(name, "avg", total, quantity("count", measure, noise.rows_per_entity)))
        else:
            outputs.append(NoisyOutput(name, "key", len(key_outputs)))
            key_outputs.append(_cell_form(output.copy(), keys).as_(name, copy=False))

    cells = [exp.column(internal.cell_key(i)) for i in range(len(keys))]
    source: exp.Expr = exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(internal.CELLS)))
    if keys:
        taxpayer = exp.column(internal.ENTITY)
        rank = exp.Window(this=exp.RowNumber(), partition_by=[taxpayer], order=exp.Order(expressions=[
            exp.Ordered(this=_portable_hash([taxpayer, *cells])),
            *(exp.Ordered(this=c.copy()) for c in cells)]))
        ranked = exp.Select(expressions=[exp.Star(), rank.as_(internal.RANK, copy=False)]).from_(source, copy=False)
        source = exp.select("*").from_(exp.Subquery(this=ranked, alias=exp.TableAlias(
            this=exp.to_identifier(internal.RANKED)))).where(exp.LTE(
                this=exp.column(internal.RANK), expression=exp.Literal.number(noise.groups_per_entity)))
        source = exp.Subquery(this=source, alias=exp.TableAlias(this=exp.to_identifier(internal.CELLS)))
    measures = [exp.Count(this=exp.Star()).as_(internal.ENTITIES, copy=False), *_clipped_sums(quantities, noise)]
    order = expression.args.get("order")
    limit = expression.args["limit"]  # enforce_group_cap always sets one
    plan = NoisePlan(
        outputs=tuple(outputs), keys=len(key_outputs), quantities=tuple(quantities),
        order=tuple((projections.index(o.this), bool(o.args.get("desc"))) for o in order.expressions)
        if order is not None else (),
        limit=int(limit.expression.name), groups_per_entity=noise.groups_per_entity)
    rewritten = exp.Select(expressions=key_outputs + measures)
    rewritten.set("from_", exp.From(this=source))
    if keys:
        rewritten.set("group", exp.Group(expressions=cells))
    rewritten.meta[NOISE_PLAN_META] = plan
    return rewritten


def _clipped_sums(quantities: list[NoisyQuantity], noise: Noise) -> list[exp.Expr]:
    """Each noisy quantity: the sum over the cell's taxpayers of their totals, each clipped to its bounds."""
    measures: list[exp.Expr] = []
    for index, wanted in enumerate(quantities):
        value = exp.column(_source(wanted))
        low, high = noise.bounds[_measured(wanted)] if wanted.kind == "sum" else (0, wanted.bound)
        clipped = _clip(value, low, high)
        # No cast: the sum of clipped totals stays in the engine's wide integer type, which no bound
        # times any number of taxpayers overflows (a cast to BIGINT could fail, and tell why).
        measures.append(exp.Sum(this=clipped).as_(internal.noisy_quantity(index), copy=False))
    return measures


def _source(quantity: NoisyQuantity) -> str:
    """The per-entity column a noisy quantity adds up."""
    if quantity.kind == "rows":
        return internal.ROWS
    measure = _measured(quantity)
    return internal.entity_sum(measure) if quantity.kind == "sum" else internal.entity_count(measure)


def _measured(quantity: NoisyQuantity) -> str:
    if quantity.measure is None:
        raise AssertionError(f"a noisy {quantity.kind} is always of a measure")
    return quantity.measure


def _clip(value: exp.Expr, low: int, high: int) -> exp.Expr:
    """``value`` clipped to [low, high]; NULL stays NULL (a CASE: GREATEST and LEAST differ on NULL by engine)."""
    def number(n: int) -> exp.Expr:
        return exp.Literal.number(n) if n >= 0 else exp.Neg(this=exp.Literal.number(-n))

    return exp.Case(ifs=[exp.If(this=exp.LT(this=value.copy(), expression=number(low)), true=number(low)),
                         exp.If(this=exp.GT(this=value.copy(), expression=number(high)), true=number(high))],
                    default=value)


def _cell_form(node: exp.Expr, keys: list) -> exp.Expr:
    """A key output over the cell columns: each group key becomes its ``__g<i>``."""
    for index, key in enumerate(keys):
        if node == key:
            return exp.column(internal.cell_key(index))
    for child in list(node.iter_expressions()):
        replaced = _cell_form(child, keys)
        if replaced is not child:
            child.replace(replaced)
    return node


def _portable_hash(columns: list[exp.Expr]) -> exp.Expr:
    """MD5 of the columns' text joined by ``|`` (NULL as empty): the same value on DuckDB and PostgreSQL, whose
    own hash functions differ, so both engines rank a taxpayer's cells alike."""
    parts: list[exp.Expr] = []
    for column in columns:
        if parts:
            parts.append(exp.Literal.string("|"))
        parts.append(exp.func("COALESCE", exp.cast(column.copy(), "text"), exp.Literal.string("")))
    joined = parts[0]
    for part in parts[1:]:
        joined = exp.DPipe(this=joined, expression=part)
    return exp.func("MD5", joined)
