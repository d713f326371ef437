"""Who may do what on the broker: every permission decision, in one place, in the order it is made.

A call is decided in this order; the first check that fails answers it.

1. **Authenticated.** :class:`dsbroker.identity.auth.AuthInterceptor` admits only a verified token
   (UNAUTHENTICATED otherwise); every check below reads the :class:`Principal` it set.
2. **The role the call needs** (:func:`require_role`, PERMISSION_DENIED ``ROLE_REQUIRED``): a requester
   queries, explains, files and withdraws requests; an auditor reads the access log; the owner suspends,
   resumes and revokes policies; each approval stage needs its own role (:func:`check_may_approve`).
3. **Seeing the object** (:func:`may_see`, :func:`scope_of`), evaluated in this order, the first that
   applies deciding:

   a. An **owner** or an **auditor** sees every request and every policy: the owner approves and holds
      them all, the auditor checks them all.
   b. Anyone sees their **own department's** requests and policies.
   c. A **reviewer** also sees those of its **own district**: a request by the district it was filed
      from, a policy by its grantee's district (``grantee.district``). A reviewer whose token names no
      district sees no district's, and a policy that names no district is seen by no reviewer of
      another department.
   d. Nobody sees anything else, and what one may not see reads exactly as what does not exist
      (NOT_FOUND, or absent from a list).

4. **The caller's relation to the object:**

   - a grant is used only by its own department (:func:`check_holds_grant`; another department's grant
     reads as absent), and only from its grantee district (``dsbroker.policy.model.check_grantee_district``,
     which the sandbox checks again for itself);
   - a request is withdrawn only by the department that filed it (:func:`check_may_withdraw`);
   - a request is approved at its current stage by that stage's role, and rejected by it or by the owner;
     an approver of a later stage is told the request has not reached it; and nobody reviews their own
     department's request (:func:`check_may_approve`, :func:`check_may_reject`);
   - the guard's dry run of a request's example queries is shown to reviewers and owners only
     (:func:`sees_example_checks`).

What the grant then allows a query to ask is the guard's to decide (``dsbroker.guard``), not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from dsbroker.errors import DsbrokerError, GrantError, RoleError
from dsbroker.identity.auth import Principal, require_principal

SEEING_ALL = frozenset({"owner", "auditor"})
SEEING_EXAMPLE_CHECKS = frozenset({"reviewer", "owner"})


def require_role(role: str, principal: Principal | None = None) -> Principal:
    """The caller (of the current RPC by default), who must hold ``role``; PERMISSION_DENIED otherwise."""
    principal = principal or require_principal()
    if role not in principal.roles:
        raise RoleError(f"this call requires the {role} role", role=role)
    return principal


@dataclass(frozen=True)
class Scope:
    """What a caller may see as a filter: everything, or rows of ``department`` or of ``district``."""

    everything: bool = False
    department: str | None = None
    district: str | None = None

    def admits(self, department: str, district: str | None) -> bool:
        """Whether a request or policy of ``department`` and ``district`` is within the scope."""
        return self.everything or department == self.department or bool(
            self.district and district and district == self.district)


def scope_of(principal: Principal) -> Scope:
    """Rule 3 for ``principal``, as a filter for lists."""
    if principal.roles & SEEING_ALL:
        return Scope(everything=True)
    district = principal.district if "reviewer" in principal.roles and principal.district else None
    return Scope(department=principal.department, district=district)


def may_see(principal: Principal, *, department: str, district: str | None) -> bool:
    """Whether ``principal`` may see the request or policy of ``department`` and ``district``."""
    return scope_of(principal).admits(department, district)


def check_holds_grant(principal: Principal, grant_id: str, department: str | None) -> None:
    """The grant ``grant_id`` (of ``department``, None when there is none) is the caller's department's;
    GrantError otherwise, the same for an unknown grant and another department's."""
    if department is None or department != principal.department:
        raise GrantError(f"grant {grant_id!r} does not exist for department {principal.department!r}",
                         grant=grant_id)


def check_may_withdraw(principal: Principal, *, department: str) -> None:
    """Only the department that filed a request withdraws it (the requester role is rule 2's)."""
    if department != principal.department:
        raise RoleError("only the requesting department may withdraw a request", role="requester")


def check_may_approve(principal: Principal, *, request_id: str, department: str, stages: Sequence[str],
                      done: int) -> str:
    """The caller may approve at the current stage (``stages[done]``), which is returned."""
    stage = stages[done]
    if stage not in principal.roles and set(stages[done + 1:]) & principal.roles:
        raise DsbrokerError(f"the request awaits the {stage} stage before yours", reason="STAGE_NOT_REACHED",
                            access_request=request_id, stage=stage)
    require_role(stage, principal)
    _not_own_department(principal, request_id=request_id, department=department)
    return stage


def check_may_reject(principal: Principal, *, request_id: str, department: str, stage: str) -> None:
    """The current stage's role, or the owner, may reject a request; never its own department."""
    if stage not in principal.roles and "owner" not in principal.roles:
        raise RoleError(f"this stage is the {stage}'s", role=stage)
    _not_own_department(principal, request_id=request_id, department=department)


def sees_example_checks(principal: Principal) -> bool:
    """Whether the guard's dry run of a request's example queries is shown to ``principal``."""
    return bool(principal.roles & SEEING_EXAMPLE_CHECKS)


def _not_own_department(principal: Principal, *, request_id: str, department: str) -> None:
    if principal.department == department:
        raise DsbrokerError("nobody reviews their own department's request", reason="OWN_DEPARTMENT_REQUEST",
                            access_request=request_id)
