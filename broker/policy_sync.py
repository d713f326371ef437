"""Carries the owner's signed statements and policy documents between the broker and every sandbox it knows.

The sandboxes are the owner's, and they keep what the owner signed for good; the broker's store may
be lost. So the broker pushes each revocation (and, at its start, every statement and current policy
document it holds) to every sandbox, and at its start asks them what they hold, so that a broker
restarted on an empty store learns again which grants the owner revoked. A sandbox that cannot be
reached is logged and skipped: it still learns the statement from the next plan, and the owner can
hand it the file directly.
"""

from __future__ import annotations

import logging

from broker.errors import DsbrokerError
from broker.sandbox_client import SandboxClient

log = logging.getLogger(__name__)
SYNC_SECONDS = 10.0


class PolicySync:
    """Publishes to, and collects from, the sandboxes (the main one and each partition)."""

    def __init__(self, sandboxes: dict[str, SandboxClient], *, timeout_s: float = SYNC_SECONDS) -> None:
        """``sandboxes`` maps a name for the logs (the sandbox's id or its setting) to a client of it."""
        self.sandboxes = sandboxes
        self.timeout_s = timeout_s

    def publish(self, statements: list[str], documents: list[str] = ()) -> list[str]:
        """Hand every sandbox ``statements`` and ``documents``; returns the ids of those that kept them."""
        if not statements and not documents:
            return []
        acknowledged = []
        for name, client in self.sandboxes.items():
            try:
                answer = client.publish_statements(list(statements), list(documents), timeout_s=self.timeout_s)
            except DsbrokerError as error:
                log.warning("sandbox %s (%s) did not take the owner's statements: %s %s", name, client.target,
                            error.reason, error.message)
                continue
            acknowledged.append(answer.sandbox_id or name)
        return acknowledged

    def collect(self) -> list[str]:
        """Every statement any reachable sandbox holds (unverified here; the registry verifies them)."""
        collected: dict[str, None] = {}
        for name, client in self.sandboxes.items():
            try:
                collected.update(dict.fromkeys(client.list_statements(timeout_s=self.timeout_s)))
            except DsbrokerError as error:
                log.warning("could not ask sandbox %s (%s) for the owner's statements: %s %s", name, client.target,
                            error.reason, error.message)
        return list(collected)
