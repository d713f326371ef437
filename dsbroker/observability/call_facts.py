"""What one call's log line and metrics say about it, gathered while it runs.

The observing interceptor (:mod:`dsbroker.observability.observing`) sits outside every other one, so it
cannot read the context variables the inner ones set and reset (the request id, the principal). Each
part that learns something the line reports notes it here instead, through :func:`note_call`: the
conventions interceptor the request id, authentication the caller, the query pipeline or the sandbox's
executor the grant and the decision, the error interceptor the reason. Outside a call it does nothing.
"""

from __future__ import annotations

import contextvars
from dataclasses import asdict, dataclass

from dsbroker.policy.model import is_policy_id


@dataclass
class CallFacts:
    """One call, as its log line reports it. Never SQL, a value or a token: only names, codes and times."""

    method: str
    request_id: str = ""
    caller: str = ""  # the verified subject (on the sandbox, the requester whose token the plan carries)
    department: str = ""
    grant: str = ""
    decision: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        """The facts as the log line's fields."""
        return asdict(self)


current_call: contextvars.ContextVar[CallFacts | None] = contextvars.ContextVar("call_facts", default=None)


def note_call(**facts: str) -> None:
    """Note ``facts`` (fields of :class:`CallFacts`) about the call being served; outside one, nothing."""
    call = current_call.get()
    if call is not None:
        for name, value in facts.items():
            setattr(call, name, value)



def logged_grant(name: str) -> str:
    """``name`` (a grant's id as a request or a plan gives it) where it can name a grant, else empty: the
    caller (or a broker) writes it, and the line promises no SQL, no value and one line; a name that is no
    policy id could hold any of them (the access log keeps what was asked, for its auditors)."""
    return name if is_policy_id(name) else ""
