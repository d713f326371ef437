"""Who may see which access request and which policy: one rule, in one place.

Evaluated in this order, the first that applies deciding:

1. An **owner** or an **auditor** sees every request and every policy: the owner approves and holds
   them all, the auditor checks them all.
2. Anyone sees their **own department's** requests and policies.
3. A **reviewer** also sees those of its **own district**: a request by the district it was filed
   from, a policy by its grantee's district (``grantee.district``). A reviewer whose token names no
   district sees no district's, and a policy that names no district is seen by no reviewer of
   another department.
4. Nobody sees anything else, and what one may not see reads exactly as what does not exist
   (NOT_FOUND, or absent from a list).

:func:`may_see` decides for one request or policy; :func:`scope_of` is the same rule as a filter
for lists, so a list never shows what a read would refuse, nor hides what it would show.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsbroker.identity.auth import Principal

SEEING_ALL = frozenset({"owner", "auditor"})


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
    """The rule above for ``principal``, as a filter."""
    if principal.roles & SEEING_ALL:
        return Scope(everything=True)
    district = principal.district if "reviewer" in principal.roles and principal.district else None
    return Scope(department=principal.department, district=district)


def may_see(principal: Principal, *, department: str, district: str | None) -> bool:
    """Whether ``principal`` may see the request or policy of ``department`` and ``district``."""
    return scope_of(principal).admits(department, district)
