"""The 1+1+1 workflow over gRPC: submit, review, sign, activate, query, suspend, revoke; every
legal and illegal transition; who may do what; concurrent approvals; and the access log of it all."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading

import grpc
import pytest

from broker.access_log.log import AccessLog, RecordFilter
from broker.client.approving import Narrowing, sign_approval
from broker.client.sdk import BrokerClient
from broker.workflow.policy_draft import ENCRYPTED_WAIVER
from dsbroker.errors import DsbrokerError
from broker.dev.keys import load_private_key, signer_key_id
from dsbroker.policy.model import MAX_POLICY_CHARS, parse_policy
from dsbroker.policy.signing import Trust, sign_policy, verify_policy
from dsbroker.rpc.status import error_from_rpc_error
from broker.server import start_broker
from broker.v1 import access_request_service_pb2 as pb
from broker.v1 import access_request_service_pb2_grpc as requests_grpc
from broker.v1 import policy_service_pb2 as policies_pb
from broker.v1 import policy_service_pb2_grpc as policies_grpc
from broker.v1 import query_service_pb2 as query_pb
from broker.v1 import query_service_pb2_grpc as query_grpc
from tests.conftest import Clock, XUANWU, broker_settings_for, client_tls, dev_keys, revocation, token_for

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
GULOU = "320106"
GROUP, FILTER, MEASURE = pb.COLUMN_USE_GROUP, pb.COLUMN_USE_FILTER, pb.COLUMN_USE_MEASURE
ACCEPTED_EXAMPLE = "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY street_code"
REFUSED_EXAMPLE = "SELECT taxpayer_id, vat_paid FROM tax.declarations"


class Workplace:
    """A broker on a fixed clock and a client per actor: the Xuanwu development commission (requester),
    the Xuanwu tax bureau (reviewer), the city tax bureau (owner), an auditor."""

    def __init__(self, running, log_path, clock, policies_dir):
        self.running, self.log_path, self.clock, self.policies_dir = running, log_path, clock, policies_dir
        target = f"127.0.0.1:{running.port}"
        self.clients = []

        def client(department, district, roles, subject):
            made = BrokerClient(target, token=token_for(department, district, roles, subject), tls=client_tls())
            self.clients.append(made)
            return made
        self.requester = client("xuanwu-fgw", XUANWU, ("requester",), "li.wei")
        self.other_requester = client("gulou-fgw", GULOU, ("requester",), "zhao.min")
        self.reviewer = client("xuanwu-tax", XUANWU, ("reviewer",), "wang.fang")
        self.other_reviewer = client("gulou-tax", GULOU, ("reviewer",), "sun.li")
        self.owner = client("city-tax", "320100", ("owner",), "chen.jun")
        self.auditor = client("city-audit", "320100", ("auditor",), "liu.yang")
        self.client = client

    def submit(self, **overrides) -> pb.AccessRequest:
        fields = dict(
            purpose="monthly VAT by street for the district economic report", dataset="tax.declarations",
            columns=[pb.RequestedColumn(column="street_code", use=GROUP, reason="report rows"),
                     pb.RequestedColumn(column="period", use=GROUP, reason="months"),
                     pb.RequestedColumn(column="industry_code", use=FILTER, reason="key industries"),
                     pb.RequestedColumn(column="vat_paid", use=MEASURE, reason="tax revenue"),
                     pb.RequestedColumn(column="revenue", use=MEASURE, reason="turnover")],
            example_queries=[ACCEPTED_EXAMPLE, REFUSED_EXAMPLE], result_modes=["aggregate"],
            valid_from="2026-01-01", valid_until="2030-12-31", queries_per_day=50)
        fields.update(overrides)
        return self.requester.submit_request(pb.AccessRequest(**fields))

    def review(self, name: str) -> pb.AccessRequest:
        return self.reviewer.approve_request(name, signed(self.reviewer.get_request(name), "xuanwu-tax"))

    def activate(self, name: str, narrowing: Narrowing = Narrowing()) -> pb.AccessRequest:
        return self.owner.approve_request(name, signed(self.owner.get_request(name), "city-tax", narrowing))

    def records(self, event_prefix: str = ""):
        log = AccessLog(self.log_path)
        try:
            return [r for r in log.records() if r.event.startswith(event_prefix)]
        finally:
            log.close()

    def close(self):
        for made in self.clients:
            made.close()
        self.running.stop()


def signed(request: pb.AccessRequest, signer: str, narrowing: Narrowing = Narrowing()) -> str:
    role = {"xuanwu-tax": "reviewer", "city-tax": "owner"}[signer]
    return sign_approval(request, load_private_key(dev_keys().signer_key(signer)), key_id=signer_key_id(signer),
                         role=role, by=signer, narrowing=narrowing)


@pytest.fixture
def work(sandbox, tmp_path, store_location):
    """The workplace, its broker's state in SQLite and (a second run) in the real PostgreSQL server."""
    clock = Clock(dt.datetime(2026, 11, 21, 10, 0, tzinfo=SHANGHAI))
    policies = tmp_path / "policies"
    policies.mkdir()
    running = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", policies=str(policies),
                                               store=store_location), clock=clock)
    place = Workplace(running, tmp_path / "log.sqlite", clock, policies)
    yield place
    place.close()


