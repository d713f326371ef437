"""``dsbroker data make``: synthetic tax records for the demo and the tests, in a DuckDB file or in PostgreSQL."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from broker.cli.common import reporting_errors
from broker.cli.translated import TranslatedGroup

DEFAULT_OUT = ".cache/demo/demo-tax.duckdb"


@click.group(cls=TranslatedGroup)
def data() -> None:
    """Demo data."""


@data.command("make")
@click.option("--out", type=click.Path(dir_okay=False),
              help=f"the DuckDB file to write [default: {DEFAULT_OUT}; with --into or --parquet, a temporary file]")
@click.option("--into", "into", metavar="DSN",
              help="also load the data into this PostgreSQL database (postgres://owner@host/db, as a role that may "
                   "create schemas and roles): schema tax copied with COPY, and the sandbox's read-only role made "
                   "with exactly the grants its lockdown accepts")
@click.option("--parquet", "parquet", type=click.Path(file_okay=False), metavar="DIR",
              help="also write each served table as Parquet into DIR (<schema>.<table>.parquet), for engine = "
                   "\"spark\"; the spark_tables setting that serves them is printed to standard error")
@click.option("--role", default="dsbroker_sandbox", show_default=True,
              help="with --into: the role the sandbox connects as (made LOGIN if missing; set its password yourself)")
@click.option("--replace", is_flag=True, help="with --into: drop an existing schema tax first, with every table in it")
@click.option("--taxpayers", default=20_000, show_default=True, help="number of taxpayers")
@click.option("--months", default=24, show_default=True, help="months of declarations")
@click.option("--seed", default=20261121, show_default=True, help="random seed")
@reporting_errors
def data_make(out, into, parquet, role, replace, taxpayers, months, seed) -> None:
    """Write synthetic (realistic, not real) tax records: a DuckDB file, and with --into the same in PostgreSQL.

    With --into, the sandbox then serves the database in place: engine = "postgres", postgres_dsn naming the
    role (e.g. "host=127.0.0.1 dbname=test user=dsbroker_sandbox") and the demo's datasets, which the role
    may read and no other table (tax.taxpayers, the companies' names, is loaded but never granted). The grants
    made, which an owner runs for its own tables, are printed to standard error. With --parquet, the served
    tables are written as Parquet files for engine = "spark", with the spark_tables setting that serves them.
    """
    from sandbox.demo.data import make_demo_data

    def progress(message: str) -> None:
        click.echo(message, err=True)

    with tempfile.TemporaryDirectory(prefix="dsbroker-data-") as scratch:
        path = out or (str(Path(scratch) / "demo-tax.duckdb") if into or parquet else DEFAULT_OUT)
        counts = make_demo_data(path, taxpayers=taxpayers, months=months, seed=seed, progress=progress)
        if parquet:
            from sandbox.demo.data import DEMO_DATASETS
            from sandbox.demo.parquet import export_parquet, spark_tables_toml

            progress(spark_tables_toml(export_parquet(path, parquet, served=DEMO_DATASETS)).rstrip())
        if into:
            counts = _load(path, into, role=role, replace=replace, progress=progress)
    click.echo(json.dumps(counts))


def _load(path: str, dsn: str, *, role: str, replace: bool, progress) -> dict[str, int]:
    """Load the DuckDB file ``path`` into the PostgreSQL database ``dsn`` and make the sandbox's ``role``."""
    import psycopg

    from dsbroker.errors import ConfigError
    from sandbox.demo.data import DEMO_DATASETS
    from sandbox.demo.postgres import load_into_postgres, role_statements
    from sandbox.engine.configured import described

    try:
        owner = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as error:
        # The driver's message names host and role, never the password; the DSN itself is not echoed.
        raise ConfigError(f"cannot connect to PostgreSQL ({described(dsn)}): {type(error).__name__}") from None
    with owner:
        try:
            counts = load_into_postgres(path, owner, served=DEMO_DATASETS, role=role, replace=replace,
                                        progress=progress)
        except psycopg.Error as error:  # the owner's own server about the owner's own statements: no data
            raise ConfigError(f"loading into PostgreSQL failed: {error.diag.message_primary or type(error).__name__}"
                              ) from None
        progress(f"made role {role} (LOGIN) with:")
        for statement in role_statements(role, DEMO_DATASETS, database=owner.info.dbname):
            progress(f"  {statement};")
    return counts
