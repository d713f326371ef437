"""The web console's guard, over real HTTP: only the browser that opened the one-time sign-in link gets in, only
with the console's own Host, and a POST only with the session's CSRF token; a broker's refusal is a page that
names its reason, never a traceback. The console is served by uvicorn on a free loopback port; its broker
address answers nothing, so every page that reaches the broker shows UNAVAILABLE."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import zoneinfo
from urllib.parse import urlencode

import pytest
import uvicorn

from broker.console.app import console_app
from broker.console.connection import Connection
from broker.console.pages import ConsoleSettings
from broker.console.session import Sessions
from tests.conftest import token_for


@pytest.fixture(scope="module")
def served():
    """A console whose broker is a closed loopback port, on a free port; (port, sessions)."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    nowhere = f"127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening: connections are refused
    token = token_for(roles=("requester",))
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    sessions = Sessions(port)
    settings = ConsoleSettings(Connection(nowhere, None, lambda: token), zoneinfo.ZoneInfo("Asia/Shanghai"))
    server = uvicorn.Server(uvicorn.Config(console_app(settings, port=port, sessions=sessions), log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield port, sessions
    server.should_exit = True
    thread.join(timeout=30)
    closed.close()


def call(port: int, method: str, path: str, *, host: str | None = None, cookie: str = "", form: dict | None = None,
         content_type: str = "application/x-www-form-urlencoded") -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Host": host or f"127.0.0.1:{port}"}
    if cookie:
        headers["Cookie"] = cookie
    body = None
    if form is not None:
        body, headers["Content-Type"] = urlencode(form), content_type
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.text = response.read().decode()
    return response


@pytest.fixture(scope="module")
def signed_in(served):
    """The session cookie the sign-in link set, and the session's CSRF token."""
    port, sessions = served
    secret = sessions.login_secret
    response = call(port, "GET", f"/login?secret={secret}")
    assert response.status == 303
    set_cookie = response.getheader("set-cookie")
    assert "httponly" in set_cookie.lower() and "samesite=strict" in set_cookie.lower()
    cookie = set_cookie.split(";")[0]
    assert cookie.startswith(f"{sessions.cookie}=")
    csrf = sessions.csrf_token(cookie.split("=", 1)[1])
    assert csrf
    return cookie, csrf, secret


def test_a_page_needs_the_session_the_sign_in_link_set(served, signed_in):
    port, sessions = served
    cookie, _csrf, _secret = signed_in
    assert call(port, "GET", "/").status == 401
    assert call(port, "GET", "/", cookie=f"{sessions.cookie}=guessed").status == 401
    home = call(port, "GET", "/", cookie=cookie)
    assert home.status == 200 and "xuanwu-fgw" in home.text


def test_the_sign_in_link_works_once(served, signed_in):
    port, _sessions = served
    _cookie, _csrf, secret = signed_in
    again = call(port, "GET", f"/login?secret={secret}")
    assert again.status == 403 and "set-cookie" not in {k.lower() for k, _v in again.getheaders()}


def test_a_request_for_another_host_is_refused(served, signed_in):
    port, _sessions = served
    cookie, _csrf, _secret = signed_in
    # A page of another site that resolves its own name to 127.0.0.1 (DNS rebinding) sends its own Host.
    for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1:1"):
        assert call(port, "GET", "/", host=host, cookie=cookie).status == 421
    assert call(port, "GET", "/", host=f"localhost:{port}", cookie=cookie).status == 200


@pytest.mark.parametrize("form, content_type", [
    ({"grant": "g", "sql": "SELECT 1"}, "application/x-www-form-urlencoded"),
    ({"grant": "g", "sql": "SELECT 1", "csrf": "guessed"}, "application/x-www-form-urlencoded"),
    ({"grant": "g", "sql": "SELECT 1", "csrf": "<the session's>"}, "text/plain"),
])
def test_a_post_without_the_sessions_csrf_token_is_refused(served, signed_in, form, content_type):
    port, _sessions = served
    cookie, csrf, _secret = signed_in
    form = {k: (csrf if v == "<the session's>" else v) for k, v in form.items()}
    refused = call(port, "POST", "/query", cookie=cookie, form=form, content_type=content_type)
    assert refused.status == 403 and "CSRF" in refused.text


def test_a_broker_error_is_a_page_naming_its_reason_never_a_traceback(served, signed_in):
    port, _sessions = served
    cookie, csrf, _secret = signed_in
    for method, path, form in (("GET", "/catalog", None),
                               ("POST", "/query", {"grant": "g", "sql": "SELECT 1", "csrf": csrf})):
        answer = call(port, method, path, cookie=cookie, form=form)
        assert answer.status == 503, answer.text
        assert "UNAVAILABLE" in answer.text and "Traceback" not in answer.text and 'id="error"' in answer.text


@pytest.mark.parametrize("back, lands", [("/query", "/query"), ("/audit?after=3", "/audit?after=3"),
                                         ("//attacker.example/", "/"), ("/\\attacker.example", "/"),
                                         ("https://attacker.example/", "/")])
def test_switching_the_language_goes_back_only_to_a_page_of_the_console(served, signed_in, back, lands):
    port, _sessions = served
    cookie, _csrf, _secret = signed_in
    from urllib.parse import quote

    switched = call(port, "GET", f"/language/en?back={quote(back, safe='')}", cookie=cookie)
    assert switched.status == 303 and switched.getheader("location") == lands
    assert "dsbroker_lang=en" in switched.getheader("set-cookie")


@pytest.mark.parametrize("path, signed", [("/", True), ("/catalog", True), ("/", False), ("/static/console.css", False),
                                          ("/login?secret=wrong", False)])
def test_every_answer_forbids_caching_framing_and_outside_scripts(served, signed_in, path, signed):
    """A page may hold released cells: the browser keeps none in its cache (no-store); no other site may frame a
    page, and nothing but the console's own scripts, styles and forms runs in it."""
    port, _sessions = served
    cookie, _csrf, _secret = signed_in
    answer = call(port, "GET", path, cookie=cookie if signed else "")
    headers = {name.lower(): value for name, value in answer.getheaders()}
    assert headers["cache-control"] == "no-store"
    assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer"
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
