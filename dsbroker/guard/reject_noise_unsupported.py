"""reject_noise_unsupported: under a noise policy, only outputs whose sensitivity the policy fixes.

Noise is calibrated to how much one taxpayer can change an answer. The policy bounds that for
counts of taxpayers and rows and for the SUM and AVG of a measure it gives clipping bounds for; any
other output (arithmetic across aggregates, HAVING on exact values, ordering by something not
released, an expression over keys, which the engine would compute for every cell, lone taxpayers'
included) would be computed on exact values and is refused. Ratios and filters on the released
cells are the caller's to compute from the noisy answer.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import AGGREGATE_NAMES, AGGREGATE_TYPES, refuse
from dsbroker.guard.date_texts import strftime_format
from dsbroker.policy.model import Noise



def reject_noise_unsupported(expression: exp.Select, dataset: str, noise: Noise | None) -> exp.Select:
    """Refuse HAVING, and outputs or orderings other than group keys and noisable aggregates."""
    if noise is None:
        return expression
    if expression.args.get("having") is not None:
        refuse("reject_noise_unsupported", "NOISE_HAVING_NOT_ALLOWED",
               "HAVING is not allowed under noise: it would test exact values; "
               "filter the released (noisy) rows instead", table=dataset)
    outputs = [projection.unalias() for projection in expression.expressions]
    group = expression.args.get("group")
    keys = list(group.expressions) if group is not None else []
    if any(strftime_format(key) is not None for key in keys):
        refuse("reject_noise_unsupported", "NOISE_OUTPUT_NOT_SUPPORTED", "under noise a key is a column or its "
               "year, quarter or month as they are; group by year() or date_trunc and write the text after the "
               "answer comes back", table=dataset, function="STRFTIME")
    for output in outputs:
        aggregate = output.find(*AGGREGATE_TYPES)
        if aggregate is None:
            # The noise policy's engine query computes its key outputs for every cell, lone taxpayers'
            # included, before the noisy threshold: an expression there could fail on one cell only.
            if not any(output == key for key in keys):
                refuse("reject_noise_unsupported", "NOISE_OUTPUT_NOT_SUPPORTED",
                       "under noise an output that is not an aggregate must be a GROUP BY key as it is; compute "
                       "with the key after the answer comes back", table=dataset)
            continue
        if aggregate is not output:
            refuse("reject_noise_unsupported", "NOISE_OUTPUT_NOT_SUPPORTED",
                   f"under noise an output is a group key or one aggregate; compute with "
                   f"{AGGREGATE_NAMES[type(aggregate)]} after the answer comes back", table=dataset,
                   function=AGGREGATE_NAMES[type(aggregate)])
        check_noisable(aggregate, dataset, noise)
    order = expression.args.get("order")
    for ordered in order.expressions if order is not None else ():
        if ordered.this not in outputs:
            refuse("reject_noise_unsupported", "NOISE_ORDER_NOT_SUPPORTED",
                   "under noise ORDER BY may name only output columns (it orders the released, noisy values)",
                   table=dataset)
    return expression


def check_noisable(aggregate: exp.Expr, dataset: str, noise: Noise) -> None:
    """Refuse an aggregate whose sensitivity the policy does not fix."""
    name = AGGREGATE_NAMES[type(aggregate)]
    argument = aggregate.this
    if isinstance(aggregate, exp.Count):
        if isinstance(argument, (exp.Star, exp.Distinct)):
            return
        refuse("reject_noise_unsupported", "NOISE_AGGREGATE_NOT_SUPPORTED",
               "under noise COUNT counts rows (COUNT(*)) or taxpayers (COUNT(DISTINCT <entity>))",
               table=dataset, function=name)
    if isinstance(aggregate, (exp.Sum, exp.Avg)):
        if not isinstance(argument, exp.Column):
            refuse("reject_noise_unsupported", "NOISE_AGGREGATE_NOT_SUPPORTED",
                   f"under noise {name} takes one measure column, whose clipping bounds fix the noise",
                   table=dataset, function=name)
        if argument.name not in noise.bounds:
            refuse("reject_noise_unsupported", "NOISE_BOUNDS_MISSING",
                   f"the policy gives no clipping bounds for {argument.name!r}, so "
                   f"{name} of it cannot be answered under noise", table=dataset, column=argument.name, function=name)
        return
    refuse("reject_noise_unsupported", "NOISE_AGGREGATE_NOT_SUPPORTED", f"{name} is not answered under noise",
           table=dataset, function=name)