def refusal(call, *args, **kwargs) -> DsbrokerError:
    with pytest.raises(DsbrokerError) as caught:
        call(*args, **kwargs)
    return caught.value


def state_name(request: pb.AccessRequest) -> str:
    return pb.AccessRequestState.Name(request.state).removeprefix("ACCESS_REQUEST_STATE_")


def policy_state_name(policy: policies_pb.Policy) -> str:
    return policies_pb.PolicyState.Name(policy.state).removeprefix("POLICY_STATE_")


# -- the catalog ---------------------------------------------------------------------------------

def test_the_catalog_describes_columns_without_values(work):
    datasets = {d.name: d for d in work.requester.datasets()}
    declarations = datasets["tax.declarations"]
    columns = {c.name: c for c in declarations.columns}
    assert declarations.entity_column == "taxpayer_id" and list(declarations.approval_stages) == ["reviewer", "owner"]
    assert columns["vat_paid"].unit == "fen" and columns["vat_paid"].classification == "sensitive"
    assert list(columns["vat_paid"].levels) == ["measure"] and columns["vat_paid"].type == "BIGINT"
    assert list(columns["district_code"].levels) == []
    assert not datasets["tax.streets"].columns, "an undescribed table is published by name only"
    assert "tax.taxpayers" not in datasets, "a table the sandbox is not told to serve is not listed"
    assert work.requester.dataset("tax.declarations") == declarations
    assert refusal(work.requester.dataset, "tax.nothing").reason == "DATASET_NOT_FOUND"


# -- the whole flow ------------------------------------------------------------------------------

def test_submit_review_sign_query_suspend_resume_revoke(work):
    submitted = work.submit()
    assert state_name(submitted) == "SUBMITTED" and submitted.requester == "li.wei"
    assert "taxpayer_id: entity" in submitted.draft_policy and "queries_per_day: 50" in submitted.draft_policy

    shown = work.reviewer.get_request(submitted.name)
    accepted, refused = shown.example_checks
    assert accepted.accepted and "COUNT(__e) AS __s0" in accepted.rewritten_sql
    assert not refused.accepted and refused.reason == "ENTITY_COLUMN_MISUSED"
    assert not work.requester.get_request(submitted.name).example_checks, "dry runs are for reviewers"

    reviewed = work.review(submitted.name)
    assert state_name(reviewed) == "REVIEWED" and reviewed.approvals[0].subject == "wang.fang"

    active = work.activate(submitted.name, Narrowing(drop_columns=("revenue",), min_entities=12, queries_per_day=20))
    assert state_name(active) == "ACTIVE"
    grant = active.policy.removeprefix("policies/")
    document = work.owner.get_policy(grant).document
    policy = verify_policy(document, Trust.load(dev_keys().trust))
    assert policy.min_entities == 12 and "revenue" not in policy.columns and policy.queries_per_day == 20
    assert (work.policies_dir / f"{grant}.yaml").read_text() == document

    result = work.requester.query(grant, "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations "
                                         "GROUP BY street_code")
    assert result.rows and next(r for r in result.disclosure_rules if r["rule"] == "min_entities")["threshold"] == 12
    dropped = refusal(work.requester.query, grant, "SELECT SUM(revenue) AS r FROM tax.declarations")
    assert dropped.metadata.get("column") == "revenue"

    assert policy_state_name(work.owner.get_policy(grant)) == "ACTIVE"
    work.owner.change_policy(grant, "suspend", reason="audit of the commission's reports")
    suspended = refusal(work.requester.query, grant, ACCEPTED_EXAMPLE)
    assert (suspended.code.name, suspended.reason) == ("FAILED_PRECONDITION", "GRANT_NOT_ACTIVE")
    assert state_name(work.requester.get_request(submitted.name)) == "SUSPENDED"
    work.owner.change_policy(grant, "resume")
    assert work.requester.query(grant, ACCEPTED_EXAMPLE).rows
    work.owner.change_policy(grant, "revoke", statement=revocation(grant, "the report is published"))
    assert refusal(work.requester.query, grant, ACCEPTED_EXAMPLE).reason == "GRANT_NOT_ACTIVE"
    final = work.requester.get_request(submitted.name)
    assert state_name(final) == "REVOKED" and final.state_reason == "the report is published"

    events = [(r.event, r.decision) for r in work.records() if r.event.startswith(("request.", "policy."))]
    assert events == [("request.create", "allow"), ("request.approve", "allow"), ("policy.activate", "allow"),
                      ("request.approve", "allow"), ("policy.suspend", "allow"), ("policy.resume", "allow"),
                      ("policy.revoke", "allow")]
    log = AccessLog(work.log_path)
    assert log.verify() == []
    log.close()


