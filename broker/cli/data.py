"""``dsbroker data make``: a DuckDB file of synthetic tax records for the demo and the tests."""

from __future__ import annotations

import json

import click

@click.group()
def data() -> None:
    """Demo data."""


@data.command("make")
@click.option("--out", default=".cache/demo/demo-tax.duckdb", show_default=True, type=click.Path(dir_okay=False))
@click.option("--taxpayers", default=20_000, show_default=True, help="number of taxpayers")
@click.option("--months", default=24, show_default=True, help="months of declarations")
@click.option("--seed", default=20261121, show_default=True, help="random seed")
def data_make(out, taxpayers, months, seed) -> None:
    """Write a DuckDB file of synthetic (realistic, not real) tax records."""
    from sandbox.demo.data import make_demo_data

    counts = make_demo_data(out, taxpayers=taxpayers, months=months, seed=seed,
                            progress=lambda message: click.echo(message, err=True))
    click.echo(json.dumps(counts))
