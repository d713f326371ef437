"""The sandbox encrypts only under a key the caller bound to its query (see dsbroker/identity/key_binding.py).

A broker that puts its own public context into a plan would otherwise receive cells it can decrypt.
The sandbox therefore requires the requester's signature over the key id and the query, made with the
key of a certificate that is the caller's own: the one the token is bound to (``cnf`` thumbprint), or
one from the requester CA whose common name is the token's subject. A broker holds the requesters'
certificates but not their private keys, so it can neither sign for its own key nor pass off its own
certificate as a requester's.
"""

from __future__ import annotations

from dsbroker.errors import KeyNotBound
from dsbroker.identity.key_binding import verify_key_binding
from sandbox.checks.plan import CheckedPlan
from sandbox.v1 import sandbox_service_pb2 as pb


def check_key_binding(plan: pb.Plan, key_id: str, checked: CheckedPlan) -> None:
    """Refuse ``plan`` unless its caller signed ``key_id`` for it with its own certificate's key."""
    certificate, caller = checked.certificate, checked.caller
    if certificate is None:
        raise KeyNotBound("the plan carries no caller certificate, so the encryption key cannot be checked as the "
                          "caller's", policy=plan.policy_id)
    bound = bool(caller.certificate_thumbprint) and caller.certificate_thumbprint == certificate.thumbprint
    named = checked.certified and certificate.common_name == caller.subject
    if not (bound or named):
        raise KeyNotBound("the plan's certificate is not the caller's: encrypted queries need a token bound to it "
                          "(cnf) or, with requester_ca set, a certificate whose common name is the token's subject",
                          policy=plan.policy_id)
    if not verify_key_binding(certificate.der, plan.encryption.key_signature, key_id=key_id, grant=plan.policy_id,
                              sql=plan.original_sql, token=plan.caller_token):
        raise KeyNotBound("the encryption key is not one the caller signed for this query", policy=plan.policy_id,
                          key_id=key_id)