def test_the_draft_names_the_requesters_district_and_the_grant_holds_to_it(work):
    submitted = work.submit()
    assert f'grantee: {{department: xuanwu-fgw, district: "{XUANWU}"}}' in submitted.draft_policy
    work.review(submitted.name)
    grant = work.activate(submitted.name, Narrowing(min_entities=12)).policy.removeprefix("policies/")
    assert verify_policy(work.owner.get_policy(grant).document, Trust.load(dev_keys().trust)).district == XUANWU
    elsewhere = work.client("xuanwu-fgw", GULOU, ("requester",), "li.wei")
    error = refusal(elsewhere.query, grant, ACCEPTED_EXAMPLE)
    assert (error.code.name, error.reason, error.metadata["grant"]) == ("PERMISSION_DENIED", "GRANT_DISTRICT_MISMATCH",
                                                                         grant)
    assert work.requester.query(grant, ACCEPTED_EXAMPLE).rows


# -- every transition ----------------------------------------------------------------------------

def reach(work, state: str) -> tuple[str, str]:
    """A request in ``state``; returns (request name, policy id or "")."""
    work.clock.now = dt.datetime(2026, 11, 21, 10, 0, tzinfo=SHANGHAI)
    total = 1 if state == "EXHAUSTED" else 0
    until = "2026-11-30" if state == "EXPIRED" else "2030-12-31"
    name = work.submit(queries_total=total, valid_until=until).name
    if state == "WITHDRAWN":
        work.requester.withdraw_request(name, reason="no longer needed")
    elif state == "REJECTED":
        work.reviewer.reject_request(name, reason="purpose too broad")
    elif state != "SUBMITTED":
        work.review(name)
    if state in ("SUBMITTED", "REVIEWED", "WITHDRAWN", "REJECTED"):
        return name, ""
    grant = work.activate(name).policy.removeprefix("policies/")
    if state == "SUSPENDED":
        work.owner.change_policy(grant, "suspend", reason="check")
    elif state == "REVOKED":
        work.owner.change_policy(grant, "revoke", statement=revocation(grant, "done"))
    elif state == "EXHAUSTED":
        work.requester.query(grant, ACCEPTED_EXAMPLE)
        assert refusal(work.requester.query, grant, ACCEPTED_EXAMPLE).reason == "QUOTA_EXCEEDED"
    elif state == "EXPIRED":
        work.clock.now = dt.datetime(2026, 12, 1, 9, 0, tzinfo=SHANGHAI)
        assert refusal(work.requester.query, grant, ACCEPTED_EXAMPLE).reason == "GRANT_NOT_ACTIVE"
    assert state_name(work.requester.get_request(name)) == state
    return name, grant


def act(work, action: str, name: str, grant: str):
    if action == "withdraw":
        return work.requester.withdraw_request(name)
    if action == "review":
        return work.reviewer.approve_request(name, signed(work.reviewer.get_request(name), "xuanwu-tax"))
    if action == "activate":
        return work.owner.approve_request(name, signed(work.owner.get_request(name), "city-tax"))
    if action == "reject":
        return work.owner.reject_request(name, reason="not now")
    return work.owner.change_policy(grant or "no-such-policy", action, reason="why",
                                    statement=revocation(grant or "no-such-policy", "why"))


# (state, action) -> the state it leads to; every pair not listed must be refused.
LEGAL = {
    ("SUBMITTED", "withdraw"): "WITHDRAWN", ("SUBMITTED", "review"): "REVIEWED",
    ("SUBMITTED", "reject"): "REJECTED",
    ("REVIEWED", "withdraw"): "WITHDRAWN", ("REVIEWED", "activate"): "ACTIVE", ("REVIEWED", "reject"): "REJECTED",
    ("ACTIVE", "suspend"): "SUSPENDED", ("ACTIVE", "revoke"): "REVOKED",
    ("SUSPENDED", "resume"): "ACTIVE", ("SUSPENDED", "revoke"): "REVOKED",
}
STATES = ("SUBMITTED", "REVIEWED", "ACTIVE", "REJECTED", "WITHDRAWN", "SUSPENDED", "REVOKED", "EXPIRED", "EXHAUSTED")
ACTIONS = ("withdraw", "review", "activate", "reject", "suspend", "resume", "revoke")


