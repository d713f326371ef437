"""``dsbroker serve`` and ``dsbroker sandbox serve``: run the broker, or a sandbox beside the owner's data."""

from __future__ import annotations

from pathlib import Path

import click

from broker.cli.common import reporting_errors
from broker.settings import BrokerSettings
from dsbroker.settings import load_settings
from sandbox.settings import SandboxSettings

@click.command()
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="broker TOML file")
@click.option("--listen", help="HOST:PORT to serve on (port 0 picks a free port)")
@click.option("--policies", type=click.Path(file_okay=False), help="directory of policy YAML files")
@click.option("--sandbox", help="sandbox address HOST:PORT")
@click.option("--access-log", help="SQLite file of the access log")
@click.option("--port-file", type=click.Path(dir_okay=False), help="write the bound port here once serving")
@reporting_errors
def serve(config, listen, policies, sandbox, access_log, port_file) -> None:
    """Run the broker."""
    from broker.server import start_broker

    settings = load_settings(BrokerSettings, config, listen=listen, policies=policies, sandbox=sandbox,
                             access_log=access_log)
    _serve(start_broker(settings), port_file)


@click.group("sandbox")
def sandbox_group() -> None:
    """The data owner's side."""


@sandbox_group.command("serve")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="sandbox TOML file")
@click.option("--listen", help="HOST:PORT to serve on (port 0 picks a free port)")
@click.option("--data", type=click.Path(dir_okay=False), help="DuckDB data file (opened read-only)")
@click.option("--port-file", type=click.Path(dir_okay=False), help="write the bound port here once serving")
@reporting_errors
def sandbox_serve(config, listen, data, port_file) -> None:
    """Run a sandbox beside the owner's data."""
    from sandbox.server import start_sandbox

    _serve(start_sandbox(load_settings(SandboxSettings, config, listen=listen, data=data)), port_file)


def _serve(running, port_file: str | None) -> None:
    if port_file:
        Path(port_file).write_text(str(running.port))
    click.echo(f"serving on port {running.port}; stop with Ctrl-C or SIGTERM", err=True)
    running.wait_for_signal()
