"""The policies the broker serves and where each stands; the owner's suspend, resume and revoke.

Policies come from two places: files an operator installs in the policies directory, and the
owner's final approval of an access request. Both are recorded in the store, which holds each
policy's state; the store is what every query consults, so a suspension or revocation takes effect
on the next query, on every broker replica. A policy past its validity is moved to EXPIRED the
first time a query finds it so.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path
from typing import Callable

import grpc
from google.rpc import error_details_pb2

from broker.access_log import AccessLog, AccessRecord
from broker.auth import Principal, require_role
from broker.errors import DsbrokerError, GrantError
from broker.policy import Policy, check_grantee_district, is_policy_id, load_policies, parse_policy
from broker.request_states import State, next_state
from broker.store import Store, StoredPolicy
from broker.visibility import may_see, scope_of

log = logging.getLogger(__name__)
PARSED_POLICIES_KEPT = 1024


class PolicyRegistry:
    """Looks up a caller's policy for a query, and moves policies between states for the owner."""

    def __init__(self, store: Store, access_log: AccessLog, *, owner_timezone: dt.tzinfo,
                 clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.access_log = access_log
        self.owner_timezone = owner_timezone
        self.clock = clock
        self._parsed: dict[str, Policy] = {}
        self._lock = threading.Lock()

    def install_files(self, directory: str | Path) -> int:
        """Record the policy files of ``directory`` in the store.

        A new id is stored as ACTIVE; a higher version of a known id replaces its document and keeps
        its state (a revoked policy stays revoked); a file that is not newer than the stored policy
        changes nothing.
        """
        policies = load_policies(directory)
        for policy in policies.values():
            now = self.clock()
            stored = self.store.register_policy(stored_policy_for(policy, request_id=policy.request or "", at=now,
                                                                  state_reason="installed as a file"))
            if stored.sha256 == policy.sha256:
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
        return len(policies)

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
            raise GrantError("grant must be a grant's id: 2 to 63 lower-case letters, digits and dashes",
                             reason="GRANT_NAME_INVALID", code=grpc.StatusCode.INVALID_ARGUMENT,
                             details=[error_details_pb2.BadRequest(field_violations=[
                                 error_details_pb2.BadRequest.FieldViolation(
                                     field="grant", description="a grant id such as xuanwu-fgw-2026-007")])])
        stored = self.store.get_policy(grant_id)
        if stored is None or stored.department != principal.department:
            raise GrantError(f"grant {grant_id!r} does not exist for department {principal.department!r}",
                             grant=grant_id)
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
                                code=grpc.StatusCode.NOT_FOUND, policy=policy_id)
        return self._expired_if_past(stored, self.clock())

    def list(self, principal: Principal, *, after: str | None, limit: int) -> list[StoredPolicy]:
        """Policies the caller may see (broker.visibility), by id."""
        now = self.clock()
        return [self._expired_if_past(stored, now)
                for stored in self.store.list_policies(scope=scope_of(principal), after=after, limit=limit)]

    def change(self, principal: Principal, policy_id: str, action: str, *, reason: str, client: str,
               request_id: str) -> StoredPolicy:
        """The owner suspends, resumes or revokes a policy; every attempt is in the access log."""
        caller = dict(principal=principal, client=client, request_id=request_id)
        try:
            require_role("owner", principal)
            if action in ("suspend", "revoke") and not reason.strip():
                raise DsbrokerError(f"a reason is required to {action} a policy", reason="REASON_REQUIRED",
                                    code=grpc.StatusCode.INVALID_ARGUMENT, field="reason")
            stored = self.get(principal, policy_id)
            moved = self._move(stored, action, reason=reason.strip(), **caller)
            if moved is None:
                current = self.get(principal, policy_id)
                next_state(action, current.state, subject=f"policies/{policy_id}")
                raise DsbrokerError(f"policy {policy_id!r} changed meanwhile; try again", reason="CONCURRENT_CHANGE",
                                    code=grpc.StatusCode.ABORTED, policy=policy_id)
            return moved
        except DsbrokerError as error:
            self._record(event=f"policy.{action}", decision="deny", grant_id=policy_id, reason=error.reason,
                         detail={"action": action}, **caller)
            raise

    def _move(self, stored: StoredPolicy, action: str, *, reason: str, principal: Principal | None, client: str,
              request_id: str) -> StoredPolicy | None:
        target = next_state(action, stored.state, subject=f"policies/{stored.id}")
        moved = self.store.move_policy(stored, target, reason=reason, at=_stamp(self.clock()))
        if moved is not None:
            self._record(event=f"policy.{action}", decision="allow", principal=principal, client=client,
                         request_id=request_id, grant_id=stored.id, policy=stored, reason="",
                         detail={"from": stored.state.value, "to": target.value, "why": reason,
                                 "access_request": stored.request_id})
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


def _not_active(grant_id: str, message: str, description: str) -> GrantError:
    return GrantError(message, reason="GRANT_NOT_ACTIVE", code=grpc.StatusCode.FAILED_PRECONDITION, grant=grant_id,
                      details=[error_details_pb2.PreconditionFailure(violations=[
                          error_details_pb2.PreconditionFailure.Violation(
                              type="GRANT_STATE", subject=f"grants/{grant_id}", description=description)])])


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
