"""Where each policy stands by the owner's own word, at the sandbox: revoked, superseded, or in force.

The owner's word reaches the sandbox three ways, so that no single one depends on the broker:

- the broker pushes it (``PublishPolicyStatements``) when the owner revokes or installs a version,
  and at its own start;
- every plan carries the statements the broker holds for its policy, and the policy document itself;
- the owner puts files in a directory of its own on the sandbox's host (setting ``statements``):
  ``*.json`` files whose every line is a statement (``dsbroker policy revoke --out``), and signed
  policy documents (``*.yaml``) of newer versions.

Whatever verifies against the owner's trust file is kept in the policy ledger for good. A plan under
a policy version that a revocation covers is refused (POLICY_REVOKED); under a version older than
the newest the sandbox has seen, refused too (POLICY_SUPERSEDED); under a version of which the sandbox
has seen two different bodies signed by the owner, refused whichever body the plan carries
(POLICY_VERSION_REUSED): one version has one body, and an owner's change signed without raising the
version must not leave the earlier body answering for a broker that replays it. What never reached the sandbox by
any of the three ways it cannot know: a hostile broker that withholds a revocation (or the second body
of a version) from a sandbox whose owner did not also place the file there keeps that sandbox answering
until the policy expires.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Iterable

from google.rpc import error_details_pb2

from dsbroker.errors import ConfigError, DsbrokerError, PolicyStandingError
from dsbroker.policy.model import Policy
from dsbroker.policy.signing import Trust, body_sha256, verify_policy
from dsbroker.policy.statements import Revocation, StatementError, parse_statement, verify_statement
from sandbox.ledgers.policies import PolicyLedger

log = logging.getLogger(__name__)
STATEMENT_SUFFIXES = (".json",)
# Each statement costs a signature check: a request may carry this many (an owner has a few per policy).
MAX_PER_REQUEST = 256
DOCUMENT_SUFFIXES = (".yaml", ".yml")


class PolicyStanding:
    """The owner's revocations and newest versions, as this sandbox knows them, and the check of each plan."""

    def __init__(self, trust: Trust, ledger: PolicyLedger, *, directory: str | Path | None = None,
                 one_body_per_version: bool = True) -> None:
        """``directory`` (the owner's, optional) is read now (a file that does not verify stops the start) and
        again whenever its files change. ``one_body_per_version`` False serves every owner-signed body of a
        version (the bodies are recorded all the same): only for a test rig serving variants of one grant."""
        self.trust = trust
        self.ledger = ledger
        self.one_body_per_version = one_body_per_version
        self.directory = Path(directory) if directory else None
        self._listing: tuple = ()
        self._lock = threading.Lock()
        if self.directory is not None:
            if not self.directory.is_dir():
                raise ConfigError(f"statements: {self.directory} is not a directory")
            self.refresh(strict=True)

    def accept_statements(self, texts: Iterable[str], *, source: str) -> int:
        """Verify every statement first, then record them; returns how many were new.

        One that does not verify refuses them all (STATEMENT_SIGNATURE_INVALID or STATEMENT_INVALID).
        """
        texts = _bounded(texts, "statements")
        fresh: list[Revocation] = []
        for text in texts:
            digest = parse_statement(text).sha256
            if not self.ledger.knows_statement(digest):
                fresh.append(verify_statement(text, self.trust))
        return sum(self.ledger.add_revocation(revocation, source=source) for revocation in fresh)

    def accept_documents(self, texts: Iterable[str], *, source: str) -> int:
        """Verify signed policy documents and record their versions; returns how many versions were new."""
        texts = _bounded(texts, "policy documents")
        fresh: list[Policy] = []
        for text in texts:
            if not self.ledger.knows_document(hashlib.sha256(text.encode("utf-8")).hexdigest()):
                fresh.append(verify_policy(text, self.trust, source=f"<{source} policy>"))
        return sum(self._see(policy, source=source) for policy in fresh)

    def check(self, policy: Policy) -> None:
        """Refuse ``policy`` (verified already) when the owner revoked its version, a newer one is in force, or
        the owner signed another body of its version."""
        self.refresh()
        self._see(policy, source="plan")
        revocation = self.ledger.revocation_of(policy.id, policy.version)
        if revocation is not None:
            raise _refusal(f"policy {policy.id!r} v{policy.version} is revoked by its owner ({revocation.by}, "
                           f"{revocation.at}, {revocation.versions})", "POLICY_REVOKED", policy,
                           statement=revocation.sha256[:16])
        newest = self.ledger.newest_version(policy.id)
        if newest > policy.version:
            raise _refusal(f"policy {policy.id!r} v{policy.version} is superseded: this sandbox has seen v{newest} "
                           "signed by the owner", "POLICY_SUPERSEDED", policy, newest_version=newest)
        bodies = self.ledger.bodies_of(policy.id, policy.version)
        if len(bodies) > 1 and self.one_body_per_version:
            raise _refusal(f"policy {policy.id!r} v{policy.version} is reused: this sandbox has seen {len(bodies)} "
                           "different bodies of that version signed by the owner, and one version has one body; "
                           "the owner signs the change as a new version", "POLICY_VERSION_REUSED", policy)

    def _see(self, policy: Policy, *, source: str) -> bool:
        """Record ``policy``'s version and body in the ledger (whether the version was new), and say loudly when
        its body is a second one of its version."""
        body = body_sha256(policy.document)
        before = self.ledger.bodies_of(policy.id, policy.version)
        new_version = self.ledger.see_version(policy.id, policy.version, policy.sha256, body_sha256=body,
                                              source=source)
        if before and body not in before:
            log.error("policy %r v%d: the owner signed a second body of this version (body sha256 %s…, from %s; "
                      "the first seen is %s…): plans under v%d are refused (POLICY_VERSION_REUSED) until the owner "
                      "signs a new version", policy.id, policy.version, body[:16], source, before[0][:16],
                      policy.version)
        return new_version

    def refresh(self, *, strict: bool = False) -> None:
        """Read the owner's directory again if its files changed; ``strict`` raises ConfigError on a bad file,
        otherwise it is logged and skipped (the sandbox keeps serving)."""
        if self.directory is None:
            return
        listing = self._list()
        if listing == self._listing:
            return
        with self._lock:
            if listing == self._listing:
                return
            for name, *_ in listing:
                path = self.directory / name
                try:
                    text = path.read_text(encoding="utf-8")
                    if path.suffix in STATEMENT_SUFFIXES:
                        lines = [line for line in text.splitlines() if line.strip()]
                        for start in range(0, len(lines), MAX_PER_REQUEST):
                            self.accept_statements(lines[start:start + MAX_PER_REQUEST], source=f"directory:{name}")
                    else:
                        self.accept_documents([text], source=f"directory:{name}")
                except (OSError, UnicodeDecodeError, DsbrokerError) as error:
                    message = f"statements: {path} is not an owner-signed statement or policy ({error})"
                    if strict:
                        raise ConfigError(message) from None
                    log.error("%s; it is skipped", message)
            self._listing = listing

    def _list(self) -> tuple:
        try:
            entries = sorted((entry.name, entry.stat().st_mtime_ns, entry.stat().st_size)
                             for entry in self.directory.iterdir()
                             if entry.suffix in STATEMENT_SUFFIXES + DOCUMENT_SUFFIXES and entry.is_file())
        except OSError as error:
            log.error("statements: cannot read %s (%s)", self.directory, error)
            return self._listing
        return tuple(entries)


def _bounded(texts: Iterable[str], what: str) -> list[str]:
    texts = list(texts)
    if len(texts) > MAX_PER_REQUEST:
        raise StatementError(f"at most {MAX_PER_REQUEST} {what} at once", field=what.replace(" ", "_"))
    return texts


def _refusal(message: str, reason: str, policy: Policy, **metadata) -> PolicyStandingError:
    return PolicyStandingError(message, reason=reason, policy=policy.id, version=policy.version, details=[
        error_details_pb2.PreconditionFailure(violations=[error_details_pb2.PreconditionFailure.Violation(
            type="POLICY_STANDING", subject=f"policies/{policy.id}", description=reason)])], **metadata)