@pytest.mark.parametrize("state", STATES)
def test_every_action_from_every_state(work, state):
    for action in ACTIONS:
        name, grant = reach(work, state)
        expected = LEGAL.get((state, action))
        if expected:
            act(work, action, name, grant)
            assert state_name(work.requester.get_request(name)) == expected, (state, action)
        else:
            error = refusal(act, work, action, name, grant)
            assert error.code.name in ("FAILED_PRECONDITION", "NOT_FOUND", "PERMISSION_DENIED"), (state, action)
            if grant or action not in ("suspend", "resume", "revoke"):
                assert error.code.name == "FAILED_PRECONDITION", (state, action, error.reason)
            assert state_name(work.requester.get_request(name)) == state, (state, action)


# -- who may do what -----------------------------------------------------------------------------

def test_a_requester_cannot_approve(work):
    name = work.submit().name
    document = signed(work.requester.get_request(name), "xuanwu-tax")
    error = refusal(work.requester.approve_request, name, document)
    assert (error.code.name, error.reason) == ("PERMISSION_DENIED", "ROLE_REQUIRED")
    assert state_name(work.requester.get_request(name)) == "SUBMITTED"


def test_nobody_approves_their_own_departments_request(work):
    name = work.submit().name
    own = work.client("xuanwu-fgw", XUANWU, ("reviewer", "requester"), "li.wei")
    error = refusal(own.approve_request, name, signed(own.get_request(name), "xuanwu-tax"))
    assert (error.code.name, error.reason) == ("PERMISSION_DENIED", "OWN_DEPARTMENT_REQUEST")
    assert refusal(own.reject_request, name, reason="mine").reason == "OWN_DEPARTMENT_REQUEST"


def test_a_second_approval_by_the_same_reviewer_is_refused(work):
    name = work.submit().name
    first = signed(work.reviewer.get_request(name), "xuanwu-tax")
    work.reviewer.approve_request(name, first)
    error = refusal(work.reviewer.approve_request, name, first)
    assert (error.code.name, error.reason) == ("FAILED_PRECONDITION", "ALREADY_APPROVED")


def test_the_owner_waits_for_the_reviewer(work):
    name = work.submit().name
    error = refusal(work.owner.approve_request, name, signed(work.owner.get_request(name), "city-tax"))
    assert (error.code.name, error.reason) == ("FAILED_PRECONDITION", "STAGE_NOT_REACHED")


def test_a_rejection_needs_a_reason(work):
    name = work.submit().name
    error = refusal(work.reviewer.reject_request, name, reason="  ")
    assert (error.code.name, error.reason) == ("INVALID_ARGUMENT", "REASON_REQUIRED")
    rejected = work.reviewer.reject_request(name, reason="the purpose does not need street detail")
    assert state_name(rejected) == "REJECTED" and rejected.state_reason.startswith("the purpose")


@pytest.mark.parametrize("ending", ["withdraw", "reject"])
def test_a_withdrawn_or_rejected_request_cannot_be_approved(work, ending):
    name = work.submit().name
    document = signed(work.reviewer.get_request(name), "xuanwu-tax")
    if ending == "withdraw":
        work.requester.withdraw_request(name)
    else:
        work.owner.reject_request(name, reason="no")
    error = refusal(work.reviewer.approve_request, name, document)
    assert (error.code.name, error.reason) == ("FAILED_PRECONDITION", "STATE_TRANSITION_INVALID")


def test_another_department_cannot_see_or_withdraw_a_request(work):
    name = work.submit().name
    for call in (work.other_requester.get_request, work.other_requester.withdraw_request,
                 work.other_reviewer.get_request):
        error = refusal(call, name)
        assert (error.code.name, error.reason) == ("NOT_FOUND", "ACCESS_REQUEST_NOT_FOUND")
    assert work.other_requester.list_requests()[0] == []
    assert [r.name for r in work.other_reviewer.list_requests()[0]] == []
    assert [r.name for r in work.reviewer.list_requests()[0]] == [name]
    assert [r.name for r in work.auditor.list_requests()[0]] == [name]


def test_requests_list_in_pages_filtered_by_state(work):
    names = [work.submit().name for _ in range(5)]
    work.requester.withdraw_request(names[0])
    page, token = work.requester.list_requests(page_size=2)
    seen = [r.name for r in page]
    while token:
        page, token = work.requester.list_requests(page_size=2, page_token=token)
        seen += [r.name for r in page]
    assert sorted(seen) == sorted(names) and len(seen) == 5
    withdrawn, _ = work.requester.list_requests(state=pb.ACCESS_REQUEST_STATE_WITHDRAWN)
    assert [r.name for r in withdrawn] == [names[0]]
    assert refusal(work.requester.list_requests, page_token="nonsense!").reason == "PAGE_TOKEN_INVALID"


