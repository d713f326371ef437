"""expand_date_forms folds a literal date plus or minus an interval to the date DuckDB itself computes."""

from __future__ import annotations

import datetime as dt
import random

import duckdb
import sqlglot

from dsbroker.guard.expand_date_forms import expand_date_forms


def _folded(condition: str) -> str | None:
    tree = expand_date_forms(sqlglot.parse_one(f"SELECT 1 FROM t WHERE {condition}", read="duckdb"))
    literal = tree.args["where"].this.expression
    return literal.this.this if isinstance(literal, sqlglot.exp.Cast) and not literal.find(sqlglot.exp.Interval) \
        else None


def test_every_fold_is_the_date_the_engine_computes():
    rng = random.Random(7)
    connection = duckdb.connect()
    for _ in range(400):
        day = dt.date(rng.randrange(1, 9999), rng.randrange(1, 13), rng.randrange(1, 29)) + dt.timedelta(
            days=rng.choice((0, 0, 1, 2, 3)))
        interval = f"INTERVAL '{rng.randrange(0, 400)}' {rng.choice(('DAY', 'WEEK', 'MONTH', 'QUARTER', 'YEAR'))}"
        operator = rng.choice(("+", "-"))
        expression = f"DATE '{day.isoformat()}' {operator} {interval}"
        folded = _folded(f"period >= {expression}")
        try:
            engine = connection.execute(f"SELECT CAST({expression} AS DATE)").fetchone()[0]
        except duckdb.Error:
            engine = None  # out of the engine's range too: the guard must not fold it
        if not isinstance(engine, dt.date):
            engine = None  # past year 9999 DuckDB hands back text: no date literal the guard reads
        if folded is None:
            assert engine is None, expression
        else:
            assert engine is not None and folded == engine.isoformat(), expression


def test_an_interval_first_is_folded_too_and_a_timestamp_or_a_column_is_not():
    assert _folded("period >= INTERVAL 1 MONTH + DATE '2025-01-31'") == "2025-02-28"
    assert _folded("period >= TIMESTAMP '2025-01-31 00:00' + INTERVAL 1 MONTH") is None
    assert _folded("period >= period + INTERVAL 1 MONTH") is None
    assert _folded("period >= DATE '2025-01-31' + INTERVAL 90 MINUTE") is None
