"""add_encrypted_averages: under encryption an AVG travels as its exact SUM and COUNT.

BFV cells are integers, and averages of partitions do not add up; sums and counts do. So ``AVG(x)``
becomes ``SUM(x)`` under the same name, and ``COUNT(x)`` follows as flag column ``__avg_count_<i>``
(``i`` the output's position). The requester divides after decrypting.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from broker.policy import Noise

AVG_COUNT_PREFIX = "__avg_count_"


def add_encrypted_averages(expression: exp.Select, encrypted: bool, noise: Noise | None) -> exp.Select:
    """Rewrite each AVG output into SUM under its name, and append its COUNT as a flag column.

    Not under noise, whose plan computes every output itself (an encrypted AVG is refused there)."""
    if not encrypted or noise is not None:
        return expression
    counts = []
    for position, projection in enumerate(list(expression.expressions)):
        output = projection.unalias()
        if not isinstance(output, exp.Avg):
            continue
        # The name the caller would see for the average (an unaliased AVG(x) is "avg(x)").
        name = projection.alias if isinstance(projection, exp.Alias) else projection.sql(dialect="duckdb")
        projection.replace(exp.alias_(exp.Sum(this=output.this.copy()), name, quoted=True))
        counts.append(exp.alias_(exp.Count(this=output.this.copy()), f"{AVG_COUNT_PREFIX}{position}"))
    if counts:
        expression.set("expressions", [*expression.expressions, *counts])
    return expression