def test_only_the_owner_suspends_and_revokes(work):
    name = work.submit().name
    work.review(name)
    grant = work.activate(name).policy
    for client in (work.requester, work.reviewer, work.auditor):
        error = refusal(client.change_policy, grant, "revoke", reason="x")
        assert (error.code.name, error.reason) == ("PERMISSION_DENIED", "ROLE_REQUIRED")
    assert refusal(work.owner.change_policy, grant, "suspend", reason="").reason == "REASON_REQUIRED"
    denied = [r for r in work.records("policy.") if r.decision == "deny"]
    assert len(denied) == 4 and {r.reason for r in denied} == {"ROLE_REQUIRED", "REASON_REQUIRED"}


def test_a_reviewer_sees_only_its_own_districts_policies_as_with_requests(work):
    # The Gulou tax bureau used to read every district's signed policies, though not their requests.
    name = work.submit().name
    work.review(name)
    grant = work.activate(name).policy
    for seer in (work.reviewer, work.owner, work.auditor, work.requester):
        assert [p.name for p in seer.list_policies()[0]] == [grant]
        assert seer.get_policy(grant).document
    assert work.other_reviewer.list_policies()[0] == []
    error = refusal(work.other_reviewer.get_policy, grant)
    assert (error.code.name, error.reason) == ("NOT_FOUND", "POLICY_NOT_FOUND")
    assert refusal(work.other_reviewer.get_request, name).reason == "ACCESS_REQUEST_NOT_FOUND"


def test_a_requester_sees_only_its_departments_policies(work):
    name = work.submit().name
    work.review(name)
    grant = work.activate(name).policy
    assert [p.name for p in work.requester.list_policies()[0]] == [grant]
    assert work.other_requester.list_policies()[0] == []
    assert refusal(work.other_requester.get_policy, grant).reason == "POLICY_NOT_FOUND"


# -- bad submissions -----------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, reason, field", [
    (dict(purpose=" "), "REQUEST_FIELD_INVALID", "purpose"),
    (dict(columns=[]), "REQUEST_FIELD_INVALID", "columns"),
    (dict(columns=[pb.RequestedColumn(column="legal_person", use=GROUP)]), "COLUMN_NOT_IN_CATALOG", "columns[0]"),
    (dict(columns=[pb.RequestedColumn(column="revenue", use=GROUP)]), "COLUMN_LEVEL_NOT_ALLOWED", "columns[0]"),
    (dict(columns=[pb.RequestedColumn(column="district_code", use=FILTER)]), "COLUMN_LEVEL_NOT_ALLOWED",
     "columns[0]"),
    (dict(columns=[pb.RequestedColumn(column="street_code")]), "REQUEST_FIELD_INVALID", "columns[0].use"),
    (dict(result_modes=["plaintext-rows"]), "RESULT_MODE_UNSUPPORTED", "result_modes"),
    (dict(valid_from="2026-13-01"), "REQUEST_FIELD_INVALID", "valid_from"),
    (dict(valid_until="2026-01-01", valid_from="2026-06-01"), "REQUEST_FIELD_INVALID", "valid_until"),
    (dict(valid_from="2025-01-01", valid_until="2025-12-31"), "REQUEST_FIELD_INVALID", "valid_until"),
    (dict(queries_per_day=0), "REQUEST_FIELD_INVALID", "queries_per_day"),
    (dict(example_queries=["SELECT 1"] * 21), "REQUEST_FIELD_INVALID", "example_queries"),
])
def test_a_bad_request_is_refused_naming_the_field(work, overrides, reason, field):
    error = refusal(work.submit, **overrides)
    assert (error.code.name, error.reason, error.metadata["field"]) == ("INVALID_ARGUMENT", reason, field)
    assert work.requester.list_requests()[0] == [], "nothing was stored"
    assert [r.reason for r in work.records("request.create")] == [reason]


HUGE = "列" * 350_000  # about 1 MB of UTF-8


