"""``dsbroker keys`` and ``dsbroker token``: development keys, and tokens from the development identity provider."""

from __future__ import annotations

from pathlib import Path

import click

from broker.cli.common import reporting_errors
from broker.cli.translated import TranslatedGroup

@click.group(cls=TranslatedGroup)
def keys() -> None:
    """Development keys: certificate authorities, certificates, the identity provider's key."""


@keys.command("init")
@click.option("--dir", "directory", default="keys", show_default=True, type=click.Path(file_okay=False),
              help="where to write the keys")
@click.option("--host", "hosts", multiple=True, help="extra host name or IP for the server certificates (repeatable)")
@click.option("--client", "clients", multiple=True, help="issue a client certificate with this name (repeatable)")
@click.option("--force", is_flag=True, help="replace existing keys")
@reporting_errors
def keys_init(directory, hosts, clients, force) -> None:
    """Create a development platform CA and owner CA, the broker's and sandbox's certificates, client
    certificates, and an identity provider signing key with its JWKS. Private keys are mode 0600.
    For development and tests; production uses the organisations' own CAs and identity provider."""
    from broker.dev.keys import broker_settings, init_keys, sandbox_settings, to_toml

    layout = init_keys(directory, hosts=tuple(hosts), clients=tuple(clients), force=force)
    click.echo(f"keys written to {layout.root}/")
    click.echo(f"\n# broker TOML (add policies, access_log, sandbox):\n{to_toml(broker_settings(layout))}")
    click.echo(f"# sandbox TOML (add data, and datasets: the tables it serves):\n{to_toml(sandbox_settings(layout))}")
    click.echo(f"# issue a token: dsbroker token issue --keys {layout.root} --sub ... --department ... "
               "--district ... --role requester")


@keys.command("client")
@click.argument("name")
@click.option("--dir", "directory", default="keys", show_default=True, type=click.Path(file_okay=False))
@reporting_errors
def keys_client(name, directory) -> None:
    """Issue a client certificate NAME (its CN) from the development platform CA."""
    from broker.dev.keys import KeyLayout, issue_client_certificate

    cert, key = issue_client_certificate(KeyLayout(directory), name)
    click.echo(f"{cert}\n{key}")


@click.group(cls=TranslatedGroup)
def token() -> None:
    """Caller tokens."""


@token.command("issue")
@click.option("--keys", "directory", default="keys", show_default=True, type=click.Path(file_okay=False),
              help="keys directory made by 'dsbroker keys init' (its identity provider key signs)")
@click.option("--sub", required=True, help="the caller (a person or a system)")
@click.option("--department", required=True, help="department id, e.g. xuanwu-fgw")
@click.option("--district", required=True, help="district code, e.g. 320102")
@click.option("--role", "roles", multiple=True, required=True,
              type=click.Choice(["requester", "reviewer", "owner", "auditor"]), help="a role (repeatable)")
@click.option("--ttl", default="8h", show_default=True, help="lifetime: 90s, 15m, 8h, 7d")
@click.option("--bind-cert", type=click.Path(exists=True, dir_okay=False),
              help="bind the token to this client certificate (RFC 8705 cnf x5t#S256)")
@reporting_errors
def token_issue(directory, sub, department, district, roles, ttl, bind_cert) -> None:
    """Print a JWT signed by the development identity provider."""
    from cryptography import x509

    from broker.dev.keys import DEV_AUDIENCE, DEV_ISSUER, IDP_KEY_ID, KeyLayout, load_private_key
    from dsbroker.identity.tls import thumbprint
    from dsbroker.identity.tokens import issue_token, parse_duration

    layout = KeyLayout(directory)
    thumb = thumbprint(x509.load_pem_x509_certificate(Path(bind_cert).read_bytes())) if bind_cert else None
    click.echo(issue_token(load_private_key(layout.idp_key), key_id=IDP_KEY_ID, issuer=DEV_ISSUER,
                           audience=DEV_AUDIENCE, subject=sub, department=department, district=district,
                           roles=roles, ttl=parse_duration(ttl), certificate_thumbprint=thumb))
