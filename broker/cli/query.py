"""``dsbroker query``: one aggregate query under a grant, its released cells printed (or explained)."""

from __future__ import annotations

import sys

import click

from broker.cli.common import client_options, client_tls, reporting_errors

@click.command()
@client_options
@click.option("--grant", required=True, help="grant (policy) id to query under")
@click.option("--sql", required=True, help="one SELECT statement; '-' reads it from standard input")
@click.option("--timeout", default=60.0, show_default=True, help="deadline in seconds (the query's time limit)")
@click.option("--explain", is_flag=True,
              help="show the SQL that would run and what each guard rule did, without running it (still logged)")
@click.option("--encrypted", is_flag=True,
              help="have the cells encrypted under your key and decrypt them here: the broker and the wire see "
                   "only ciphertexts (the grant must list results: encrypted)")
@click.option("--encryption-key", type=click.Path(dir_okay=False), envvar="DSBROKER_ENCRYPTION_KEY",
              help="your encryption key, made on first use; keep it secret (its public half is FILE.pub) "
                   "[default: $XDG_CONFIG_HOME or ~/.config, then dsbroker/encryption-key.bfv]")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@reporting_errors
def query(broker, token, ca, cert, key, plaintext, grant, sql, timeout, explain, encrypted, encryption_key,
          as_json) -> None:
    """Run one aggregate query under a grant and print the released cells."""
    from broker.cli.output import print_explanation, print_result
    from broker.client.sdk import BrokerClient

    if sql == "-":
        sql = sys.stdin.read()
    if encryption_key and not encrypted:
        raise click.UsageError("--encryption-key is for --encrypted queries")
    with BrokerClient(broker, token=token, tls=client_tls(ca, cert, key, plaintext), timeout=timeout) as client:
        if explain:
            print_explanation(client.explain(grant, sql, encrypted=encrypted), as_json=as_json)
        else:
            keys = _encryption_key(encryption_key) if encrypted else None
            print_result(client.query(grant, sql, encryption_key=keys), as_json=as_json)


def _encryption_key(path: str | None):
    """The requester's encryption key at ``path`` (or the default place), made and announced if new."""
    from broker.client.encryption_key import DEFAULT_PATH, EncryptionKey

    key, made = EncryptionKey.load_or_create(path or DEFAULT_PATH)
    if made:
        click.echo(f"made a new encryption key {path or DEFAULT_PATH} (key id {key.key_id}); keep it secret: only it "
                   "decrypts your encrypted results", err=True)
    return key