@pytest.mark.parametrize("overrides", [
    dict(columns=[pb.RequestedColumn(column=HUGE, use=GROUP)]),
    dict(columns=[pb.RequestedColumn(column="street_code", use=GROUP)] * 2 + [pb.RequestedColumn(column=HUGE)]),
    dict(dataset=HUGE),
    dict(result_modes=[HUGE]),
], ids=["column", "column-after-a-repeat", "dataset", "result-mode"])
def test_a_huge_name_in_a_request_gets_a_small_reply_and_the_broker_keeps_serving(work, overrides):
    # Echoed whole, such a name made the reply (message and ErrorInfo) too large to deliver.
    error = refusal(work.submit, **overrides)
    assert error.code.name in ("INVALID_ARGUMENT", "NOT_FOUND"), error.code
    assert len(error.message.encode()) <= 1024 and all(len(v.encode()) <= 256 for v in error.metadata.values())
    assert [r.decision for r in work.records("request.create")] == ["deny"]
    assert work.submit().name


LONG = "长" * 4001  # one character past the bound of any free text a caller sets


@pytest.mark.parametrize("action, field", [
    ("submit-column-reason", "columns[0].reason"), ("submit-example", "example_queries[1]"),
    ("withdraw", "reason"), ("reject", "reason"), ("approve-comment", "comment"),
    ("approve-document", "policy_document"), ("suspend", "reason"), ("revoke", "reason"),
])
def test_every_free_text_a_caller_sets_is_bounded_before_it_is_stored(work, action, field):
    # A reason or comment is stored in the request (or the policy) and sent in every list of them: one of
    # 40 MB made every owner's, reviewer's and auditor's list too large to send.
    name = work.submit().name if not action.startswith("submit") else ""
    if action in ("suspend", "revoke"):
        work.review(name)
        grant = work.activate(name).policy.removeprefix("policies/")
    calls = {
        "submit-column-reason": lambda: work.submit(columns=[pb.RequestedColumn(column="street_code", use=GROUP,
                                                                                reason=LONG)]),
        "submit-example": lambda: work.submit(example_queries=[ACCEPTED_EXAMPLE, LONG]),
        "withdraw": lambda: work.requester.withdraw_request(name, reason=LONG),
        "reject": lambda: work.reviewer.reject_request(name, reason=LONG),
        "approve-comment": lambda: work.reviewer.approve_request(
            name, signed(work.reviewer.get_request(name), "xuanwu-tax"), comment=LONG),
        "approve-document": lambda: work.reviewer.approve_request(name, "x" * (MAX_POLICY_CHARS + 1)),
        "suspend": lambda: work.owner.change_policy(grant, "suspend", reason=LONG),
        "revoke": lambda: work.owner.revoke_policy(grant, revocation(grant), reason=LONG),
    }
    error = refusal(calls[action])
    assert (error.code.name, error.reason, error.metadata["field"]) == ("INVALID_ARGUMENT", "FIELD_TOO_LONG", field)
    assert [v.field for d in error.details for v in d.field_violations] == [field]
    assert LONG[:10] not in error.message
    requests, _ = work.owner.list_requests()
    assert all(r.state_reason != LONG.strip() and all(a.comment != LONG for a in r.approvals) for r in requests)
    assert all(c.reason != LONG for r in requests for c in r.columns)


def test_a_request_for_an_unknown_or_closed_dataset_is_refused(work):
    assert refusal(work.submit, dataset="tax.nothing").reason == "DATASET_NOT_FOUND"
    assert refusal(work.submit, dataset="tax.taxpayers").reason == "DATASET_NOT_FOUND", "not served, not listed"
    error = refusal(work.submit, dataset="tax.streets")
    assert (error.code.name, error.reason) == ("FAILED_PRECONDITION", "DATASET_NOT_REQUESTABLE")


def test_only_requesters_submit(work):
    assert refusal(work.reviewer.submit_request, pb.AccessRequest(purpose="x")).reason == "ROLE_REQUIRED"


# -- signatures and narrowing --------------------------------------------------------------------

def test_an_approval_that_signs_an_edited_draft_is_refused(work):
    name = work.submit().name
    request = work.reviewer.get_request(name)
    request.draft_policy = request.draft_policy.replace("min_entities: 10", "min_entities: 2")
    error = refusal(work.reviewer.approve_request, name, signed(request, "xuanwu-tax"))
    assert (error.code.name, error.reason) == ("INVALID_ARGUMENT", "APPROVAL_DOCUMENT_INVALID")


def test_an_approval_with_a_changed_byte_is_refused(work):
    name = work.submit().name
    document = signed(work.reviewer.get_request(name), "xuanwu-tax")
    position = document.index("signature: \"ed25519:") + 25
    tampered = document[:position] + ("A" if document[position] != "A" else "B") + document[position + 1:]
    error = refusal(work.reviewer.approve_request, name, tampered)
    assert (error.code.name, error.reason) == ("PERMISSION_DENIED", "POLICY_SIGNATURE_INVALID")
    assert state_name(work.requester.get_request(name)) == "SUBMITTED"


