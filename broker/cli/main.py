"""``dsbroker``: the root command; each command group lives in a module of its own beside this one."""

from __future__ import annotations

import logging
import sys

import click

from broker.cli.audit import audit
from broker.cli.data import data
from broker.cli.demo import demo
from broker.cli.keys import keys, token
from broker.cli.policy import policy
from broker.cli.product import product
from broker.cli.query import query
from broker.cli.servers import sandbox_group, serve
from broker.cli.workflow import catalog, request, review


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", is_flag=True, help="log more (servers log to stderr)")
def main(verbose: bool) -> None:
    """dsbroker: privacy-preserving data sharing, usable but not visible (可用不可见).

    Departments query a data owner's tables under grants the owner approved; the guard checks and
    rewrites each query, the owner's sandbox runs it, and only aggregates come back.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for command in (serve, sandbox_group, query, product, catalog, request, review, policy, audit, keys, token, data, demo):
    main.add_command(command)

if __name__ == "__main__":
    main()
