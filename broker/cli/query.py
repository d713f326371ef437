"""``dsbroker query``: one aggregate query under a grant, its released cells printed (or explained)."""

from __future__ import annotations

import sys

import click

from broker.cli.common import client_options, client_tls, reporting_errors
from broker.cli.i18n import _
from broker.cli.output import chosen_format, output_options, unit_option
from broker.cli.translated import TranslatedCommand


@click.command(cls=TranslatedCommand)
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
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table (as --output json)")
@output_options
@unit_option
@reporting_errors
def query(broker, token, ca, cert, key, plaintext, grant, sql, timeout, explain, encrypted, encryption_key,
          as_json, output, out, unit) -> None:
    """Run one aggregate query under a grant and print the released cells (or write them to a file)."""
    from broker.cli.output import print_explanation, print_result
    from broker.client.sdk import BrokerClient

    if sql == "-":
        sql = sys.stdin.read()
    if encryption_key and not encrypted:
        raise click.UsageError(_("--encryption-key is for --encrypted queries"))
    if output == "xlsx" and not out:
        raise click.UsageError(_("--output xlsx writes a file: pass --out FILE.xlsx"))
    with BrokerClient(broker, token=token, tls=client_tls(ca, cert, key, plaintext), timeout=timeout) as client:
        if explain:
            print_explanation(client.explain(grant, sql, encrypted=encrypted), as_json=as_json)
            return
        keys = _encryption_key(encryption_key) if encrypted else None
        result = client.query(grant, sql, encryption_key=keys)
        fmt = chosen_format(as_json, output)
        print_result(result, fmt=fmt, out=out, unit=unit, money=set() if fmt == "json" else money_of(client, sql))


def money_of(client, sql: str) -> set[int]:
    """The select list's money columns of ``sql``, by the units the owners' catalog gives its tables' columns."""
    from broker.cli.money import money_columns
    from dsbroker.errors import DsbrokerError

    def units_of(table: str) -> dict[str, str]:
        try:
            return {c.name: c.unit for c in client.dataset(table).columns if c.unit}
        except DsbrokerError:  # a lookup table, or a CTE's name: not described, so not money
            return {}
    return money_columns(sql, units_of)


def _encryption_key(path: str | None):
    """The requester's encryption key at ``path`` (or the default place), made and announced if new."""
    from broker.client.encryption_key import DEFAULT_PATH, EncryptionKey

    key, made = EncryptionKey.load_or_create(path or DEFAULT_PATH)
    if made:
        click.echo(_("made a new encryption key {path} (key id {key_id}); keep it secret: only it decrypts your "
                     "encrypted results").format(path=path or DEFAULT_PATH, key_id=key.key_id), err=True)
    return key
