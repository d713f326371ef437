"""What the sandbox needs of an engine: the tables and columns it serves, and queries run with a deadline and a
row cap. The engines are DuckDB (:mod:`sandbox.engine.duckdb_engine`, the default) and the owner's PostgreSQL
(:mod:`sandbox.engine.postgres_engine`); :mod:`sandbox.engine.configured` opens the one the settings name. Each
implements :class:`Engine` and checks its own lockdown on every connection before it serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class EngineLimits:
    """Resource limits applied to the engine at start-up."""

    memory_limit: str = "2GB"
    threads: int = 2
    max_execution_ms: int = 120_000
    pool_size: int = 4


@dataclass(frozen=True)
class EngineResult:
    """Rows of one query, with column names and engine type names."""

    names: list[str]
    types: list[str]
    rows: list[tuple]
    truncated: bool
    micros: int


class Engine(Protocol):
    """An engine the sandbox runs guarded SQL on. Its messages are logged, never returned: they can quote data."""

    dialect: str  # sqlglot's name of the engine's SQL dialect
    name: str  # what names the data in the sandbox's id and logs: a file's stem, a database's name

    def data_version(self) -> str:
        """What identifies the data served as it was when the engine opened, so that an answer stored for
        other data (a noise policy's) is not returned for it."""
        ...

    def data_stamp(self) -> str | None:
        """What the data is now, where the engine can vouch for it: the same stamp twice means the data did not
        change between (so what was read of it may be kept); None where it can change at any moment."""
        ...

    def tables(self) -> set[str]:
        """The tables served, as "schema.table"."""
        ...

    def columns(self, table: str) -> list[tuple[str, str]]:
        """The (name, type) of each column of ``table``, in table order."""
        ...

    def execute(self, sql: str, *, timeout_s: float, max_rows: int) -> EngineResult:
        """Run ``sql``, stopped after ``timeout_s`` (QUERY_TIMEOUT); at most ``max_rows`` rows, marked truncated."""
        ...

    def close(self) -> None:
        """Release every connection."""
        ...
