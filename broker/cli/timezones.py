"""Times as the owner reads them: shown in one time zone with its offset, and read in it when no offset is given.

The zone is ``--tz`` (on ``dsbroker``), else ``$DSBROKER_TZ``, else the profile's ``tz``, else
Asia/Shanghai: the bureaus that use dsbroker keep Beijing time. Stored times stay UTC; only what is shown
and what is typed changes. JSON output keeps each time as stored (ISO 8601 in UTC, with its offset).
"""

from __future__ import annotations

import datetime as dt
import os
import zoneinfo

import click

from broker.cli.i18n import _
from dsbroker.errors import ConfigError, shown

DEFAULT_ZONE = "Asia/Shanghai"
ZONE_META = "dsbroker.tz"  # the --tz (or $DSBROKER_TZ) of this command, in click's context meta


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone ``name``; ConfigError when there is none of that name."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(_("{name} is not a time zone (an IANA name such as Asia/Shanghai or UTC)").format(
            name=shown(name))) from None


def display_zone() -> zoneinfo.ZoneInfo:
    """The zone of this command: --tz or $DSBROKER_TZ, else its profile's, else Asia/Shanghai."""
    from broker.cli.common import PROFILE_META

    ctx = click.get_current_context(silent=True)
    meta = ctx.meta if ctx is not None else {}
    if meta.get(ZONE_META):
        return zone(meta[ZONE_META])
    if PROFILE_META in meta:  # the profile the command's client options chose
        profile = meta[PROFILE_META]
    else:  # a command without client options: $DSBROKER_PROFILE's, or the current one
        from broker.cli.profiles import Profiles

        profile = Profiles.load().chosen(os.environ.get("DSBROKER_PROFILE"))[1]
    return zone((profile.tz if profile is not None else "") or DEFAULT_ZONE)


def shown_time(moment: dt.datetime | str, *, seconds: bool = True, in_zone: zoneinfo.ZoneInfo | None = None) -> str:
    """``moment`` (an aware datetime, or ISO 8601 text) in the display zone (or ``in_zone``) with its offset:
    ``2026-12-01 08:00:00+08:00``. A naive moment is taken as UTC, as the stores keep it."""
    if isinstance(moment, str):
        if not moment:
            return ""
        moment = dt.datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    local = moment.astimezone(in_zone or display_zone())
    text = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    offset = local.strftime("%z")
    return f"{text}{offset[:3]}:{offset[3:]}"


def read_time(text: str | None, option: str, *, in_zone: zoneinfo.ZoneInfo | None = None) -> str:
    """``--since``/``--until`` as the UTC ISO text the stores compare: a date or time without an offset is
    in the display zone (or ``in_zone``; ``2026-12-01`` is midnight Beijing time), one with an offset is that
    moment."""
    if not text:
        return ""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 date or time", param_hint=option) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=in_zone or display_zone())
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
