"""How the console reaches the broker: the signed-in person's own address, certificate and token."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.client.sdk import BrokerClient
from dsbroker.identity.tls import ClientTls


@dataclass(frozen=True)
class Connection:
    """The broker's address, the person's TLS files, and where a fresh token comes from (a profile's token
    command runs again for each page, so a short-lived token never goes stale under an open console)."""

    broker: str
    tls: ClientTls | None
    token: Callable[[], str | None]
    profile: str = ""  # the profile's name, for the CLI commands the pages show
    _latest: list[str] = field(default_factory=list, compare=False)  # the last token a client was opened with

    def client(self) -> BrokerClient:
        """A client for one page: opened with a fresh token, closed by the caller (``with``)."""
        token = self.token()
        self._latest[:] = [token or ""]
        return BrokerClient(self.broker, token=token, tls=self.tls)

    def claims(self) -> dict:
        """The claims of the token the last page used (read, not verified: only to choose what pages to offer;
        the broker verifies every call); a page that called no broker yet asks for a token."""
        try:
            payload = (self._latest[0] if self._latest else self.token() or "").split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (IndexError, ValueError):
            return {}
        return claims if isinstance(claims, dict) else {}
