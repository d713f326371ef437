"""The access request's state machine: which action moves which state where.

    SUBMITTED ─approve─▶ REVIEWED ─approve (owner)─▶ ACTIVE ─suspend─▶ SUSPENDED ─resume─▶ ACTIVE
        │                   │                          │  └─revoke / expire / exhaust─▶ REVOKED / EXPIRED / EXHAUSTED
        └─reject / withdraw─┴─▶ REJECTED / WITHDRAWN

State is never set directly: it moves only through :func:`next_state`, and a move the table does
not list is FAILED_PRECONDITION with reason STATE_TRANSITION_INVALID.
"""

from __future__ import annotations

import enum

from google.rpc import error_details_pb2

from dsbroker.errors import TransitionError


class State(str, enum.Enum):
    """Where a request (and, once active, its policy) stands."""

    SUBMITTED = "SUBMITTED"
    REVIEWED = "REVIEWED"
    ACTIVE = "ACTIVE"
    REJECTED = "REJECTED"
    WITHDRAWN = "WITHDRAWN"
    SUSPENDED = "SUSPENDED"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    EXHAUSTED = "EXHAUSTED"


S = State
# action -> {from state: to state}. "approve" moves to REVIEWED at a review stage; "activate" is the
# owner's final approval (from SUBMITTED only when the dataset needs no reviewer stage).
TRANSITIONS: dict[str, dict[State, State]] = {
    "approve": {S.SUBMITTED: S.REVIEWED, S.REVIEWED: S.REVIEWED},
    "activate": {S.SUBMITTED: S.ACTIVE, S.REVIEWED: S.ACTIVE},
    "reject": {S.SUBMITTED: S.REJECTED, S.REVIEWED: S.REJECTED},
    "withdraw": {S.SUBMITTED: S.WITHDRAWN, S.REVIEWED: S.WITHDRAWN},
    "suspend": {S.ACTIVE: S.SUSPENDED},
    "resume": {S.SUSPENDED: S.ACTIVE},
    "revoke": {S.ACTIVE: S.REVOKED, S.SUSPENDED: S.REVOKED},
    "expire": {S.ACTIVE: S.EXPIRED, S.SUSPENDED: S.EXPIRED},
    "exhaust": {S.ACTIVE: S.EXHAUSTED},
}
PENDING = (S.SUBMITTED, S.REVIEWED)


def next_state(action: str, state: State, *, subject: str) -> State:
    """The state ``action`` moves ``state`` to; TransitionError (naming ``subject``) when it may not."""
    target = TRANSITIONS[action].get(state)
    if target is None:
        allowed = sorted(s.value for s in TRANSITIONS[action])
        raise TransitionError(
            f"cannot {action} {subject}: it is {state.value} (allowed from {', '.join(allowed)})",
            state=state.value, action=action, details=[error_details_pb2.PreconditionFailure(violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="STATE", subject=subject, description=f"{state.value} does not allow {action}")])])
    return target
