"""What every page shares: the templates, the settings a page reads, and rendering in the reader's language."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from broker.cli.i18n import N_, _, language, localized
from broker.cli.timezones import shown_time
from broker.console.connection import Connection
from broker.console.session import Sessions

HERE = Path(__file__).resolve().parent
LANGUAGE_COOKIE = "dsbroker_lang"
DEFAULT_LANGUAGE = "zh-CN"  # the people who use it read Chinese; English is one click away
ROLE_PAGES = {"requester": ("/catalog", "/grants", "/requests", "/query"), "reviewer": ("/inbox",),
              "owner": ("/inbox",), "auditor": ("/audit", "/audit/verify")}
PAGE_TITLES = {"/catalog": N_("Catalog"), "/grants": N_("Grants"), "/requests": N_("My requests"),
               "/query": N_("Query workspace"), "/inbox": N_("Review inbox"), "/audit": N_("Access log"),
               "/audit/verify": N_("Verify and reconcile")}


@dataclass(frozen=True)
class ConsoleSettings:
    """What ``dsbroker console`` was started with."""

    connection: Connection
    zone: zoneinfo.ZoneInfo
    pinned_keys: tuple[str, ...] = ()  # an auditor's pinned broker log keys, for verify
    ledgers: tuple[str, ...] = ()  # sandbox ledgers, for reconcile
    witness_keys: tuple[str, ...] = ()
    signing_key_id: str = ""  # a reviewer's or owner's key id and organisation, filled into the approval form
    signer: str = ""


templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                        trim_blocks=True, lstrip_blocks=True)
templates.globals["_"] = _
templates.globals["localized"] = localized


def settings_of(request: Request) -> ConsoleSettings:
    """The console's settings."""
    return request.app.state.settings


def sessions_of(request: Request) -> Sessions:
    """The console's sessions."""
    return request.app.state.sessions


def page(request: Request, template: str, *, status: int = 200, **context) -> HTMLResponse:
    """``template`` rendered for ``request``'s reader: their language, their roles' pages, the CSRF token."""
    settings = settings_of(request)
    claims = settings.connection.claims()
    roles = [r for r in claims.get("roles") or [] if isinstance(r, str)]
    nav = list(dict.fromkeys(p for role in roles for p in ROLE_PAGES.get(role, ())))
    html = templates.get_template(template).render(
        request=request, titles=PAGE_TITLES, lang="zh-CN" if language() == "zh_CN" else "en", claims=claims,
        roles=roles, nav=nav,
        csrf=sessions_of(request).csrf_token(request.cookies.get(sessions_of(request).cookie)) or "",
        time=lambda moment: shown_time(moment, in_zone=settings.zone) if moment else "", **context)
    return HTMLResponse(html, status_code=status)
