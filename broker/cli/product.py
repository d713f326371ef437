"""``dsbroker product``: the owner's data products of a grant, listed, shown and run by name with parameters."""

from __future__ import annotations

import json

import click

from broker.cli.common import client_options, client_tls, reporting_errors
from broker.cli.i18n import _
from broker.cli.output import chosen_format, output_options, unit_option
from broker.cli.translated import TranslatedCommand, TranslatedGroup


@click.group(cls=TranslatedGroup)
def product() -> None:
    """The data products of a grant: standing queries the owner designed and signed, run by name."""


_GRANT = click.option("--grant", required=True, envvar="DSBROKER_GRANT",
                      help="grant (policy) id whose products these are [env DSBROKER_GRANT]")
_JSON = click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")


@product.command("list", cls=TranslatedCommand)
@client_options
@_GRANT
@_JSON
@reporting_errors
def list_products(broker, token, ca, cert, key, plaintext, grant, as_json) -> None:
    """List the grant's products: name, version and title in Chinese and English."""
    products = _products(broker, token, ca, cert, key, plaintext, grant)
    if as_json:
        click.echo(json.dumps([_described(p) for p in products.values()], ensure_ascii=False, indent=2))
        return
    for item in products.values():
        click.echo(f"{item.name}  v{item.version}  {item.title['zh']} / {item.title['en']}")


@product.command("show", cls=TranslatedCommand)
@client_options
@_GRANT
@click.argument("name")
@_JSON
@reporting_errors
def show_product(broker, token, ca, cert, key, plaintext, grant, name, as_json) -> None:
    """Show one product: its descriptions, parameters with their types and bounds, and its signed query."""
    from dsbroker.policy.product_binding import granted_product
    from dsbroker.policy.model import parse_policy
    from broker.client.sdk import BrokerClient

    with BrokerClient(broker, token=token, tls=client_tls(ca, cert, key, plaintext)) as client:
        item = granted_product(parse_policy(client.get_policy(grant).document, source=grant), name)
    described = _described(item)
    if as_json:
        click.echo(json.dumps(described, ensure_ascii=False, indent=2))
        return
    click.echo(f"{item.name}  version {item.version}\n  {item.title['zh']}\n  {item.title['en']}")
    for language in ("zh", "en"):
        if language in item.description:
            click.echo(f"  {item.description[language]}")
    click.echo(_("parameters:"))
    for parameter in described["parameters"]:
        bounds = (f"{parameter['min']} .. {parameter['max']}" if "min" in parameter
                  else (_("one of {values}") if parameter["type"] == "text" else _("up to {count} of {values}"))
                  .format(count=parameter["max_items"], values=", ".join(parameter["values"])))
        click.echo(f"  {parameter['name']} ({parameter['type']}): {bounds}"
                   + (f"  -- {parameter['description']}" if parameter["description"] else ""))
    click.echo(_("query (as signed):"))
    click.echo("  " + item.sql.rstrip().replace("\n", "\n  "))


@product.command("run", cls=TranslatedCommand)
@client_options
@_GRANT
@click.argument("name")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="a parameter's value (a date YYYY-MM-DD, a whole number, or a list's members separated by "
                   "commas, or the option repeated); repeat for each parameter")
@click.option("--version", default=0, show_default=True, help="the product version you expect (0: the grant's)")
@click.option("--timeout", default=60.0, show_default=True, help="deadline in seconds (the query's time limit)")
@click.option("--explain", is_flag=True,
              help="show the SQL that would run and what each guard rule did, without running it (still logged)")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table (as --output json)")
@output_options
@unit_option
@reporting_errors
def run_product(broker, token, ca, cert, key, plaintext, grant, name, params, version, timeout, explain, as_json,
                output, out, unit) -> None:
    """Run one of the grant's products and print the released cells, as `dsbroker query` does."""
    from broker.cli.output import print_explanation, print_result
    from broker.cli.query import money_of
    from broker.client.sdk import BrokerClient
    from dsbroker.policy.product_binding import parse_parameters

    try:
        values = parse_parameters(params)
    except ValueError:
        raise click.UsageError(_("each --param is NAME=VALUE")) from None
    if output == "xlsx" and not out:
        raise click.UsageError(_("--output xlsx writes a file: pass --out FILE.xlsx"))
    with BrokerClient(broker, token=token, tls=client_tls(ca, cert, key, plaintext), timeout=timeout) as client:
        if explain:
            print_explanation(client.explain_product(grant, name, values, version=version), as_json=as_json)
            return
        result = client.run_product(grant, name, values, version=version)
        fmt = chosen_format(as_json, output)
        # Money columns by the product's signed query, as a query's by its SQL (the catalog's units).
        money = set() if fmt == "json" else money_of(client, client.products(grant)[name].sql)
        print_result(result, fmt=fmt, out=out, unit=unit, money=money)


def _products(broker, token, ca, cert, key, plaintext, grant):
    from broker.client.sdk import BrokerClient

    with BrokerClient(broker, token=token, tls=client_tls(ca, cert, key, plaintext)) as client:
        return client.products(grant)


def _described(item) -> dict:
    """A product as ``--json`` prints it."""
    parameters = []
    for parameter in item.parameters.values():
        entry: dict = {"name": parameter.name, "type": parameter.type, "description": parameter.description}
        if parameter.type in ("date", "integer"):
            entry.update(min=str(parameter.low), max=str(parameter.high))
        else:
            entry.update(values=list(parameter.values), max_items=parameter.max_items)
        parameters.append(entry)
    return {"name": item.name, "version": item.version, "title": item.title, "description": item.description,
            "parameters": parameters, "sql": item.sql}
