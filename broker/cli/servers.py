"""``dsbroker serve`` and ``dsbroker sandbox serve``: run the broker, or a sandbox beside the owner's data."""

from __future__ import annotations

from pathlib import Path

import click

from broker.cli.common import reporting_errors
from broker.cli.translated import TranslatedCommand, TranslatedGroup
from broker.settings import BrokerSettings
from dsbroker.settings import load_settings
from sandbox.settings import SandboxSettings

METRICS_HELP = "HOST:PORT to serve Prometheus metrics on (HTTP); default: none"
HEALTH_HELP = "loopback HOST:PORT to serve plaintext gRPC health on, for probes without a certificate; default: none"


@click.command(cls=TranslatedCommand)
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="broker TOML file")
@click.option("--listen", help="HOST:PORT to serve on (port 0 picks a free port)")
@click.option("--policies", type=click.Path(file_okay=False), help="directory of policy YAML files")
@click.option("--sandbox", help="sandbox address HOST:PORT")
@click.option("--access-log", help="SQLite file of the access log")
@click.option("--metrics-listen", help=METRICS_HELP)
@click.option("--health-listen", help=HEALTH_HELP)
@click.option("--port-file", type=click.Path(dir_okay=False), help="write the bound port here once serving")
@reporting_errors
def serve(config, listen, policies, sandbox, access_log, metrics_listen, health_listen, port_file) -> None:
    """Run the broker."""
    from broker.server import start_broker

    settings = load_settings(BrokerSettings, config, listen=listen, policies=policies, sandbox=sandbox,
                             access_log=access_log, metrics_listen=metrics_listen, health_listen=health_listen)
    _serve(start_broker(settings), port_file)


@click.group(cls=TranslatedGroup, name="sandbox")
def sandbox_group() -> None:
    """The data owner's side."""


ENGINE_HELP = ("the engine the data is in: duckdb (--data FILE), postgres (postgres_dsn, the sandbox's read-only role) "
               "or spark (spark_tables, Parquet, on spark_master or the Spark Connect server spark_remote)")
DATA_HELP = "DuckDB data file (opened read-only; engine duckdb)"
DSN_HELP = ("the owner's PostgreSQL as the sandbox's read-only role (libpq string or postgresql:// URI; engine "
            "postgres); keep its password in PGPASSFILE or ~/.pgpass, not on a command line")


@sandbox_group.command("serve")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="sandbox TOML file")
@click.option("--listen", help="HOST:PORT to serve on (port 0 picks a free port)")
@click.option("--engine", type=click.Choice(["duckdb", "postgres", "spark"]), help=ENGINE_HELP)
@click.option("--data", type=click.Path(dir_okay=False), help=DATA_HELP)
@click.option("--postgres-dsn", help=DSN_HELP)
@click.option("--metrics-listen", help=METRICS_HELP)
@click.option("--health-listen", help=HEALTH_HELP)
@click.option("--port-file", type=click.Path(dir_okay=False), help="write the bound port here once serving")
@reporting_errors
def sandbox_serve(config, listen, engine, data, postgres_dsn, metrics_listen, health_listen, port_file) -> None:
    """Run a sandbox beside the owner's data: a DuckDB file, the owner's PostgreSQL database, or its Parquet files.

    On PostgreSQL the sandbox connects as the role the owner made for it and starts only when that role can
    read the served datasets and nothing else, with the session settings of the lockdown (README: Serving
    your own database); otherwise it stops with ENGINE_NOT_LOCKED_DOWN naming each problem. Its ledgers live
    in state_dir, which engines postgres and spark require. On Spark the sandbox registers the Parquet tables of
    spark_tables, and only those, in a locked-down session on spark_master, and checks it the same way; or, with
    spark_remote, in a session on that Spark Connect server, whose settings it verifies before serving.
    """
    from sandbox.server import start_sandbox

    _serve(start_sandbox(load_settings(SandboxSettings, config, listen=listen, engine=engine, data=data,
                                       postgres_dsn=postgres_dsn, metrics_listen=metrics_listen,
                                       health_listen=health_listen)), port_file)


def _serve(running, port_file: str | None) -> None:
    from dsbroker.garbage_collection import tune_for_serving

    tune_for_serving()  # once started: what start-up built is frozen out of every later collection
    if port_file:
        Path(port_file).write_text(str(running.port))
    click.echo(f"serving on port {running.port}; stop with Ctrl-C or SIGTERM", err=True)
    running.wait_for_signal()


@sandbox_group.command("released")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="sandbox TOML file")
@click.option("--data", type=click.Path(dir_okay=False), help=DATA_HELP)
@click.option("--dataset", "datasets", multiple=True, help="a served dataset (repeatable; default: every one)")
@click.option("--min-entities", type=int, help="the threshold k to judge blocks by (default: the catalog's)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@reporting_errors
def sandbox_released(config, data, datasets, min_entities, as_json) -> None:
    """What the exact cells released so far determine, per dataset (the released-cell auditor's ledger)."""
    import json

    from sandbox.audit.summary import released_summary
    from sandbox.catalog import load_catalog
    from sandbox.engine.configured import open_engine, state_path
    from sandbox.ledgers.released_cells import ReleasedCellLedger
    from sandbox.server import catalog_file

    settings = load_settings(SandboxSettings, config, data=data)
    names = list(datasets) or list(settings.datasets)
    path = state_path(settings, settings.released_cells, "released.sqlite")
    engine = open_engine(settings, pool_size=1)
    ledger = ReleasedCellLedger(path)
    try:
        catalog = load_catalog(catalog_file(settings), set(settings.datasets), engine.columns,
                               engine_dialect=engine.dialect)
        summaries = []
        for name in names:
            described = catalog.datasets.get(name)
            if described is None or not described.entity_column:
                if not datasets:
                    continue  # a lookup table (no entity): nothing of it is audited
                raise click.UsageError(f"the catalog names no entity column for {name!r}")
            summaries.append(released_summary(engine, ledger, name, entity=described.entity_column,
                                              min_entities=min_entities or described.min_entities))
    finally:
        ledger.close()
        engine.close()
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in summaries], ensure_ascii=False))
        return
    for s in summaries:
        click.echo(f"{s.dataset}: {s.cells:,} cells released from {s.coverages:,} coverages tell {s.blocks:,} blocks "
                   f"apart and give {s.determined_dimension:,} independent totals of them; {s.determined_blocks:,} "
                   f"blocks' own totals are determined; {s.failing_blocks:,} blocks fail the cell rules alone and "
                   f"{s.failing_determined:,} of those are determined ({s.seconds:.1f} s)")
