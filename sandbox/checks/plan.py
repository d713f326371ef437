"""The sandbox's own guard: it re-runs the guard on the requester's SQL for the caller the identity
provider vouches for, and runs a plan only if the guard would have produced exactly that SQL.

The broker is honest but curious and may be broken or hostile. Without this check it could send
any SELECT under a valid signed policy (drop the threshold, bind another district, read raw rows).
The plan carries the requester's original SQL and bearer token; the sandbox verifies the token
against the identity provider's keys itself, checks that its department and district are the policy's
grantee's, binds the row filter to that district, and compares. Accepted plans are cached like the broker's.

The plan also carries the client certificate the broker authenticated the requester's call with.
A certificate-bound token (``cnf``) is held to it; with a requester CA configured, the certificate
must be a client certificate from that CA. The sandbox never sees the requester's TLS session, so
this proves that the broker forwards a token together with the certificate it is bound to, not that
the requester is on the line: a broker that captured both can replay them within the token's lifetime.
"""

from __future__ import annotations

from dataclasses import dataclass

import time

from dsbroker.identity.auth import Authenticator, Principal
from dsbroker.errors import AuthenticationError, DsbrokerError, PlanRefused
from dsbroker.guard import SCHEMA_RULES, GuardedQuery, guard
from dsbroker.guard.plan_cache import PlanCache
from dsbroker.policy.model import Policy, check_grantee_district
from dsbroker.policy.product_binding import product_query
from dsbroker.identity.tls import CertificateAuthorities, PeerCertificate, certificate_from_der
from sandbox.v1 import sandbox_service_pb2 as pb


@dataclass(frozen=True)
class CheckedPlan:
    """A plan the guard would have made, and who asked for it."""

    guarded: GuardedQuery
    caller: Principal
    # The caller's client certificate as the plan carries it (None when it carries none), and whether it
    # chains to the configured requester CA.
    certificate: PeerCertificate | None
    certified: bool


class PlanGuardChecker:
    """Checks that a plan's SQL is the guard's output for its caller and original SQL."""

    def __init__(self, authenticator: Authenticator, *, engine_dialect: str = "duckdb",
                 requester_ca: CertificateAuthorities | None = None,
                 column_types: dict[str, dict[str, str]] | None = None) -> None:
        """``requester_ca``: the CA of requesters' client certificates; a plan's certificate must chain to it.
        ``column_types`` are the engine's, per served table: the guard's type rules check every plan against
        them (the broker may have lacked them)."""
        self.authenticator = authenticator
        self.engine_dialect = engine_dialect
        self.requester_ca = requester_ca
        self.column_types = column_types or {}
        self.plans = PlanCache()

    def check(self, plan: pb.Plan, policy: Policy, *, deadline: float | None = None) -> CheckedPlan:
        """The guard's plan for ``plan``'s caller and SQL; PlanRefused when ``plan.sql`` is anything else.

        A refusal by a rule that needs the engine's types, or for time, is passed on as the guard gave it:
        the broker may not have had the types, and the caller should learn why as if it had."""
        certificate, certified = self._certificate(plan, policy)
        try:
            caller = self.authenticator.authenticate(plan.caller_token, certificate=certificate)
        except AuthenticationError as error:
            raise PlanRefused(f"the plan's caller token does not verify ({error.reason})", reason="PLAN_CALLER_INVALID",
                              policy=policy.id, token_reason=error.reason) from None
        if caller.department != policy.department or "requester" not in caller.roles:
            raise PlanRefused("the plan's caller is not a requester of the policy's grantee department",
                              reason="PLAN_CALLER_INVALID", policy=policy.id)
        check_grantee_district(policy, caller.district)  # as the broker checks it: the row filter binds to it
        if plan.HasField("product"):  # bound again from the signed policy: the broker's text counts for nothing
            if product_query(policy, plan.product) != plan.original_sql:
                raise PlanRefused("the plan's original SQL is not the signed policy's product with its parameters "
                                  "bound", reason="PRODUCT_TEMPLATE_MISMATCH", policy=policy.id,
                                  product=plan.product.name[:80])
        elif policy.products_only:  # a broker that sends a product's bound text as SQL of the caller's own
            raise PlanRefused("the plan runs SQL of the caller's own under a grant that answers only its products",
                              reason="AD_HOC_QUERY_NOT_GRANTED", grant=policy.id)
        encrypted = plan.HasField("encryption")
        try:
            guarded = self.plans.get_or_build(
                policy, caller.district, caller.department, plan.original_sql,
                lambda: guard(plan.original_sql, policy, district=caller.district, department=caller.department,
                              engine_dialect=self.engine_dialect, encrypted=encrypted,
                              column_types=self.column_types, deadline=deadline, clock=time.monotonic),
                encrypted=encrypted, dialect=self.engine_dialect)
        except DsbrokerError as error:
            if error.metadata.get("rule") in SCHEMA_RULES or error.reason in ("GUARD_TIMEOUT", "SQL_TOO_LARGE"):
                raise
            raise PlanRefused("the guard refuses the plan's original SQL", policy=policy.id,
                              rule=error.metadata.get("rule"), guard_reason=error.reason) from None
        if guarded.sql != plan.sql:
            raise PlanRefused("the plan's SQL is not what the guard makes of the original SQL for this caller",
                              policy=policy.id)
        return CheckedPlan(guarded, caller, certificate, certified)

    def _certificate(self, plan: pb.Plan, policy: Policy) -> tuple[PeerCertificate | None, bool]:
        """The caller's certificate the plan carries, and whether the requester CA certifies it."""
        if not plan.caller_certificate:
            return None, False
        try:
            certificate = certificate_from_der(plan.caller_certificate)
        except ValueError:
            raise PlanRefused("the plan's caller certificate is not an X.509 certificate", reason="PLAN_CALLER_INVALID",
                              policy=policy.id, token_reason="CERTIFICATE_INVALID") from None
        if self.requester_ca is None:
            return certificate, False
        if not self.requester_ca.certifies(certificate):
            raise PlanRefused("the plan's caller certificate is not a valid client certificate of the requester CA",
                              reason="PLAN_CALLER_INVALID", policy=policy.id, token_reason="CERTIFICATE_UNTRUSTED")
        return certificate, True
