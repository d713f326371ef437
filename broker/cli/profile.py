"""``dsbroker profile``: add, use, list, show and remove client profiles (broker, files, token command)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import click

from broker.cli.common import reporting_errors
from broker.cli.i18n import _
from broker.cli.translated import TranslatedGroup
from dsbroker.errors import ConfigError

FILE_SETTINGS = ("ca", "cert", "key")


@click.group(cls=TranslatedGroup)
def profile() -> None:
    """Client profiles: one name for the broker, certificates and token command (like kubectl contexts)."""


@profile.command("add")
@click.argument("name")
@click.option("--broker", help="broker address HOST:PORT")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False), help="CA certificate of the broker's certificate")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), help="client certificate for mutual TLS")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="private key of --cert")
@click.option("--plaintext", is_flag=True, help="no TLS: a loopback development broker only")
@click.option("--token-command", help="a command that prints a fresh token, run for each command (no shell)")
@click.option("--token", help="a static token (stored in the file; prefer --token-command)")
@click.option("--tz", help="the time zone times are shown and read in, e.g. Asia/Shanghai")
@click.option("--use", "make_current", is_flag=True, help="also make it the current profile")
@reporting_errors
def profile_add(name, make_current, **settings) -> None:
    """Add profile NAME, or replace the settings given of an existing one."""
    from broker.cli.profiles import Profile, Profiles
    from broker.cli.timezones import zone

    if settings["token"] and settings["token_command"]:
        raise ConfigError(_("--token and --token-command exclude each other"))
    if settings["tz"]:
        zone(settings["tz"])  # refused now, not at the first command
    given = {k: (str(Path(v).resolve()) if k in FILE_SETTINGS else v) for k, v in settings.items() if v}
    profiles = Profiles.load()
    profiles.profiles[name] = replace(profiles.profiles.get(name, Profile()), **given)
    if make_current or not profiles.current:
        profiles.current = name
    path = profiles.save()
    click.echo(_("profile {name} saved in {path}").format(name=name, path=path)
               + (_("; it is the current profile") if profiles.current == name else ""))


@profile.command("use")
@click.argument("name")
@reporting_errors
def profile_use(name) -> None:
    """Make NAME the current profile."""
    from broker.cli.profiles import Profiles

    profiles = Profiles.load()
    profiles.get(name)
    profiles.current = name
    profiles.save()
    click.echo(_("the current profile is {name}").format(name=name))


@profile.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@reporting_errors
def profile_list(as_json) -> None:
    """List the profiles; * marks the current one."""
    from broker.cli.output import print_rows
    from broker.cli.profiles import Profiles

    profiles = Profiles.load()
    if as_json:
        click.echo(json.dumps({"current": profiles.current, "profiles": sorted(profiles.profiles)}))
        return
    print_rows([_("current"), _("profile"), _("broker"), _("token")],
               [["*" if name == profiles.current else "", name, p.broker or "—",
                 _("command") if p.token_command else _("static") if p.token else "—"]
                for name, p in sorted(profiles.profiles.items())])


@profile.command("show")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@reporting_errors
def profile_show(name, as_json) -> None:
    """Show profile NAME (default: the current one); a static token is shown only as set."""
    from broker.cli.profiles import Profiles

    profiles = Profiles.load()
    name = name or profiles.current
    if not name:
        raise ConfigError(_("no current profile: pass NAME, or 'dsbroker profile use NAME'"))
    values = asdict(profiles.get(name))
    values["token"] = "(set)" if values["token"] else ""  # a secret is not echoed to a screen
    if as_json:
        click.echo(json.dumps({"name": name, "current": name == profiles.current, **values}, ensure_ascii=False))
        return
    click.echo(name + ("  (" + _("current") + ")" if name == profiles.current else ""))
    for key, value in values.items():
        if value:
            click.echo(f"  {key:<14} {value}")


@profile.command("remove")
@click.argument("name")
@reporting_errors
def profile_remove(name) -> None:
    """Remove profile NAME."""
    from broker.cli.profiles import Profiles

    profiles = Profiles.load()
    profiles.get(name)
    del profiles.profiles[name]
    if profiles.current == name:
        profiles.current = ""
    profiles.save()
    click.echo(_("profile {name} removed").format(name=name))
