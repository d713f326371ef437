"""The sandbox's own guard: it re-runs the guard on the requester's SQL for the caller the identity
provider vouches for, and runs a plan only if the guard would have produced exactly that SQL.

The broker is honest but curious and may be broken or hostile. Without this check it could send
any SELECT under a valid signed policy (drop the threshold, bind another district, read raw rows).
The plan carries the requester's original SQL and bearer token; the sandbox verifies the token
against the identity provider's keys itself, checks that its department and district are the policy's
grantee's, binds the row filter to that district, and compares. Accepted plans are cached like the broker's.
"""

from __future__ import annotations

import grpc

from broker.auth import Authenticator
from broker.errors import AuthenticationError, DsbrokerError
from broker.guard import GuardedQuery, guard
from broker.plan_cache import PlanCache
from broker.policy import Policy, check_grantee_district
from sandbox.v1 import sandbox_service_pb2 as pb


class PlanRefused(DsbrokerError):
    """Raised when a plan is not what the guard makes of the requester's SQL for the requester."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PLAN_NOT_GUARDED"


class PlanGuardChecker:
    """Checks that a plan's SQL is the guard's output for its caller and original SQL."""

    def __init__(self, authenticator: Authenticator, *, engine_dialect: str = "duckdb") -> None:
        self.authenticator = authenticator
        self.engine_dialect = engine_dialect
        self.plans = PlanCache()

    def check(self, plan: pb.Plan, policy: Policy) -> GuardedQuery:
        """The guard's plan for ``plan``'s caller and SQL; PlanRefused when ``plan.sql`` is anything else."""
        try:
            caller = self.authenticator.authenticate(plan.caller_token, certificate=None)
        except AuthenticationError as error:
            raise PlanRefused(f"the plan's caller token does not verify ({error.reason})", reason="PLAN_CALLER_INVALID",
                              policy=policy.id, token_reason=error.reason) from None
        if caller.department != policy.department or "requester" not in caller.roles:
            raise PlanRefused("the plan's caller is not a requester of the policy's grantee department",
                              reason="PLAN_CALLER_INVALID", policy=policy.id)
        check_grantee_district(policy, caller.district)  # as the broker checks it: the row filter binds to it
        encrypted = plan.HasField("encryption")
        try:
            guarded = self.plans.get_or_build(
                policy, caller.district, caller.department, plan.original_sql,
                lambda: guard(plan.original_sql, policy, district=caller.district, department=caller.department,
                              engine_dialect=self.engine_dialect, encrypted=encrypted), encrypted=encrypted)
        except DsbrokerError as error:
            raise PlanRefused("the guard refuses the plan's original SQL", policy=policy.id,
                              rule=error.metadata.get("rule"), guard_reason=error.reason) from None
        if guarded.sql != plan.sql:
            raise PlanRefused("the plan's SQL is not what the guard makes of the original SQL for this caller",
                              policy=policy.id)
        return guarded
