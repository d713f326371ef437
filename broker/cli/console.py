"""``dsbroker console``: the web console, served on this machine for the person whose profile it uses."""

from __future__ import annotations

import click
from click.core import ParameterSource

from broker.cli.common import PROFILE_META, client_options, client_tls, reporting_errors
from broker.cli.i18n import _
from broker.cli.translated import TranslatedCommand


@click.command(cls=TranslatedCommand)
@client_options
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="port on 127.0.0.1 to serve the console on (0: a free one)")
@click.option("--pinned-key", "pinned_keys", multiple=True, envvar="DSBROKER_AUDIT_KEY",
              type=click.Path(exists=True, dir_okay=False),
              help="auditor: a broker's log key as you pinned it, for the verify page (repeatable) "
                   "[env DSBROKER_AUDIT_KEY]")
@click.option("--ledger", "ledgers", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="auditor: a sandbox's execution ledger, for the reconcile status (repeatable)")
@click.option("--witness-key", "witness_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="auditor: a sandbox's witness public key, for reconcile (repeatable)")
@click.option("--key-id", envvar="DSBROKER_SIGNING_KEY_ID", default="",
              help="reviewer or owner: the id of your signing key in the owner's trust file, filled into the "
                   "approval form [env DSBROKER_SIGNING_KEY_ID]")
@click.option("--by", "signer", envvar="DSBROKER_SIGNER", default="",
              help="reviewer or owner: your organisation as the trust file names it (default: the department "
                   "in your token) [env DSBROKER_SIGNER]")
@reporting_errors
def console(broker, token, ca, cert, key, plaintext, port, pinned_keys, ledgers, witness_keys, key_id,
            signer) -> None:
    """Serve the web console on 127.0.0.1 for you alone: every page calls the broker with your profile's
    certificate and token, and keeps no data. Open the sign-in link it prints (usable once)."""
    import socket

    import uvicorn

    from broker.cli.timezones import display_zone
    from broker.console.app import console_app
    from broker.console.connection import Connection
    from broker.console.pages import ConsoleSettings

    ctx = click.get_current_context()
    profile, profile_name = ctx.meta.get(PROFILE_META), ctx.params.get("profile") or ""
    fresh = ctx.get_parameter_source("token") in (None, ParameterSource.DEFAULT) and profile is not None \
        and bool(profile.token_command)
    connection = Connection(broker, client_tls(ca, cert, key, plaintext),
                            (lambda: profile.fresh_token(profile_name)) if fresh else (lambda: token),
                            profile=profile_name)
    settings = ConsoleSettings(connection, display_zone(), pinned_keys=tuple(pinned_keys), ledgers=tuple(ledgers),
                               witness_keys=tuple(witness_keys), signing_key_id=key_id, signer=signer)
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind(("127.0.0.1", port))
    bound = listening.getsockname()[1]
    app = console_app(settings, port=bound)
    secret = app.sessions.login_secret
    click.echo(_("dsbroker console: open {url}").format(url=f"http://127.0.0.1:{bound}/login?secret={secret}"))
    click.echo(_("(the link works once; stop the console with Ctrl-C)"), err=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    server.run(sockets=[listening])
