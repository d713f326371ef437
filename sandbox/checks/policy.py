"""The sandbox's own check of each plan's policy: signed by keys the owner trusts, and matching the plan.

The broker is honest but curious and may be broken: the sandbox does not take its word for the
policy. It verifies the approvals of the policy document the plan carries, keeps the owner's
statements the plan carries, then checks that the plan names that policy (id and version), reads
that policy's dataset, that the owner has neither revoked nor superseded that version (see
:mod:`sandbox.checks.policy_standing`), and that it runs within its validity.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from typing import Callable

from dsbroker.errors import DsbrokerError
from dsbroker.policy.model import Policy
from dsbroker.policy.signing import Trust, verify_policy
from sandbox.checks.policy_standing import PolicyStanding
from sandbox.v1 import sandbox_service_pb2 as pb

VERIFIED_POLICIES_KEPT = 256


class PlanPolicyChecker:
    """Verifies the policy a plan carries and that the plan stays within it."""

    def __init__(self, trust: Trust, *, standing: PolicyStanding, owner_timezone: dt.tzinfo,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        """``standing`` holds what the owner has revoked and the newest version of each policy seen."""
        self.trust = trust
        self.standing = standing
        self.owner_timezone = owner_timezone
        self.clock = clock
        self._verified: dict[str, Policy] = {}
        self._lock = threading.Lock()

    def check(self, plan: pb.Plan) -> Policy:
        """The verified policy of ``plan``; raises DsbrokerError when it does not verify or does not match."""
        if not plan.policy_document:
            raise DsbrokerError("the plan carries no signed policy", reason="POLICY_SIGNATURE_INVALID",
                                policy=plan.policy_id)
        policy = self._verify(plan.policy_document)
        if plan.policy_statements:
            self.standing.accept_statements(plan.policy_statements, source="plan")
        if (policy.id, policy.version) != (plan.policy_id, plan.policy_version):
            raise _mismatch("the plan names another policy than the one it carries", plan)
        if policy.dataset != plan.dataset:
            raise _mismatch("the plan reads a dataset its policy does not cover", plan)
        self.standing.check(policy)
        if not policy.is_valid_on(self.clock().astimezone(self.owner_timezone).date()):
            raise DsbrokerError(f"policy {policy.id!r} is not valid today", reason="GRANT_NOT_ACTIVE",
                                policy=policy.id)
        return policy

    def _verify(self, document: str) -> Policy:
        digest = hashlib.sha256(document.encode("utf-8")).hexdigest()
        policy = self._verified.get(digest)
        if policy is None:
            policy = verify_policy(document, self.trust, source="<plan policy>")
            with self._lock:
                if len(self._verified) >= VERIFIED_POLICIES_KEPT:
                    self._verified.pop(next(iter(self._verified)))
                self._verified[digest] = policy
        return policy


def _mismatch(message: str, plan: pb.Plan) -> DsbrokerError:
    return DsbrokerError(message, reason="PLAN_POLICY_MISMATCH", policy=plan.policy_id, table=plan.dataset)
