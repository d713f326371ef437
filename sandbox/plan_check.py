"""The sandbox's own guard: it re-runs the guard on the requester's SQL for the caller the identity
provider vouches for, and runs a plan only if the guard would have produced exactly that SQL.

The broker is honest but curious and may be broken or hostile. Without this check it could send
any SELECT under a valid signed policy (drop the threshold, bind another district, read raw rows).
The plan carries the requester's original SQL and bearer token; the sandbox verifies the token
against the identity provider's keys itself, checks that its department is the policy's grantee,
binds the row filter to its district, and compares. Accepted plans are cached like the broker's.
"""

from __future__ import annotations

import grpc

import time

from broker.auth import Authenticator
from broker.errors import AuthenticationError, DsbrokerError
from broker.guard import SCHEMA_RULES, GuardedQuery, guard
from broker.plan_cache import PlanCache
from broker.policy import Policy
from sandbox.v1 import sandbox_service_pb2 as pb


class PlanRefused(DsbrokerError):
    """Raised when a plan is not what the guard makes of the requester's SQL for the requester."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PLAN_NOT_GUARDED"


class PlanGuardChecker:
    """Checks that a plan's SQL is the guard's output for its caller and original SQL."""

    def __init__(self, authenticator: Authenticator, *, engine_dialect: str = "duckdb",
                 column_types: dict[str, dict[str, str]] | None = None) -> None:
        """``column_types`` are the engine's, per served table: the guard's type rules check every plan against
        them (the broker may have lacked them)."""
        self.authenticator = authenticator
        self.engine_dialect = engine_dialect
        self.column_types = column_types or {}
        self.plans = PlanCache()

    def check(self, plan: pb.Plan, policy: Policy, *, deadline: float | None = None) -> GuardedQuery:
        """The guard's plan for ``plan``'s caller and SQL; PlanRefused when ``plan.sql`` is anything else.

        A refusal by a rule that needs the engine's types, or for time, is passed on as the guard gave it:
        the broker may not have had the types, and the caller should learn why as if it had."""
        try:
            caller = self.authenticator.authenticate(plan.caller_token, certificate=None)
        except AuthenticationError as error:
            raise PlanRefused(f"the plan's caller token does not verify ({error.reason})", reason="PLAN_CALLER_INVALID",
                              policy=policy.id, token_reason=error.reason) from None
        if caller.department != policy.department or "requester" not in caller.roles:
            raise PlanRefused("the plan's caller is not a requester of the policy's grantee department",
                              reason="PLAN_CALLER_INVALID", policy=policy.id)
        encrypted = plan.HasField("encryption")
        try:
            guarded = self.plans.get_or_build(
                policy, caller.district, caller.department, plan.original_sql,
                lambda: guard(plan.original_sql, policy, district=caller.district, department=caller.department,
                              engine_dialect=self.engine_dialect, encrypted=encrypted,
                              column_types=self.column_types, deadline=deadline, clock=time.monotonic),
                encrypted=encrypted)
        except DsbrokerError as error:
            if error.metadata.get("rule") in SCHEMA_RULES or error.reason in ("GUARD_TIMEOUT", "SQL_TOO_LARGE"):
                raise
            raise PlanRefused("the guard refuses the plan's original SQL", policy=policy.id,
                              rule=error.metadata.get("rule"), guard_reason=error.reason) from None
        if guarded.sql != plan.sql:
            raise PlanRefused("the plan's SQL is not what the guard makes of the original SQL for this caller",
                              policy=policy.id)
        return guarded
