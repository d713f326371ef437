"""``dsbroker demo``: the embedded walk-through."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from broker.cli.translated import TranslatedCommand

@click.command(cls=TranslatedCommand)
@click.option("--cache-dir", default=".cache/demo", show_default=True, type=click.Path(file_okay=False),
              help="where the demo data and state live")
@click.option("--taxpayers", default=20_000, show_default=True, help="taxpayers in the demo data")
@click.option("--engine", type=click.Choice(["duckdb", "postgres", "spark"]), default="duckdb", show_default=True,
              help="where the sandboxes serve the data from: DuckDB files, databases made on a PostgreSQL server, or "
                   "Parquet files each sandbox's own local Spark session reads in place")
@click.option("--postgres-dsn", envvar="DSBROKER_DEMO_POSTGRES", default="postgresql://postgres@127.0.0.1:5432/postgres",
              show_default=True, help="with --engine postgres: the server, as a role that may create databases and "
                                      "roles (the demo makes dsbroker_demo_* databases afresh, and the role "
                                      "dsbroker_demo_sandbox) [env DSBROKER_DEMO_POSTGRES]")
def demo(cache_dir, taxpayers, engine, postgres_dsn) -> None:
    """Walk the flow: data, sandbox, broker, an answered query, a refused one, the access log."""
    from broker.dev.demo import run_demo

    sys.exit(run_demo(Path(cache_dir), taxpayers=taxpayers, engine=engine, postgres_dsn=postgres_dsn))
