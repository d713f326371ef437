"""The console's ASGI app: its routes by role, the guard every request passes, and errors shown as pages."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from broker.cli.exit_codes import ExitCode, exit_code_for
from broker.cli.i18n import LANGUAGES, _, set_language
from broker.cli.reasons import explained
from broker.console import audit_pages, department_pages, review_pages
from broker.console.pages import DEFAULT_LANGUAGE, HERE, LANGUAGE_COOKIE, ConsoleSettings, page, sessions_of
from broker.console.session import Sessions, host_allowed
from dsbroker.errors import DsbrokerError

FORM = "dsbroker.form"  # where the guard leaves a POST's fields, read once (and checked) before any page runs
MOST_FORM_BYTES = 1024 * 1024
LOCAL_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9/_.?=&%-]*")
# What an error's kind is as an HTTP status (the exit code's kinds: refused, not found, unavailable, ...).
HTTP_STATUS = {ExitCode.REFUSED: 403, ExitCode.NOT_FOUND: 404, ExitCode.UNAVAILABLE: 503,
               ExitCode.UNAUTHENTICATED: 401}


def home(request: Request) -> Response:
    """Who is signed in, and the pages of their roles."""
    return page(request, "home.html")


def sign_in(request: Request) -> Response:
    """The one-time secret URL: a session cookie for the browser that opens it first."""
    session = sessions_of(request).sign_in(request.query_params.get("secret", ""))
    if session is None:
        return PlainTextResponse(_("this sign-in link was used already or is wrong: restart 'dsbroker console' "
                                   "for a new one"), status_code=403)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(sessions_of(request).cookie, session, httponly=True, samesite="strict")
    return response


def choose_language(request: Request) -> Response:
    """Switch the pages' language (zh-CN or en) and go back where the reader was."""
    chosen = request.path_params["lang"]
    back = request.query_params.get("back", "/")
    # Only a path of this console: "//host" and "/\host" would send the reader to another site.
    response = RedirectResponse(back if LOCAL_PATH.fullmatch(back) else "/", status_code=303)
    if chosen in ("zh-CN", "en"):
        response.set_cookie(LANGUAGE_COOKIE, chosen, httponly=True, samesite="strict")
    return response


def error_page(request: Request, error: Exception) -> Response:
    """A refusal or failure as the reader sees it: its kind, reason and what it names, never a traceback."""
    assert isinstance(error, DsbrokerError)
    where = {k: v for k, v in error.metadata.items() if k in ("rule", "table", "column")}
    return page(request, "error.html", status=HTTP_STATUS.get(exit_code_for(error), 400), error=error,
                sentence=explained(error), where=where)


# On every answer. no-store: a page may hold released cells, which the browser must not keep in its disk cache
# (the console keeps no data, and neither may its pages). The rest: no frame (clickjacking), no script, style
# or form target but the console's own, no Referer to carry a path anywhere.
SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
]


class Guard:
    """Every request passes here first: the Host must be the console's loopback address, the session cookie one
    the secret URL set, a POST's CSRF field the session's; and the reader's language is set for the page. Every
    answer gets :data:`SECURITY_HEADERS`."""

    OPEN_PATHS = ("/login", "/static/")

    def __init__(self, app, *, sessions: Sessions, port: int) -> None:
        self.app, self.sessions, self.port = app, sessions, port

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                named = {name for name, _ in SECURITY_HEADERS}
                message = {**message, "headers": [(k, v) for k, v in message.get("headers", [])
                                                  if k.lower() not in named] + SECURITY_HEADERS}
            await send(message)

        await self._guarded(scope, receive, send_with_headers)

    async def _guarded(self, scope, receive, send) -> None:
        request = Request(scope, receive)
        if not host_allowed(request.headers.get("host", ""), self.port):
            await PlainTextResponse("wrong Host", status_code=421)(scope, receive, send)
            return
        chosen = request.cookies.get(LANGUAGE_COOKIE, DEFAULT_LANGUAGE)
        set_language(chosen if chosen in LANGUAGES else DEFAULT_LANGUAGE)
        session = request.cookies.get(self.sessions.cookie)
        if not scope["path"].startswith(self.OPEN_PATHS) and self.sessions.csrf_token(session) is None:
            await HTMLResponse(_("Open the sign-in link that 'dsbroker console' printed."),
                               status_code=401)(scope, receive, send)
            return
        if scope["method"] == "POST":
            fields = await _form_fields(request)
            if fields is None or not self.sessions.csrf_matches(session, fields.get("csrf", "")):
                await PlainTextResponse(_("refused: the form's CSRF token does not match this session"),
                                        status_code=403)(scope, receive, send)
                return
            scope[FORM] = fields
        await self.app(scope, receive, send)


async def _form_fields(request: Request) -> dict[str, str] | None:
    """A POST's URL-encoded fields (the console's forms send no files: a signing key is read by the browser)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MOST_FORM_BYTES:
            return None
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return None


def posted(request: Request) -> dict[str, str]:
    """The fields of the POST being served, as the guard read and checked them."""
    return request.scope[FORM]


def console_app(settings: ConsoleSettings, *, port: int, sessions: Sessions | None = None) -> Guard:
    """The console for ``settings``, served on 127.0.0.1:``port``."""
    routes = [Route("/", home), Route("/login", sign_in), Route("/language/{lang}", choose_language),
              Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
              *department_pages.routes(), *review_pages.routes(), *audit_pages.routes()]
    app = Starlette(routes=routes, exception_handlers={DsbrokerError: error_page})
    app.state.settings = settings
    app.state.sessions = sessions or Sessions(port)
    return Guard(app, sessions=app.state.sessions, port=port)
