"""The policies the broker serves and where each stands; the owner's suspend, resume and revoke.

Policies come from two places: files an operator installs in the policies directory, and the
owner's final approval of an access request. Both are recorded in the store, which holds each
policy's state; the store is what every query consults, so a suspension or revocation takes effect
on the next query, on every broker replica. A policy past its validity is moved to EXPIRED the
first time a query finds it so.

A revocation is more than a state: it is the owner's signed statement (dsbroker/policy/statements.py).
The registry verifies it against the owner's trust file, keeps it in the store, writes it beside the
policy files (``<policies>/statements/``) and hands it to every sandbox, whose own check does not
depend on the broker. Because it is kept in those three places, a broker restarted on an empty store
installs a revoked policy's file as REVOKED, not ACTIVE. Suspension and resumption stay broker-side
holds: the owner's signed word that a grant ends is the revocation.

One version of a policy has one body (the bytes its approvals sign). A file that carries another body under
the stored version (the owner's change, signed without raising the version) is not installed, and is not
merely warned about: it is kept in the store as refused, logged as an error and in the access log, handed to
the sandboxes (which then refuse the version too), and every query under that version is refused
(POLICY_VERSION_REUSED) until the owner signs the change as a new version. Serving the stored body would
answer under terms the owner has since signed otherwise; serving the new one would let a version mean two
things to two readers.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable

from google.rpc import error_details_pb2

from broker.access_log.log import AccessLog, AccessRecord
from dsbroker.identity.auth import Principal
from dsbroker.errors import DsbrokerError, GrantError
from dsbroker.policy.model import Policy, check_grantee_district, is_policy_id, load_policies, parse_policy
from dsbroker.policy.products import reused_versions
from dsbroker.policy.signing import Trust, body_sha256, verify_policy
from dsbroker.policy.statements import MAX_STATEMENT_BYTES, Revocation, parse_statement, verify_statement
from dsbroker.rpc.request_fields import RequestFieldError, bounded_text
from broker.workflow.request_states import State, next_state
from broker.workflow.store import Store, StoredPolicy
from broker.permissions import check_holds_grant, may_see, require_role, scope_of

log = logging.getLogger(__name__)
PARSED_POLICIES_KEPT = 1024
STATEMENTS_DIRECTORY = "statements"  # beside the policy files
POLICIES = "policies"  # a policy's resource name is "policies/{id}" (AIP-122), the one name a request gives it by
REVOCABLE = (State.ACTIVE, State.SUSPENDED)


class PolicyRegistry:
    """Looks up a caller's policy for a query, and moves policies between states for the owner."""

    def __init__(self, store: Store, access_log: AccessLog, *, owner_timezone: dt.tzinfo,
                 clock: Callable[[], dt.datetime], trust: Trust | None = None,
                 publish: Callable[[list[str], list[str]], list[str]] | None = None,
                 statements_dir: str | Path | None = None) -> None:
        """``trust`` verifies the owner's statements (without it revocations are refused); ``publish`` hands
        statements and documents to the sandboxes and returns the ids that kept them; ``statements_dir``
        is where kept statements are written as files (beside the policy files)."""
        self.store = store
        self.access_log = access_log
        self.owner_timezone = owner_timezone
        self.clock = clock
        self.trust = trust
        self.publish = publish or (lambda statements, documents: [])
        self.statements_dir = Path(statements_dir) if statements_dir else None
        self._parsed: dict[str, Policy] = {}
        self._lock = threading.Lock()

    def install_files(self, directory: str | Path) -> int:
        """Record the policy files of ``directory`` in the store.

        The owner's statements in ``directory/statements/`` are kept first. A new id is stored as
        ACTIVE, unless a kept revocation covers its version (then REVOKED: a revocation outlives the
        store); a higher version of a known id replaces its document and keeps its state (a revoked
        policy stays revoked); a file that is not newer than the stored policy changes nothing.
        """
        self.recover(_statement_files(Path(directory) / STATEMENTS_DIRECTORY), source="files")
        policies = load_policies(directory)
        for policy in policies.values():
            now = self.clock()
            stored = self.store.register_policy(stored_policy_for(policy, request_id=policy.request or "", at=now,
                                                                  state_reason="installed as a file"))
            if stored.sha256 == policy.sha256:
                continue
            if policy.version == stored.version:
                if self.trust is not None and not self._verifies(stored.document) and self._verifies(policy.document):
                    # What was stored is no body of the owner's (a draft copied in before the owner signed, an
                    # edit): the owner's signed document of the version is its body, and is what is served.
                    self._install_signed(stored, policy, now)
                elif body_sha256(policy.document) != body_sha256(stored.document):
                    self._refuse_body(stored, policy, now)
                continue  # else the stored body signed again: the stored document is served
            reused = reused_versions(self.policy(stored).products, policy.products)
            if reused:  # a caller pinning the product's version would get another query under it
                log.warning("policy file %s (v%d) changes product %s but keeps its version; the stored policy %s "
                            "(v%d) is served until the product's version is raised", policy.source, policy.version,
                            ", ".join(reused), policy.id, stored.version)
                continue
            if policy.version > stored.version and policy.department == stored.department:
                self.store.replace_policy_document(stored, version=policy.version, document=policy.document,
                                                   sha256=policy.sha256, at=_stamp(now), district=policy.district or "")
                self._record(event="policy.install", decision="allow", principal=None, client="", request_id="",
                             grant_id=policy.id, reason="", policy=stored,
                             detail={"from_version": stored.version, "to_version": policy.version,
                                     "sha256": policy.sha256, "file": policy.source})
            else:
                log.warning("policy file %s (v%d) is not newer than the stored policy %s (v%d); the stored one "
                            "is served", policy.source, policy.version, policy.id, stored.version)
        for policy_id in policies:
            self._enforce(policy_id)
        return len(policies)

    def _install_signed(self, stored: StoredPolicy, policy: Policy, now: dt.datetime) -> None:
        """Serve ``policy``, the owner's signed document of ``stored``'s version, where the stored one is not
        signed by the owner; recorded in the access log."""
        self.store.replace_policy_document(stored, version=policy.version, document=policy.document,
                                           sha256=policy.sha256, at=_stamp(now), district=policy.district or "")
        log.warning("policy file %s is the owner's signed document of %s v%d, whose stored document the owner did "
                    "not sign; the signed one is served", policy.source, policy.id, policy.version)
        self._record(event="policy.install", decision="allow", principal=None, client="", request_id="",
                     grant_id=policy.id, reason="", policy=stored,
                     detail={"from_version": stored.version, "to_version": policy.version, "sha256": policy.sha256,
                             "file": policy.source, "replaces_unsigned": stored.sha256})

    def _refuse_body(self, stored: StoredPolicy, policy: Policy, now: dt.datetime) -> None:
        """Keep ``policy``, a second body of ``stored``'s version, as refused, and say so (the log, the access log).

        A file the owner did not sign (with a trust file to tell) is only logged: an edit nobody signed changes
        nothing, and must not take a grant out of service either."""
        if self.trust is not None:
            try:
                verify_policy(policy.document, self.trust, source=policy.source)
            except DsbrokerError as error:
                log.error("policy file %s carries another body of %s v%d but is not signed by the owner (%s); it is "
                          "ignored and the stored policy is served", policy.source, policy.id, policy.version,
                          error.reason)
                return
        body, first = body_sha256(policy.document), body_sha256(stored.document)
        added = self.store.refuse_body(policy_id=policy.id, version=policy.version, body_sha256=body,
                                       document=policy.document, at=_stamp(now), source=policy.source)
        log.error("policy file %s is a second body of %s v%d (body sha256 %s…; the stored body's is %s…): one "
                  "version has one body, so it is not installed, and queries under %s v%d are refused "
                  "(POLICY_VERSION_REUSED) until the owner signs the change as a new version", policy.source,
                  policy.id, policy.version, body[:16], first[:16], policy.id, policy.version)
        if added:
            self._record(event="policy.install", decision="deny", principal=None, client="", request_id="",
                         grant_id=policy.id, reason="POLICY_VERSION_REUSED", policy=stored,
                         detail={"version": policy.version, "body_sha256": body, "stored_body_sha256": first,
                                 "sha256": policy.sha256, "file": policy.source})

    def reused_body_of(self, stored: StoredPolicy) -> str:
        """The SHA-256 of the first other body of ``stored``'s version the owner signed and the broker refused;
        "" when there is none (the version has one body)."""
        refused = self.store.refused_bodies(stored.id, stored.version)
        return refused[0][2] if refused else ""

    def statements_for(self, policy_id: str) -> list[str]:
        """The owner's statements kept about ``policy_id`` (each plan under it carries them)."""
        return self.store.statements(policy_id)

    def all_statements(self) -> list[str]:
        """Every owner's statement kept."""
        return self.store.statements()

    def current_documents(self) -> list[str]:
        """The signed document of every stored policy, for the sandboxes to know each one's newest version, and
        every refused second body of a version that verifies, so that they refuse that version too."""
        documents, after = [], None
        while page := self.store.list_policies(after=after, limit=500):
            documents += [stored.document for stored in page]
            after = page[-1].id
        # Only what verifies: a sandbox refuses a batch that holds one document that does not, and the refused
        # bodies first, since they are what a sandbox must not miss.
        refused = [document for *_, document in self.store.refused_bodies() if self._verifies(document)]
        return refused + [document for document in documents if self._verifies(document)]

    def _verifies(self, document: str) -> bool:
        """Whether ``document`` verifies against the trust file (a sandbox refuses a batch holding one that does
        not); False without a trust file."""
        if self.trust is None:
            return False
        try:
            verify_policy(document, self.trust)
        except DsbrokerError:
            return False
        return True

    def recover(self, statements: Iterable[str], *, source: str) -> int:
        """Keep and apply the owner's statements found in files or at the sandboxes; returns how many were new.

        Each is verified against the trust file; one that does not verify is logged and skipped (it
        could only ever revoke, but a revocation the owner did not sign is not the owner's).
        """
        statements = list(statements)
        if statements and self.trust is None:
            log.warning("%d owner statement(s) from %s not applied: the broker has no trust file to verify them "
                        "with (set trust)", len(statements), source)
            return 0
        added = 0
        for text in statements:
            try:
                revocation = verify_statement(text, self.trust)
            except DsbrokerError as error:
                log.warning("an owner statement from %s is skipped: %s %s", source, error.reason, error.message)
                continue
            added += self._keep(revocation)
            self._enforce(revocation.policy_id, detail={"statement": revocation.sha256, "source": source})
        return added

    def revoke(self, principal: Principal, policy_id: str, *, statement: str, reason: str, client: str,
               request_id: str) -> tuple[StoredPolicy, list[str]]:
        """The owner revokes a policy with its signed statement: kept, written beside the policy files and
        handed to every sandbox, then the stored state moves to REVOKED. Returns the policy and the ids of
        the sandboxes that kept the statement. The statement is kept and handed on even when the state
        cannot move (the policy is already revoked or expired), since the sandboxes hold it either way."""
        caller = dict(principal=principal, client=client, request_id=request_id)
        try:
            require_role("owner", principal)
            stored = self.get(principal, policy_id)
            revocation = self._verified(statement, stored, reason)
            self._keep(revocation)
            notified = self.publish([revocation.text], [])
            moved = self._move(stored, "revoke", reason=revocation.reason,
                               extra={"statement": revocation.sha256, "versions": revocation.versions,
                                      "sandboxes_notified": notified}, **caller)
            if moved is None:
                current = self.get(principal, policy_id)
                next_state("revoke", current.state, subject=f"policies/{policy_id}")
                raise DsbrokerError(f"policy {policy_id!r} changed meanwhile; try again", reason="CONCURRENT_CHANGE",
                                    policy=policy_id)
            return moved, notified
        except DsbrokerError as error:
            self._record(event="policy.revoke", decision="deny", grant_id=policy_id, reason=error.reason,
                         detail={"action": "revoke"}, **caller)
            raise

    def _verified(self, statement: str, stored: StoredPolicy, reason: str) -> Revocation:
        """The owner's revocation of ``stored`` in ``statement``; refused unless signed and about it."""
        bounded_text(statement, "statement", limit=MAX_STATEMENT_BYTES)
        reason = bounded_text(reason, "reason")
        if not statement.strip():
            raise DsbrokerError("a revocation needs the owner's signed statement (dsbroker policy revoke signs one "
                                "with your key)", reason="STATEMENT_REQUIRED", field="statement", policy=stored.id)
        if self.trust is None:
            raise DsbrokerError("the broker has no trust file, so it cannot verify the owner's statement",
                                reason="TRUST_NOT_CONFIGURED")
        revocation = verify_statement(statement, self.trust)
        if revocation.policy_id != stored.id or not revocation.covers(stored.version):
            raise DsbrokerError(f"the statement revokes {revocation.policy_id!r} {revocation.versions}, not "
                                f"{stored.id!r} v{stored.version}", reason="STATEMENT_MISMATCH",
                                field="statement", policy=stored.id)
        if reason and reason != revocation.reason:
            raise DsbrokerError("the reason differs from the one the owner signed", reason="STATEMENT_MISMATCH",
                                field="reason", policy=stored.id)
        return revocation

    def _keep(self, revocation: Revocation) -> bool:
        """Keep a verified statement in the store and as a file beside the policies; whether it was new."""
        added = self.store.add_statement(sha256=revocation.sha256, policy_id=revocation.policy_id,
                                         statement=revocation.text, at=_stamp(self.clock()))
        if self.statements_dir is not None:
            path = self.statements_dir / f"{revocation.policy_id}.{revocation.sha256[:16]}.json"
            if not path.exists():
                self.statements_dir.mkdir(parents=True, exist_ok=True)
                handle, temporary = tempfile.mkstemp(dir=self.statements_dir, prefix=".", suffix=".partial")
                with os.fdopen(handle, "w", encoding="utf-8") as file:
                    file.write(revocation.text + "\n")
                os.replace(temporary, path)
        return added

    def _enforce(self, policy_id: str, detail: dict | None = None) -> None:
        """Move ``policy_id`` to REVOKED when a kept statement covers its stored version and it is in force."""
        stored = self.store.get_policy(policy_id)
        if stored is None or stored.state not in REVOCABLE:
            return
        covering = [r for r in map(parse_statement, self.store.statements(policy_id)) if r.covers(stored.version)]
        if covering:
            self._move(stored, "revoke", reason=covering[0].reason, principal=None, client="", request_id="",
                       extra={"statement": covering[0].sha256, **(detail or {})})

    def policy(self, stored: StoredPolicy) -> Policy:
        """The parsed policy of a stored one (parsed once per document)."""
        with self._lock:
            policy = self._parsed.get(stored.sha256)
        if policy is None:
            policy = parse_policy(stored.document, source=f"policies/{stored.id}")
            with self._lock:
                if len(self._parsed) >= PARSED_POLICIES_KEPT:
                    self._parsed.pop(next(iter(self._parsed)))
                self._parsed[stored.sha256] = policy
        return policy

    def grant_for(self, grant_id: str, principal: Principal, now: dt.datetime) -> Policy:
        """The caller's usable grant ``grant_id``; GrantError otherwise.

        An unknown grant and another department's grant get the same answer; a name no grant can have
        is INVALID_ARGUMENT, without echoing it.
        """
        if not is_policy_id(grant_id):
            raise _grant_name_invalid()
        stored = self.store.get_policy(grant_id)
        check_holds_grant(principal, grant_id, stored.department if stored else None)
        stored = self._expired_if_past(stored, now)
        policy = self.policy(stored)
        check_grantee_district(policy, principal.district)
        today = now.astimezone(self.owner_timezone).date()
        if stored.state is not State.ACTIVE:
            raise _not_active(grant_id, f"grant {grant_id!r} is {stored.state.value}", stored.state.value)
        if not policy.is_valid_on(today):
            window = f"valid {policy.valid_from or '…'} to {policy.valid_until or '…'}"
            raise _not_active(grant_id, f"grant {grant_id!r} is not valid on {today.isoformat()} ({window})",
                              window)
        if self.reused_body_of(stored):
            raise _version_reused(stored)
        return policy

    def _expired_if_past(self, stored: StoredPolicy, now: dt.datetime) -> StoredPolicy:
        """``stored``, moved to EXPIRED first if it is active past its last valid day."""
        until = self.policy(stored).valid_until
        if stored.state is State.ACTIVE and until and now.astimezone(self.owner_timezone).date() > until:
            moved = self._move(stored, "expire", reason=f"validity ended on {until.isoformat()}", principal=None,
                               client="", request_id="")
            return moved or self.store.get_policy(stored.id) or stored
        return stored

    def exhausted(self, grant_id: str) -> None:
        """Move an active grant whose total quota is used up to EXHAUSTED."""
        stored = self.store.get_policy(grant_id)
        if stored is not None and stored.state is State.ACTIVE:
            self._move(stored, "exhaust", reason="its total query quota is used up", principal=None, client="",
                       request_id="")

    def get(self, principal: Principal, policy_id: str) -> StoredPolicy:
        """One policy the caller may see; NOT_FOUND otherwise (another department's reads as absent)."""
        stored = self.store.get_policy(policy_id)
        if stored is None or not may_see(principal, department=stored.department, district=stored.district):
            raise DsbrokerError(f"policy {policy_id!r} does not exist", reason="POLICY_NOT_FOUND",
                                policy=policy_id)
        return self._expired_if_past(stored, self.clock())

    def list(self, principal: Principal, *, after: str | None, limit: int) -> list[StoredPolicy]:
        """Policies the caller may see (broker.permissions), by id."""
        now = self.clock()
        return [self._expired_if_past(stored, now)
                for stored in self.store.list_policies(scope=scope_of(principal), after=after, limit=limit)]

    def change(self, principal: Principal, policy_id: str, action: str, *, reason: str, client: str,
               request_id: str) -> StoredPolicy:
        """The owner suspends or resumes a policy (a revocation needs a signed statement: :meth:`revoke`);
        every attempt is in the access log."""
        if action == "revoke":
            return self.revoke(principal, policy_id, statement="", reason=reason, client=client,
                               request_id=request_id)[0]
        caller = dict(principal=principal, client=client, request_id=request_id)
        try:
            require_role("owner", principal)
            text = bounded_text(reason, "reason")
            if action in ("suspend", "revoke") and not text:
                raise RequestFieldError(f"a reason is required to {action} a policy", reason="REASON_REQUIRED",
                                        field="reason")
            stored = self.get(principal, policy_id)
            moved = self._move(stored, action, reason=text, **caller)
            if moved is None:
                current = self.get(principal, policy_id)
                next_state(action, current.state, subject=f"policies/{policy_id}")
                raise DsbrokerError(f"policy {policy_id!r} changed meanwhile; try again", reason="CONCURRENT_CHANGE",
                                    policy=policy_id)
            return moved
        except DsbrokerError as error:
            self._record(event=f"policy.{action}", decision="deny", grant_id=policy_id, reason=error.reason,
                         detail={"action": action}, **caller)
            raise

    def _move(self, stored: StoredPolicy, action: str, *, reason: str, principal: Principal | None, client: str,
              request_id: str, extra: dict | None = None) -> StoredPolicy | None:
        target = next_state(action, stored.state, subject=f"policies/{stored.id}")
        moved = self.store.move_policy(stored, target, reason=reason, at=_stamp(self.clock()))
        if moved is not None:
            self._record(event=f"policy.{action}", decision="allow", principal=principal, client=client,
                         request_id=request_id, grant_id=stored.id, policy=stored, reason="",
                         detail={"from": stored.state.value, "to": target.value, "why": reason,
                                 "access_request": stored.request_id, **(extra or {})})
        return moved

    def _record(self, *, event: str, decision: str, principal: Principal | None, client: str, request_id: str,
                grant_id: str, reason: str, detail: dict, policy: StoredPolicy | None = None) -> None:
        self.access_log.append(AccessRecord(
            event=event, decision=decision, subject=principal.subject if principal else "dsbroker",
            department=principal.department if principal else "",
            token_id=principal.token_id if principal else "", client=client, request_id=request_id,
            grant_id=grant_id, policy_version=policy.version if policy else 0,
            policy_sha256=policy.sha256 if policy else "", reason=reason, detail=detail), now=self.clock())


