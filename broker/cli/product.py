"""``dsbroker product``: the owner's data products of a grant, listed, shown and run by name with parameters."""

from __future__ import annotations

import json

import click

from broker.cli.common import client_options, client_tls, reporting_errors


@click.group()
def product() -> None:
    """The data products of a grant: standing queries the owner designed and signed, run by name."""


_GRANT = click.option("--grant", required=True, envvar="DSBROKER_GRANT",
                      help="grant (policy) id whose products these are [env DSBROKER_GRANT]")
_JSON = click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")


@product.command("list")
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


@product.command("show")
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
    click.echo("parameters:")
    for parameter in described["parameters"]:
        bounds = (f"{parameter['min']} .. {parameter['max']}" if "min" in parameter
                  else ("one of " if parameter["type"] == "text" else f"up to {parameter['max_items']} of ")
                  + ", ".join(parameter["values"]))
        click.echo(f"  {parameter['name']} ({parameter['type']}): {bounds}"
                   + (f"  -- {parameter['description']}" if parameter["description"] else ""))
    click.echo("query (as signed):")
    click.echo("  " + item.sql.rstrip().replace("\n", "\n  "))


@product.command("run")
@client_options
@_GRANT
@click.argument("name")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="a parameter's value (a date YYYY-MM-DD, a whole number, or a list's members separated by "
                   "commas, or the option repeated); repeat for each parameter")
@click.option("--version", default=0, show_default=True, help="the product version you expect (0: the grant's)")
@click.option("--timeout", default=60.0, show_default=True, help="deadline in seconds (the query's time limit)")
@_JSON
@reporting_errors
def run_product(broker, token, ca, cert, key, plaintext, grant, name, params, version, timeout, as_json) -> None:
    """Run one of the grant's products and print the released cells, as `dsbroker query` does."""
    from broker.cli.output import print_result
    from broker.client.sdk import BrokerClient
    from dsbroker.policy.product_binding import parse_parameters

    try:
        values = parse_parameters(params)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    with BrokerClient(broker, token=token, tls=client_tls(ca, cert, key, plaintext), timeout=timeout) as client:
        print_result(client.run_product(grant, name, values, version=version), as_json=as_json)


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
