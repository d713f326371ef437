"""Who may see which access request and which policy: one rule, evaluated in the documented order."""

from __future__ import annotations

import pytest

from dsbroker.identity.auth import Principal
from broker.permissions import Scope, may_see, scope_of

XUANWU, GULOU = "320102", "320106"


def caller(department: str, district: str, *roles: str) -> Principal:
    return Principal(subject="s", department=department, district=district, roles=frozenset(roles))


OWNER = caller("city-tax", "320100", "owner")
AUDITOR = caller("city-audit", "320100", "auditor")
XUANWU_REVIEWER = caller("xuanwu-tax", XUANWU, "reviewer")
GULOU_REVIEWER = caller("gulou-tax", GULOU, "reviewer")
REQUESTER = caller("xuanwu-fgw", XUANWU, "requester")
OTHER_REQUESTER = caller("gulou-fgw", GULOU, "requester")
DISTRICTLESS_REVIEWER = caller("xuanwu-tax", "", "reviewer")


@pytest.mark.parametrize("principal, sees", [
    (OWNER, True), (AUDITOR, True),  # 1. owners and auditors see everything
    (REQUESTER, True),  # 2. its own department's
    (XUANWU_REVIEWER, True),  # 3. a reviewer: its district's
    (GULOU_REVIEWER, False), (OTHER_REQUESTER, False),  # 4. nothing else
    (DISTRICTLESS_REVIEWER, False),  # a reviewer without a district sees no district's
])
def test_the_rule_for_xuanwu_fgws_request_or_policy(principal, sees):
    assert may_see(principal, department="xuanwu-fgw", district=XUANWU) is sees


def test_a_policy_without_a_grantee_district_is_seen_by_no_reviewer_of_another_department():
    assert not may_see(XUANWU_REVIEWER, department="xuanwu-fgw", district="")
    assert may_see(OWNER, department="xuanwu-fgw", district="")


def test_the_scope_a_list_is_filtered_by_is_the_same_rule():
    assert scope_of(OWNER) == Scope(everything=True)
    assert scope_of(REQUESTER) == Scope(department="xuanwu-fgw")
    assert scope_of(XUANWU_REVIEWER) == Scope(department="xuanwu-tax", district=XUANWU)
    assert scope_of(DISTRICTLESS_REVIEWER) == Scope(department="xuanwu-tax")
    for principal in (OWNER, REQUESTER, XUANWU_REVIEWER, GULOU_REVIEWER, DISTRICTLESS_REVIEWER):
        scope = scope_of(principal)
        for department, district in (("xuanwu-fgw", XUANWU), ("gulou-fgw", GULOU), ("xuanwu-tax", GULOU)):
            assert scope.admits(department, district) == may_see(principal, department=department, district=district)
