"""``dsbroker``: the root command; each command group lives in a module of its own beside this one."""

from __future__ import annotations

import logging
import sys

import click

from broker.cli.audit import audit
from broker.cli.console import console
from broker.cli.data import data
from broker.cli.demo import demo
from broker.cli.exit_codes import EXIT_CODES
from broker.cli.i18n import _, set_language
from broker.cli.keys import keys, token
from broker.cli.policy import policy
from broker.cli.product import product
from broker.cli.profile import profile
from broker.cli.query import query
from broker.cli.servers import sandbox_group, serve
from broker.cli.timezones import ZONE_META, zone
from broker.cli.translated import TranslatedGroup
from broker.cli.workflow import catalog, request, review
from broker.version import API_VERSION, package_version
from dsbroker.errors import ConfigError


class RootGroup(TranslatedGroup):
    """The root: its help ends with the table of exit codes, in the language in force."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section(_("Exit codes")):
            formatter.write_dl([(str(int(code)), _(meaning)) for code, meaning in EXIT_CODES])


def _choose_language(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    set_language(value)  # eager: before --help is printed, and on every run (None: the environment decides)
    return value


def _version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_("dsbroker {version} (API {api})").format(version=package_version(), api=API_VERSION))
        ctx.exit()


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
# Not envvar=: an unknown $DSBROKER_LANG must not stop every command; broker.cli.i18n reads it and ignores one.
@click.option("--lang", type=click.Choice(["zh-CN", "en"]), is_eager=True,
              expose_value=False, callback=_choose_language,
              help="language of help, messages and tables [env DSBROKER_LANG; default: from LANGUAGE, LC_ALL, "
                   "LC_MESSAGES, LANG]")
@click.option("--version", is_flag=True, is_eager=True, expose_value=False, callback=_version,
              help="print the version of dsbroker and of its API, and exit")
@click.option("--tz", envvar="DSBROKER_TZ",
              help="time zone times are shown and read in [env DSBROKER_TZ; else the profile's; default: "
                   "Asia/Shanghai]")
@click.option("-v", "--verbose", is_flag=True, help="log more (servers log to stderr)")
@click.pass_context
def main(ctx: click.Context, tz: str | None, verbose: bool) -> None:
    """dsbroker: privacy-preserving data sharing, usable but not visible (可用不可见).

    Departments query a data owner's tables under grants the owner approved; the guard checks and
    rewrites each query, the owner's sandbox runs it, and only aggregates come back.
    """
    if tz:
        try:
            zone(tz)
        except ConfigError as error:  # a usage error of this flag
            raise click.BadParameter(str(error), param_hint="--tz") from None
        ctx.meta[ZONE_META] = tz
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for command in (serve, sandbox_group, query, product, catalog, request, review, policy, audit, profile, keys, token,
                data, demo, console):
    main.add_command(command)

if __name__ == "__main__":
    main()
