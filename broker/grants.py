"""Finding the caller's grant: a grant of another department is reported as not found."""

from __future__ import annotations

import datetime as dt

import grpc
from google.rpc import error_details_pb2

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
    if not policy.is_valid_on(today):
        window = f"valid {policy.valid_from or '…'} to {policy.valid_until or '…'}"
        raise GrantError(f"grant {grant_id!r} is not valid on {today.isoformat()} ({window})",
                         reason="GRANT_NOT_ACTIVE", code=grpc.StatusCode.FAILED_PRECONDITION, grant=grant_id,
                         details=[error_details_pb2.PreconditionFailure(violations=[
                             error_details_pb2.PreconditionFailure.Violation(
                                 type="GRANT_VALIDITY", subject=f"grants/{grant_id}", description=window)])])
    return policy