def test_an_approval_signed_by_an_untrusted_key_is_refused(work):
    from cryptography.hazmat.primitives.asymmetric import ed25519

    name = work.submit().name
    forged = sign_policy(work.reviewer.get_request(name).draft_policy, ed25519.Ed25519PrivateKey.generate(),
                         key_id=signer_key_id("xuanwu-tax"), role="reviewer", by="xuanwu-tax")
    assert refusal(work.reviewer.approve_request, name, forged).reason == "POLICY_SIGNATURE_INVALID"


def test_an_approval_signed_for_another_approver_is_refused(work):
    name = work.submit().name
    other = work.client("gulou-tax", XUANWU, ("reviewer",), "sun.li")
    error = refusal(other.approve_request, name, signed(other.get_request(name), "xuanwu-tax"))
    assert (error.code.name, error.reason) == ("PERMISSION_DENIED", "SIGNER_MISMATCH")


@pytest.mark.parametrize("anchor, added, named", [
    ("  revenue: measure\n", "  employees: measure\n", "employees"),
    ("version: 1\n", "min_max: {revenue: [MAX]}\n", "min_max on 'revenue'"),
    ("version: 1\n", "lookups: {tax.streets: {key: street_code, columns: [street_name]}}\n", "lookup tax.streets"),
    ("version: 1\n", "ranges: {revenue: 100}\n", "ranges on 'revenue'"),
])
def test_the_owner_may_narrow_but_not_widen(work, anchor, added, named):
    name = work.submit().name
    work.review(name)
    request = work.owner.get_request(name)
    widened = request.draft_policy.replace(anchor, anchor + added, 1)
    widened = widened.replace("version: 1\n", "version: 1\nnarrows: \"sha256:"
                              + hashlib.sha256(request.draft_policy.encode()).hexdigest() + "\"\n")
    request.draft_policy = widened
    error = refusal(work.owner.approve_request, name, signed(request, "city-tax"))
    assert (error.code.name, error.reason) == ("INVALID_ARGUMENT", "POLICY_NOT_A_NARROWING")
    assert named in error.message
    assert state_name(work.requester.get_request(name)) == "REVIEWED"


def test_the_draft_writes_the_dominance_rule_out_and_turns_it_off_only_for_encrypted_results(work):
    plain = work.submit()
    assert "disclosure: {min_entities: 10, dominance: {n: 2, k: 85}}\n" in plain.draft_policy
    # Encrypted results are not served under the rule, so their draft turns it off and says what signing means.
    encrypted = work.submit(result_modes=["aggregate", "encrypted"])
    draft = parse_policy(encrypted.draft_policy)
    assert draft.dominance is None and draft.dominance_waiver == ENCRYPTED_WAIVER
    work.review(encrypted.name)
    grant = work.activate(encrypted.name).policy.removeprefix("policies/")
    assert verify_policy(work.owner.get_policy(grant).document,
                         Trust.load(dev_keys().trust)).dominance_waiver == ENCRYPTED_WAIVER


def test_the_owner_cannot_turn_the_drafts_dominance_rule_off(work):
    name = work.submit().name
    work.review(name)
    request = work.owner.get_request(name)
    rule = "dominance: {n: 2, k: 85}"
    assert rule in request.draft_policy
    waived = request.draft_policy.replace(rule, 'dominance: off, dominance_off_reason: "the owner says so"')
    request.draft_policy = waived.replace("version: 1\n", "version: 1\nnarrows: \"sha256:"
                                          + hashlib.sha256(request.draft_policy.encode()).hexdigest() + "\"\n")
    error = refusal(work.owner.approve_request, name, signed(request, "city-tax"))
    assert (error.code.name, error.reason) == ("INVALID_ARGUMENT", "POLICY_NOT_A_NARROWING")
    assert "the dominance rule differs from the draft's (the final turns it off)" in error.message
    assert state_name(work.requester.get_request(name)) == "REVIEWED"


def test_a_narrowing_client_refuses_to_widen(work):
    name = work.submit().name
    work.review(name)
    with pytest.raises(ValueError, match="min_entities"):
        work.activate(name, Narrowing(min_entities=3))
    with pytest.raises(ValueError, match="entity"):
        work.activate(name, Narrowing(drop_columns=("taxpayer_id",)))


# -- races ---------------------------------------------------------------------------------------

