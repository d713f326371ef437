"""Who may drive the console: the browser that opened its one-time secret URL, and only with a CSRF token.

The console listens on 127.0.0.1, where every local user and every web page the person visits can reach
it. So: the URL it prints carries a random secret, usable once, that sets a session cookie (HttpOnly,
SameSite=Strict: no other site's page sends it); every POST carries the session's CSRF token in a hidden
field; and a request whose Host is not the console's own loopback address is refused (DNS rebinding).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


@dataclass
class Sessions:
    """The one-time login secret and the sessions it opened (in memory: a restart signs everyone out).

    ``port`` names the session cookie: browsers keep cookies per host, not per port, so two consoles on one
    machine (two people, or one person's two profiles) would otherwise overwrite each other's."""

    port: int
    login_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    _csrf: dict[str, str] = field(default_factory=dict)  # session id -> its CSRF token

    @property
    def cookie(self) -> str:
        """The session cookie's name."""
        return f"dsbroker_console_{self.port}"

    def sign_in(self, secret: str) -> str | None:
        """A new session id for the right secret (which is then used up), else None."""
        if not self.login_secret or not hmac.compare_digest(secret.encode(), self.login_secret.encode()):
            return None
        self.login_secret = ""
        session = secrets.token_urlsafe(32)
        self._csrf[session] = secrets.token_urlsafe(32)
        return session

    def csrf_token(self, session: str | None) -> str | None:
        """The CSRF token of a signed-in session, or None when ``session`` is not one."""
        return self._csrf.get(session or "")

    def csrf_matches(self, session: str | None, token: str) -> bool:
        """Whether ``token`` is the session's CSRF token."""
        expected = self.csrf_token(session)
        return expected is not None and hmac.compare_digest(expected.encode(), token.encode())


def host_allowed(host_header: str, port: int) -> bool:
    """Whether a request's Host names the console itself (127.0.0.1 or localhost, on its port)."""
    return host_header in {f"{host}:{port}" for host in LOOPBACK_HOSTS}
