"""What every client command shares: how to reach the broker (flags, environment, profile), and errors as
one clear line with the exit code of their kind."""

from __future__ import annotations

import functools

import click
from click.core import ParameterSource

from broker.cli.i18n import _
from dsbroker.errors import DsbrokerError

DEFAULT_BROKER = "127.0.0.1:50051"
CLIENT_SETTINGS = ("broker", "token", "ca", "cert", "key", "plaintext")
# Where a command's chosen profile is kept for the rest of the command (its time zone, for one).
PROFILE_META = "dsbroker.profile"


def client_options(command):
    """Where the broker is and how to reach it, on every client command.

    Each setting comes from its flag, else its environment variable, else the profile (``--profile``, else
    ``$DSBROKER_PROFILE``, else the current profile), else its default; a profile's token command runs only
    when neither ``--token`` nor ``$DSBROKER_TOKEN`` gives a token."""
    @functools.wraps(command)
    def resolved(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            # A command reading a log file directly (audit --log) calls no broker: no token command is run.
            kwargs.update(resolve_client_settings(ctx, kwargs.pop("profile"), {k: kwargs[k] for k in CLIENT_SETTINGS},
                                                  needs_token=not kwargs.get("log_location")))
        except DsbrokerError as error:
            from broker.cli.output import fail

            fail(error, as_json=kwargs.get("as_json", False))
        return command(*args, **kwargs)

    options = [
        click.option("--profile", envvar="DSBROKER_PROFILE",
                     help="take the settings not given here from this profile (default: the current one; see "
                          "'dsbroker profile') [env DSBROKER_PROFILE]"),
        click.option("--broker", envvar="DSBROKER_BROKER",
                     help=f"broker address HOST:PORT [env DSBROKER_BROKER; default: {DEFAULT_BROKER}]"),
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
        resolved = option(resolved)
    return resolved


def resolve_client_settings(ctx: click.Context, profile_name: str | None, given: dict, *,
                            needs_token: bool = True) -> dict:
    """The client settings after precedence: flag > environment > profile > default."""
    from broker.cli.profiles import Profiles

    name, profile = Profiles.load().chosen(profile_name)
    ctx.meta[PROFILE_META] = profile
    settings = dict(given)
    for setting in CLIENT_SETTINGS:
        if ctx.get_parameter_source(setting) not in (None, ParameterSource.DEFAULT):
            continue  # a flag or the environment gave it
        if setting == "token":
            settings["token"] = profile.fresh_token(name) if profile is not None and needs_token else None
        elif profile is not None and getattr(profile, setting):
            settings[setting] = getattr(profile, setting)
    settings["broker"] = settings["broker"] or DEFAULT_BROKER
    settings["token"] = settings["token"] or None
    return settings


def client_tls(ca, cert, key, plaintext):
    """The ClientTls the client options describe, or None for --plaintext."""
    from dsbroker.errors import ConfigError
    from dsbroker.identity.tls import ClientTls

    if plaintext:
        if ca or cert or key:
            raise ConfigError(_("--plaintext and --ca/--cert/--key exclude each other"))
        return None
    if not ca:
        raise ConfigError(_("pass --ca (and --cert/--key for mutual TLS), or --plaintext for a loopback "
                            "development broker"))
    return ClientTls(ca, cert or "", key or "")


def reporting_errors(command):
    """Turn DsbrokerError into one clear line and the exit code of its kind, never a traceback."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from broker.cli.output import fail

        try:
            return command(*args, **kwargs)
        except DsbrokerError as error:
            fail(error, as_json=kwargs.get("as_json", False))
    return wrapper
