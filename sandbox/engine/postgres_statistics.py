"""The planner statistics a PostgreSQL owner gives the sandbox's plans: ndistinct over the entity and the groups.

Every guarded aggregate first adds up each taxpayer's rows per cell (``GROUP BY <groups>, <entity>``), which the
threshold and the dominance rule need. PostgreSQL estimates that grouping's size as the product of each column's
distinct values, capped by the rows: a taxpayer sits in one street and one industry, but the planner counts
every street for every taxpayer, expects nearly a group per row, and sorts every row where a hash table of the
true groups would do. On the bench's 10.3M declaration rows the guarded plan took 1.2-1.3 times as long as the
caller's plain aggregate; with the statistics below, 0.7 times (README: Serving your own database).

Extended statistics (``CREATE STATISTICS ... (ndistinct)``) tell the planner how many distinct combinations of
the columns there are. Only the table's owner can create them, so the sandbox does not: it looks for them at
start and logs, per dataset without them, the statement the owner runs once (``dsbroker data make --into``
runs it for the demo data). They change plans only, never an answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlglot.expressions as exp

# PostgreSQL's limit on the columns of one statistics object (STATS_MAX_DIMENSIONS).
MAX_COLUMNS = 8
# Statistics objects with ndistinct ('d') on a table, with the names of their columns.
_NDISTINCT = """
    SELECT ARRAY(SELECT a.attname FROM unnest(s.stxkeys) AS k(attnum)
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = s.stxrelid AND a.attnum = k.attnum)
    FROM pg_catalog.pg_statistic_ext s
    WHERE s.stxrelid = %s::regclass AND 'd' = ANY(s.stxkind)
"""


def grouping_columns(entity: str, groups: Iterable[str]) -> list[str]:
    """The columns of a dataset's statistics object: the entity, then its group columns in the catalog's order, as
    many as PostgreSQL takes in one object (the planner uses an object for every subset of its columns)."""
    return [entity, *[column for column in groups if column != entity]][:MAX_COLUMNS]


def grouping_statistics(table: str, entity: str, groups: Iterable[str]) -> str:
    """The statement that gives ``table`` ("schema.table") the ndistinct statistics over ``entity`` and
    ``groups``; an ``ANALYZE`` of the table afterwards fills them in."""
    schema, name = table.split(".", 1)
    columns = ", ".join(_quoted(column) for column in grouping_columns(entity, groups))
    return (f"CREATE STATISTICS IF NOT EXISTS {_quoted(schema)}.{_quoted(f'{name}_dsbroker_cells')} (ndistinct) ON "
            f"{columns} FROM {_quoted(schema)}.{_quoted(name)}")


def _quoted(name: str) -> str:
    """``name`` as PostgreSQL reads it: bare where it can be, quoted otherwise (a column named in capitals, say)."""
    return exp.to_identifier(name).sql(dialect="postgres")


def missing_statistics(connection: Any, wanted: dict[str, tuple[str, list[str]]]) -> dict[str, str]:
    """Per table of ``wanted`` (table -> entity and group columns) that no ndistinct statistics object covers, the
    statement that makes one. Covered: an object holding the entity and every wanted group column it can."""
    missing = {}
    for table, (entity, groups) in sorted(wanted.items()):
        if not [column for column in groups if column != entity]:
            continue  # nothing is grouped beside the entity: the planner's own statistics serve
        needed = set(grouping_columns(entity, groups))
        objects = [set(row[0]) for row in connection.execute(_NDISTINCT, [table])]
        if not any(needed <= columns for columns in objects):
            missing[table] = grouping_statistics(table, entity, groups)
    return missing


def catalog_grouping(catalog: Any) -> dict[str, tuple[str, list[str]]]:
    """Per dataset of ``catalog`` (a :class:`~sandbox.catalog.Catalog`) with an entity, the entity and the columns
    a grant may group by, in the catalog's order."""
    return {name: (dataset.entity_column, [column.name for column in dataset.columns if "group" in column.levels])
            for name, dataset in catalog.datasets.items() if dataset.entity_column}