def stored_policy_for(policy: Policy, *, request_id: str, at: dt.datetime, state_reason: str = "") -> StoredPolicy:
    """The store's record of a policy that comes into force (activated, or installed as a file)."""
    return StoredPolicy(id=policy.id, version=policy.version, state=State.ACTIVE, department=policy.department,
                        document=policy.document, sha256=policy.sha256, request_id=request_id,
                        state_reason=state_reason, updated_at=_stamp(at), district=policy.district or "")


def _statement_files(directory: Path) -> list[str]:
    """The statements in ``directory``'s ``*.json`` files (one a line); unreadable files are logged and skipped."""
    statements = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        try:
            statements += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            log.warning("cannot read owner statement file %s (%s)", path, error.__class__.__name__)
    return statements


def grant_id_of(name: str) -> str:
    """The id in a grant's resource name, ``policies/{id}``; GRANT_NAME_INVALID (without echoing it) for anything
    else, a bare id included."""
    grant_id = name.removeprefix(f"{POLICIES}/")
    if grant_id == name or not is_policy_id(grant_id):
        raise _grant_name_invalid()
    return grant_id


def _grant_name_invalid() -> GrantError:
    return GrantError("policy must name a grant: policies/ and 2 to 63 lower-case letters, digits and dashes",
                      reason="GRANT_NAME_INVALID",
                      details=[error_details_pb2.BadRequest(field_violations=[
                          error_details_pb2.BadRequest.FieldViolation(
                              field="policy", description="a grant's name such as policies/xuanwu-fgw-2026-007")])])


def _not_active(grant_id: str, message: str, description: str) -> GrantError:
    return GrantError(message, reason="GRANT_NOT_ACTIVE", grant=grant_id,
                      details=[error_details_pb2.PreconditionFailure(violations=[
                          error_details_pb2.PreconditionFailure.Violation(
                              type="GRANT_STATE", subject=f"{POLICIES}/{grant_id}", description=description)])])


def _version_reused(stored: StoredPolicy) -> GrantError:
    return GrantError(f"grant {stored.id!r} v{stored.version} is reused: the owner signed another body of that "
                      "version, which the broker did not install; no query runs under it until the owner signs the "
                      "change as a new version", reason="POLICY_VERSION_REUSED", policy=stored.id,
                      version=stored.version,
                      details=[error_details_pb2.PreconditionFailure(violations=[
                          error_details_pb2.PreconditionFailure.Violation(
                              type="POLICY_STANDING", subject=f"{POLICIES}/{stored.id}",
                              description="POLICY_VERSION_REUSED")])])


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
