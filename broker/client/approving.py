"""Client-side approval: an approver signs the drafted (or, for the owner, narrowed) policy on their
own machine with their own key, and sends only the signed document. The broker never sees a key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.workflow.policy_draft import narrow_policy
from dsbroker.policy.signing import APPROVALS_HEADER, Approval, sign_policy
from broker.v1 import access_request_service_pb2 as pb


@dataclass(frozen=True)
class Narrowing:
    """What the owner takes away from a draft when approving it."""

    drop_columns: tuple[str, ...] = ()
    min_entities: int | None = None
    valid_until: dt.date | None = None
    queries_per_day: int | None = None
    queries_total: int | None = None


def sign_approval(request: pb.AccessRequest, private_key: ed25519.Ed25519PrivateKey, *, key_id: str, role: str,
                  by: str, narrowing: Narrowing = Narrowing(), at: dt.datetime | None = None) -> str:
    """The policy document that approves ``request`` at its current stage: the draft (narrowed, if the
    owner asks), the approvals so far, and this approver's signature."""
    return sign_policy(unsigned_document(request, narrowing), private_key, key_id=key_id, role=role, by=by, at=at)


def unsigned_document(request: pb.AccessRequest, narrowing: Narrowing = Narrowing()) -> str:
    """What the next approver of ``request`` signs: its draft (narrowed, if the owner asks) and the approvals so far."""
    body = request.draft_policy
    if narrowing != Narrowing():
        body = narrow_policy(body, drop_columns=narrowing.drop_columns, min_entities=narrowing.min_entities,
                             valid_until=narrowing.valid_until, queries_per_day=narrowing.queries_per_day,
                             queries_total=narrowing.queries_total)
    document = body
    if request.approvals:
        document += APPROVALS_HEADER + "".join(
            Approval(a.role, a.by, a.key, a.signed_at, a.signature).render() for a in request.approvals)
    return document
