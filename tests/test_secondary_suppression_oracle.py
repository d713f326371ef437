"""Secondary suppression against an oracle that shares no code with it: on random small ROLLUP tables
(two or three keys, taxpayers in several cells, zero payers, refunds that cancel payments), no sum that
one answer gives of withheld cells is made up by some but fewer than k taxpayers.

For each released cell d, the oracle opens every withheld cell below it (d less every released cell
reachable through withheld ones) down to the finest cells, and counts the taxpayers whose net amount
in what remains is not zero, from the raw declarations; likewise for the count of rows. After the
checker an attack session wrote (round 7); combinations of two released cells (which refunds can make
one taxpayer's) are the released-cell auditor's work, not this one's.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict

import duckdb
import pytest

from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.disclosure.release import run
from tests.conftest import declarations_file
from tests.neighbours import guarded_for


@pytest.fixture(scope="module")
def policy(totals_policy):
    """The shipped grant without a dominance rule (a test-only variant): the dominance rule refuses totals
    (ROLLUP) outright, and the oracle checks secondary suppression, the protection of totals."""
    return totals_policy


K = 10
MONTHS = [dt.date(2025, month, 1) for month in range(1, 5)]


def declarations(rng: random.Random, keys: int) -> dict[tuple, int]:
    """(taxpayer, street, size, month) -> VAT: streets of few, middling or many taxpayers, some shared
    between cells, a third paying nothing, and groups that pay in one cell and are refunded in another."""
    streets, sizes = ["A", "B", "C", "D"][:rng.choice([2, 3, 3, 4])], ["l", "s"] if keys == 3 else ["l"]
    months = MONTHS[:rng.choice([2, 3, 3])]
    fresh = iter(range(1_000_000))
    shared = [f"S{i}" for i in range(12)]
    found: dict[tuple, int] = {}
    for street in streets:
        kind = rng.choice(["small", "middling", "large"])
        for size in sizes:
            if rng.random() < 0.25:
                continue
            for month in months:
                if rng.random() < 0.2:
                    continue
                many = {"small": [1, 1, 2, 3], "middling": [1, 9, 10, 11, 12], "large": [10, 12, 20]}[kind]
                for _ in range(rng.choice(many)):
                    taxpayer = rng.choice(shared) if rng.random() < 0.3 else f"E{next(fresh)}"
                    found[(taxpayer, street, size, month)] = 0 if rng.random() < 0.35 else rng.randint(1, 1000)
    finest = [(street, size, month) for street in streets for size in sizes for month in months]
    for _ in range(rng.choice([0, 0, 1, 2])):  # a group paid in one cell and refunded in another
        paid, refunded = rng.sample(finest, 2)
        for _ in range(rng.choice([3, 8, 9, 10])):
            taxpayer = f"R{next(fresh)}"
            found[(taxpayer, *paid)], found[(taxpayer, *refunded)] = 5, -5
    return found


def opened_sums(released, keys: int, declared: dict[tuple, int]) -> list[tuple]:
    """Per released cell and column (count, sum): the finest cells reachable from it through withheld
    cells, and the taxpayers whose net amount (or rows) in them is not zero."""
    def finest(taxpayer, street, size, month):
        return (street, size, month) if keys == 3 else (street, month)
    amounts, rows = defaultdict(lambda: defaultdict(int)), defaultdict(lambda: defaultdict(int))
    for (taxpayer, street, size, month), amount in declared.items():
        amounts[finest(taxpayer, street, size, month)][taxpayer] += amount
        rows[finest(taxpayer, street, size, month)][taxpayer] += 1
    leaves = set(amounts)
    cells = {leaf[:level] for leaf in leaves for level in range(keys + 1)}
    shown = defaultdict(set)
    for row, marks, spans in zip(released.rows, released.withheld, released.rolled_up, strict=True):
        node = tuple(row[:keys - len(spans)])
        shown[node] = {column for column in (keys, keys + 1) if column not in marks}
    found = []
    for column, source in ((keys, rows), (keys + 1, amounts)):
        visible = {cell for cell in cells if column in shown.get(cell, ())}
        for cell in visible:
            if len(cell) == keys:
                continue
            reached, stack = set(), [cell]
            while stack:
                node = stack.pop()
                for child in {leaf[:len(node) + 1] for leaf in leaves if leaf[:len(node)] == node}:
                    if child in visible:
                        continue
                    (reached.add if len(child) == keys else stack.append)(child)
            if reached:
                net = defaultdict(int)
                for leaf in reached:
                    for taxpayer, value in source[leaf].items():
                        net[taxpayer] += value
                found.append((column, cell, sorted(reached), sorted(t for t, v in net.items() if v)))
    return found


@pytest.mark.parametrize("seed", range(48))
def test_no_sum_of_withheld_cells_one_answer_gives_has_fewer_than_k_contributors(tmp_path, policy, seed):
    rng = random.Random(seed)
    keys = rng.choice([2, 3, 3])
    declared = declarations(rng, keys)
    path = declarations_file(tmp_path / "d.duckdb", [(taxpayer, month, street, 2 if size == "s" else 1, amount)
                                                     for (taxpayer, street, size, month), amount in declared.items()])
    with duckdb.connect(str(path)) as connection:
        connection.execute("UPDATE tax.declarations SET size_class = CASE WHEN revenue = 2 THEN 's' ELSE 'l' END")
    columns = ["street_code", "size_class", "period"] if keys == 3 else ["street_code", "period"]
    sql = (f"SELECT {', '.join(columns)}, COUNT(*) AS c, SUM(vat_paid) AS v FROM tax.declarations "
           f"GROUP BY ROLLUP ({', '.join(columns)})")
    engine = DuckDBEngine(path)
    try:
        released = run(engine, guarded_for(sql, policy, suppression=rng.choice(["mark", "drop"])), timeout_s=30)
    finally:
        engine.close()
    thin = [(column, cell, reached, taxpayers) for column, cell, reached, taxpayers in
            opened_sums(released, keys, declared) if 0 < len(taxpayers) < K]
    assert not thin, thin
