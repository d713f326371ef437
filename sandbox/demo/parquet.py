"""The demo data as Parquet, for the Spark engine: each served table of a DuckDB file written as one file.

Only the served tables are written (the demo's ``tax.taxpayers``, which holds company names, is not), each
to ``<directory>/<schema>.<table>.parquet`` by DuckDB's own ``COPY ... (FORMAT parquet)``, with the column
types it has (BIGINT money in fen stays BIGINT). :func:`spark_tables_toml` is the ``spark_tables`` setting
that serves them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import duckdb

from dsbroker.errors import ConfigError

_TABLE = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")


def export_parquet(source: str | Path, directory: str | Path, *, served: Iterable[str]) -> dict[str, str]:
    """Write each table of ``served`` ("schema.table") from the DuckDB file ``source`` into ``directory``;
    returns table -> the Parquet file written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    with duckdb.connect(str(source), read_only=True) as connection:
        for table in sorted(set(served)):
            if not _TABLE.match(table):
                raise ConfigError(f"table name {table!r} is not a plain schema.table")
            path = (directory / f"{table}.parquet").resolve()
            # The table name is checked above; the path goes in as a string literal DuckDB cannot misread.
            quoted = str(path).replace("'", "''")
            connection.execute(f"COPY {table} TO '{quoted}' (FORMAT parquet)")
            written[table] = str(path)
    return written


def spark_tables_toml(tables: dict[str, str]) -> str:
    """The ``[spark_tables]`` table of a sandbox config that serves ``tables``."""
    lines = ["[spark_tables]"] + [f'"{table}" = "{path}"' for table, path in sorted(tables.items())]
    return "\n".join(lines) + "\n"
