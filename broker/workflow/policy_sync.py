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

from dsbroker.errors import DsbrokerError
from broker.query.sandbox_client import SandboxClient

log = logging.getLogger(__name__)
SYNC_SECONDS = 10.0
BATCH = 200  # statements or documents per call; a sandbox takes at most 256 at once


class PolicySync:
    """Publishes to, and collects from, the sandboxes (the main one and each partition)."""

    def __init__(self, sandboxes: dict[str, SandboxClient], *, timeout_s: float = SYNC_SECONDS) -> None:
        """``sandboxes`` maps a name for the logs (the sandbox's id or its setting) to a client of it."""
        self.sandboxes = sandboxes
        self.timeout_s = timeout_s

    def publish(self, statements: list[str], documents: list[str] = ()) -> list[str]:
        """Hand every sandbox ``statements`` and ``documents``; returns the ids of those that kept them."""
        statements, documents = list(statements), list(documents)
        batches = [(statements[i:i + BATCH], []) for i in range(0, len(statements), BATCH)]
        batches += [([], documents[i:i + BATCH]) for i in range(0, len(documents), BATCH)]
        acknowledged = []
        for name, client in self.sandboxes.items():
            answers, refused = [], 0
            for some, others in batches:  # one batch the sandbox refuses does not keep the others from it
                try:
                    answers.append(client.publish_statements(some, others, timeout_s=self.timeout_s))
                except DsbrokerError as error:
                    refused += 1
                    log.warning("sandbox %s (%s) did not take a batch of the owner's statements or policies: %s %s",
                                name, client.target, error.reason, error.message)
                    if error.reason in ("SANDBOX_UNAVAILABLE", "QUERY_TIMEOUT"):  # it is not answering
                        break
            if answers and not refused:
                acknowledged.append(answers[-1].sandbox_id or name)
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
