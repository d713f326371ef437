"""Finding the caller's grant: a grant of another department is reported as not found."""

from __future__ import annotations

import datetime as dt

import grpc

from broker.auth import Principal
from broker.errors import GrantError
from broker.policy import Policy


def grant_for(policies: dict[str, Policy], grant_id: str, principal: Principal, today: dt.date) -> Policy:
    """The caller's active grant ``grant_id``; raises GrantError otherwise.

    An unknown grant and another department's grant get the same answer.
    """
    policy = policies.get(grant_id)
    if policy is None or policy.department != principal.department:
        raise GrantError(f"grant {grant_id!r} does not exist for department {principal.department!r}",
                         grant=grant_id)
    if "requester" not in principal.roles:
        raise GrantError("querying requires the requester role", reason="ROLE_REQUIRED", role="requester")
    if not policy.is_valid_on(today):
        raise GrantError(f"grant {grant_id!r} is not valid on {today.isoformat()} "
                         f"(valid {policy.valid_from or '…'} to {policy.valid_until or '…'})",
                         reason="GRANT_NOT_ACTIVE", code=grpc.StatusCode.FAILED_PRECONDITION, grant=grant_id)
    return policy
