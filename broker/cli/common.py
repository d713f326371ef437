"""What every client command shares: how to reach the broker, and errors as one clear line."""

from __future__ import annotations

import functools

import click

from dsbroker.errors import DsbrokerError


def client_options(command):
    """Where the broker is and how to reach it, on every client command (each also read from the environment)."""
    options = [
        click.option("--broker", envvar="DSBROKER_BROKER", default="127.0.0.1:50051", show_default=True,
                     help="broker address HOST:PORT [env DSBROKER_BROKER]"),
        click.option("--token", envvar="DSBROKER_TOKEN", help="bearer token (a JWT) [env DSBROKER_TOKEN]"),
        click.option("--ca", envvar="DSBROKER_CA", type=click.Path(dir_okay=False),
                     help="CA certificate that issued the broker's certificate [env DSBROKER_CA]"),
        click.option("--cert", envvar="DSBROKER_CERT", type=click.Path(dir_okay=False),
                     help="client certificate for mutual TLS [env DSBROKER_CERT]"),
        click.option("--key", envvar="DSBROKER_KEY", type=click.Path(dir_okay=False),
                     help="private key of --cert [env DSBROKER_KEY]"),
        click.option("--plaintext", envvar="DSBROKER_PLAINTEXT", is_flag=True,
                     help="no TLS: a loopback development broker only [env DSBROKER_PLAINTEXT]"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def client_tls(ca, cert, key, plaintext):
    """The ClientTls the client options describe, or None for --plaintext."""
    from dsbroker.errors import ConfigError
    from dsbroker.identity.tls import ClientTls

    if plaintext:
        if ca or cert or key:
            raise ConfigError("--plaintext and --ca/--cert/--key exclude each other")
        return None
    if not ca:
        raise ConfigError("pass --ca (and --cert/--key for mutual TLS), or --plaintext for a loopback "
                          "development broker")
    return ClientTls(ca, cert or "", key or "")


def reporting_errors(command):
    """Turn DsbrokerError into one clear line and a non-zero exit, never a traceback."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from broker.cli.output import fail

        try:
            return command(*args, **kwargs)
        except DsbrokerError as error:
            fail(error, as_json=kwargs.get("as_json", False))
    return wrapper