def test_concurrent_owner_approvals_leave_exactly_one_policy(work):
    name = work.submit().name
    work.review(name)
    documents = [signed(work.owner.get_request(name), "city-tax") for _ in range(6)]
    outcomes, barrier = [], threading.Barrier(len(documents))

    def approve(document):
        barrier.wait()
        try:
            outcomes.append(state_name(work.owner.approve_request(name, document)))
        except DsbrokerError as error:
            outcomes.append(error.reason)
    threads = [threading.Thread(target=approve, args=(d,)) for d in documents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ACTIVE") == 1, outcomes
    assert set(outcomes) - {"ACTIVE"} <= {"STATE_TRANSITION_INVALID", "CONCURRENT_CHANGE", "ALREADY_APPROVED"}
    assert len(work.owner.list_policies()[0]) == 1
    assert len(work.records("policy.activate")) == 1


def test_a_policy_past_its_validity_lists_as_expired(work):
    name = work.submit(valid_until="2026-11-30").name
    work.review(name)
    grant = work.activate(name).policy
    work.clock.now = dt.datetime(2026, 12, 1, 0, 30, tzinfo=SHANGHAI)
    [listed] = work.requester.list_policies()[0]
    assert policy_state_name(listed) == "EXPIRED" and listed.state_reason == "validity ended on 2026-11-30"
    assert policy_state_name(work.owner.get_policy(grant)) == "EXPIRED"
    assert state_name(work.requester.get_request(name)) == "EXPIRED"
    assert [r.detail["to"] for r in work.records("policy.expire")] == ["EXPIRED"]


def test_an_example_the_guard_cannot_parse_is_reported_not_fatal(work):
    name = work.submit(example_queries=["SELECT (((", "DROP TABLE tax.declarations"]).name
    checks = work.reviewer.get_request(name).example_checks
    assert [c.accepted for c in checks] == [False, False] and all(c.reason for c in checks)


def test_a_create_carries_its_request_id_to_the_access_log_held_to_the_headers_rules(work):
    # AIP-155: CreateAccessRequest takes a request_id, honoured as RunQuery's is (the access record's request id).
    fields = {"purpose": "monthly VAT by street", "dataset": "tax.declarations", "valid_from": "2026-01-01",
              "valid_until": "2030-12-31", "queries_per_day": 5,
              "columns": [pb.RequestedColumn(column="street_code", use=GROUP, reason="rows"),
                          pb.RequestedColumn(column="vat_paid", use=MEASURE, reason="revenue")]}
    made = work.requester.submit_request(pb.AccessRequest(**fields), request_id="report-2026.11:r1")
    [created] = [r for r in work.records("request.create") if r.decision == "allow"]
    assert created.request_id == "report-2026.11:r1" and made.name.startswith("accessRequests/")
    error = refusal(work.requester.submit_request, pb.AccessRequest(**fields), request_id="two words")
    assert (error.code.name, error.reason) == ("INVALID_ARGUMENT", "REQUEST_ID_INVALID")
    assert [v.field for d in error.details for v in d.field_violations] == ["request_id"]


def test_a_request_names_each_resource_one_way_and_a_bare_id_is_not_a_name(work):
    # One name per resource (AIP-122): the SDK builds it from the bare id a department writes; on the wire a
    # bare id is refused, for a policy (grant) wherever a request names one, and for an access request.
    name = work.submit().name
    work.review(name)
    grant = work.activate(name).policy
    assert grant.startswith("policies/") and work.owner.get_policy(grant).name == grant
    grant_id = grant.removeprefix("policies/")
    assert work.owner.get_policy(grant_id).name == grant  # the SDK takes the bare id and builds the name
    channel = work.owner._channel
    calls = ((policies_grpc.PolicyServiceStub(channel).GetPolicy, policies_pb.GetPolicyRequest(name=grant_id)),
             (requests_grpc.AccessRequestServiceStub(channel).GetAccessRequest,
              pb.GetAccessRequestRequest(name=name.removeprefix("accessRequests/"))))
    for method, request in calls:
        with pytest.raises(grpc.RpcError) as caught:
            method(request, metadata=work.owner._authorization, timeout=30)
        assert error_from_rpc_error(caught.value).reason == "RESOURCE_NAME_INVALID"
    with pytest.raises(grpc.RpcError) as caught:
        query_grpc.QueryServiceStub(work.requester._channel).RunQuery(
            query_pb.RunQueryRequest(policy=grant_id, sql=ACCEPTED_EXAMPLE), metadata=work.requester._authorization,
            timeout=30)
    error = error_from_rpc_error(caught.value)
    assert (error.reason, [v.field for d in error.details for v in d.field_violations]) == (
        "GRANT_NAME_INVALID", ["policy"])
    assert work.requester.query(grant_id, ACCEPTED_EXAMPLE).rows  # the SDK's bare id
    records, _ = work.auditor.list_access_records(where=RecordFilter(grant_id=grant_id, event="query.decision"))
    assert [(r.grant_id, r.decision) for r in records] == [(grant_id, "deny"), (grant_id, "allow")]
