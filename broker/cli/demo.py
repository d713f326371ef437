"""``dsbroker demo``: the embedded walk-through."""

from __future__ import annotations

import sys
from pathlib import Path

import click

@click.command()
@click.option("--cache-dir", default=".cache/demo", show_default=True, type=click.Path(file_okay=False),
              help="where the demo data and state live")
@click.option("--taxpayers", default=20_000, show_default=True, help="taxpayers in the demo data")
def demo(cache_dir, taxpayers) -> None:
    """Walk the flow: data, sandbox, broker, an answered query, a refused one, the access log."""
    from broker.dev.demo import run_demo

    sys.exit(run_demo(Path(cache_dir), taxpayers=taxpayers))
