"""The 1+1+1 workflow: a department's request, its review in stages, and the owner's signed activation.

The broker drafts each request's policy from the owner's catalog; approvers sign that body on their
own machines (``dsbroker review approve``) and send the signed document; the broker checks each
signature against the owner's trust file (public keys only: it holds no private key) and moves the
request on. The owner's approval may narrow the draft and activates the policy. Every attempt,
allowed or refused, is written to the access log.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from broker.access_log.log import AccessLog, AccessRecord
from dsbroker.identity.auth import Principal
from broker.catalog import Catalog
from dsbroker.errors import DsbrokerError, shown
from dsbroker.guard import guard
from dsbroker.policy.model import (DEFAULT_AGGREGATES, DEFAULT_MAX_GROUPS, MAX_POLICY_CHARS, RESULT_MODES, ColumnLevel,
                                   Policy, parse_policy)
from broker.workflow.policy_draft import drafted_dominance, narrowing_problems, render_policy
from broker.workflow.product_offers import offered_products
from dsbroker.policy.products import Product
from broker.workflow.policy_registry import stored_policy_for
from dsbroker.policy.signing import Approval, Trust, split_document, verify_approvals, verify_policy
from dsbroker.rpc.request_fields import RequestFieldError, bounded_list, bounded_text
from broker.workflow.request_states import PENDING, State, next_state
from broker.workflow.store import Store, StoredRequest
from broker.permissions import (check_may_approve, check_may_reject, check_may_withdraw, may_see, require_role,
                                scope_of, sees_example_checks)

log = logging.getLogger(__name__)
USES = ("group", "filter", "measure")
MAX_EXAMPLE_QUERIES = 20
# The owner's narrowed policy is stored and sent with every plan: bounded like any text a caller sets.
MAX_POLICY_DOCUMENT = MAX_POLICY_CHARS


@dataclass(frozen=True)
class RequestedColumn:
    """A column asked for: how it will be used (group, filter, measure) and why."""

    column: str
    use: str
    reason: str = ""


@dataclass(frozen=True)
class NewRequest:
    """What a requester submits."""

    purpose: str
    dataset: str
    columns: tuple[RequestedColumn, ...]
    valid_from: str
    valid_until: str
    queries_per_day: int
    queries_total: int = 0
    example_queries: tuple[str, ...] = ()
    result_modes: tuple[str, ...] = ("aggregate",)
    products: tuple[str, ...] = ()  # the catalog's products asked for, by name; with no columns, products only


@dataclass(frozen=True)
class ExampleCheck:
    """The guard's verdict on one example query under the draft policy."""

    sql: str
    accepted: bool
    rewritten_sql: str = ""
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class Call:
    """Who is calling, from where, under which request id: what each access record needs."""

    principal: Principal
    client: str = ""
    request_id: str = ""


class Workflow:
    """Submit, read, withdraw, approve and reject access requests."""

    def __init__(self, store: Store, catalog: Catalog, access_log: AccessLog, *, trust: Trust | None,
                 owner_timezone: dt.tzinfo, clock: Callable[[], dt.datetime], policies_dir: str | Path | None) -> None:
        self.store = store
        self.catalog = catalog
        self.access_log = access_log
        self.trust = trust
        self.owner_timezone = owner_timezone
        self.clock = clock
        self.policies_dir = Path(policies_dir) if policies_dir else None

    # -- requester -------------------------------------------------------------------------------

    def submit(self, call: Call, new: NewRequest) -> StoredRequest:
        """Record a new request in SUBMITTED, with its drafted policy (requester role)."""
        def act() -> StoredRequest:
            require_role("requester", call.principal)
            dataset, columns, products = self._validated(new)
            request_id = "req-" + base64.b32encode(secrets.token_bytes(10)).decode().lower().rstrip("=")
            policy = self._draft(request_id, call.principal, new, dataset, columns, products)
            now = _stamp(self.clock())
            body = {"requester": call.principal.subject, "purpose": new.purpose.strip(), "dataset": new.dataset,
                    "columns": [dataclasses.asdict(c) for c in new.columns],
                    "example_queries": list(new.example_queries), "result_modes": list(new.result_modes),
                    "products": list(new.products),
                    "valid_from": new.valid_from, "valid_until": new.valid_until,
                    "queries_per_day": new.queries_per_day, "queries_total": new.queries_total,
                    "draft_policy": policy, "approval_stages": list(dataset.approval_stages), "approvals": [],
                    "state_reason": ""}
            return self.store.create_request(StoredRequest(
                id=request_id, department=call.principal.department, district=call.principal.district,
                state=State.SUBMITTED, version=0, created_at=now, updated_at=now, body=body))
        return self._audited(call, "request.create", "", act)

    def withdraw(self, call: Call, request_id: str, *, reason: str = "") -> StoredRequest:
        """The requester's department withdraws a request that is not yet active."""
        def act() -> StoredRequest:
            require_role("requester", call.principal)
            request = self.get(call.principal, request_id)
            check_may_withdraw(call.principal, department=request.department)
            text = bounded_text(reason, "reason")
            target = next_state("withdraw", request.state, subject=_name(request_id))
            return self._replace(request, request.moved(target, _stamp(self.clock()), state_reason=text), "withdraw")
        return self._audited(call, "request.withdraw", request_id, act)

    # -- everyone who may see it -----------------------------------------------------------------

    def get(self, principal: Principal, request_id: str) -> StoredRequest:
        """One request the caller may see; NOT_FOUND otherwise (another department's reads as absent)."""
        request = self.store.get_request(request_id)
        if request is None or not may_see(principal, department=request.department, district=request.district):
            raise DsbrokerError(f"access request {request_id!r} does not exist", reason="ACCESS_REQUEST_NOT_FOUND",
                                access_request=request_id)
        return request

    def list(self, principal: Principal, *, state: State | None, after: tuple[str, str] | None,
             limit: int) -> list[StoredRequest]:
        """Up to ``limit`` of the requests the caller may see, newest first, after the (created_at, id) key
        ``after`` (None: from the newest)."""
        return self.store.list_requests(state=state, after=after, limit=limit, scope=scope_of(principal))

    def example_checks(self, principal: Principal, request: StoredRequest) -> list[ExampleCheck]:
        """The guard's dry run of each example query under the draft (reviewers and owners only)."""
        if not sees_example_checks(principal):
            return []
        policy = parse_policy(request.body["draft_policy"], source=_name(request.id))
        checks = []
        for sql in request.body["example_queries"]:
            try:
                guarded = guard(sql, policy, district=request.district, department=request.department)
                checks.append(ExampleCheck(sql, True, rewritten_sql=guarded.sql))
            except DsbrokerError as error:
                checks.append(ExampleCheck(sql, False, reason=error.reason, message=error.message))
            except Exception:  # a guard bug on one example must not keep the reviewer from the rest
                log.exception("the guard failed on an example query of %s", request.id)
                checks.append(ExampleCheck(sql, False, reason="INTERNAL",
                                           message="the guard could not check this query; the operator's log has "
                                                   "details"))
        return checks

    # -- reviewers and the owner -----------------------------------------------------------------

    def approve(self, call: Call, request_id: str, document: str, *, comment: str = "") -> StoredRequest:
        """Add the caller's signed approval at the current stage; the owner's activates the policy."""
        def act() -> StoredRequest:
            text = bounded_text(comment, "comment")
            bounded_text(document, "policy_document", limit=MAX_POLICY_DOCUMENT)
            return self._approve(call, request_id, document, text)
        return self._audited(call, "request.approve", request_id, act)

    def reject(self, call: Call, request_id: str, *, reason: str) -> StoredRequest:
        """Reject a pending request with a reason (the current stage's role, or the owner)."""
        def act() -> StoredRequest:
            text = bounded_text(reason, "reason")
            if not text:
                raise RequestFieldError("a reason is required to reject a request", field="reason",
                                        reason="REASON_REQUIRED")
            request = self.get(call.principal, request_id)
            target = next_state("reject", request.state, subject=_name(request_id))
            stage = request.body["approval_stages"][len(request.body["approvals"])]
            check_may_reject(call.principal, request_id=request.id, department=request.department, stage=stage)
            return self._replace(request, request.moved(target, _stamp(self.clock()), state_reason=text), "reject")
        return self._audited(call, "request.reject", request_id, act)

    def _approve(self, call: Call, request_id: str, document: str, comment: str) -> StoredRequest:
        principal = call.principal
        request = self.get(principal, request_id)
        approvals = request.body["approvals"]
        stages = request.body["approval_stages"]
        final = len(approvals) == len(stages) - 1
        if request.state in PENDING and any(a["by"] == principal.department for a in approvals):
            raise DsbrokerError(f"{principal.department!r} has already approved this request",
                                reason="ALREADY_APPROVED", access_request=request_id)
        target = next_state("activate" if final else "approve", request.state, subject=_name(request_id))
        stage = check_may_approve(principal, request_id=request_id, department=request.department, stages=stages,
                                  done=len(approvals))
        if self.trust is None:
            raise DsbrokerError("approvals cannot be checked: the broker has no trust file (set trust)",
                                reason="TRUST_NOT_CONFIGURED")
        body, signed = split_document(document)
        recorded = [Approval(a["role"], a["by"], a["key"], a["signed_at"], a["signature"]) for a in approvals]
        if len(signed) != len(recorded) + 1 or signed[:-1] != recorded:
            raise _document_error("the document must carry the approvals so far and exactly one new approval")
        new = signed[-1]
        if new.role != stage or new.by != principal.department:
            raise DsbrokerError(f"this stage needs a {stage} approval signed for {principal.department!r}; the new "
                                f"approval is a {shown(new.role)} approval for {shown(new.by)}",
                                reason="SIGNER_MISMATCH", access_request=request_id)
        draft = request.body["draft_policy"]
        if body != draft:
            self._check_narrowing(final, draft, body)
        verify_approvals(body, signed, self.trust)
        entry = {"role": new.role, "by": new.by, "key": new.key, "signed_at": new.at, "signature": new.signature,
                 "subject": principal.subject, "comment": comment}
        now = self.clock()
        moved = request.moved(target, _stamp(now), approvals=[*approvals, entry])
        if not final:
            return self._replace(request, moved, "approve")
        policy = verify_policy(document, self.trust, source=_name(request_id))
        if policy.valid_until and policy.valid_until < now.astimezone(self.owner_timezone).date():
            raise DsbrokerError("the policy's validity has already ended", reason="POLICY_EXPIRED",
                                policy=policy.id)
        activated = self.store.activate(dataclasses.replace(moved, policy_id=policy.id),
                                        stored_policy_for(policy, request_id=request_id, at=now))
        if activated is None:
            raise self._lost_race(request_id, "activate")
        self._record(call, "policy.activate", request_id, "allow", "", grant_id=policy.id,
                     detail={"version": policy.version, "sha256": policy.sha256, "narrowed": bool(policy.narrows)})
        self._export(policy)
        return activated

    def _check_narrowing(self, final: bool, draft: str, body: str) -> None:
        if not final:
            raise _document_error("a review stage signs the drafted policy as it is; only the owner may narrow it")
        try:
            narrowed = parse_policy(body, source="<narrowed policy>")
        except DsbrokerError as error:
            raise _document_error(f"the narrowed policy does not load: {error.message}") from None
        expected = "sha256:" + hashlib.sha256(draft.encode()).hexdigest()
        problems = narrowing_problems(parse_policy(draft, source="<draft>"), narrowed)
        if narrowed.narrows != expected:
            problems.insert(0, "narrows does not name the draft's SHA-256")
        if problems:
            raise DsbrokerError("the owner's policy does not only narrow the draft: " + "; ".join(problems),
                                reason="POLICY_NOT_A_NARROWING", field="policy_document", policy=narrowed.id)

    # -- plumbing --------------------------------------------------------------------------------

    def _validated(self, new: NewRequest):
        if not bounded_text(new.purpose, "purpose"):
            raise RequestFieldError("purpose (the business scenario) is required", field="purpose")
        if not new.dataset:
            raise RequestFieldError("dataset is required", field="dataset")
        dataset = self.catalog.dataset(new.dataset)
        if not dataset.entity_column:
            raise DsbrokerError(f"dataset {shown(new.dataset)} has no described columns; its owner has not opened it "
                                "to requests", reason="DATASET_NOT_REQUESTABLE",
                                table=new.dataset)
        published = {c.name: c for c in dataset.columns}
        if not new.columns and not new.products:
            raise RequestFieldError("columns: ask for at least one column (or for products)", field="columns")
        _check_columns(new, published)
        _check_result_modes(new.result_modes)
        bounded_list(new.example_queries, "example_queries", most=MAX_EXAMPLE_QUERIES)
        self._check_window(new)
        order = [c.name for c in dataset.columns]
        levels = {dataset.entity_column: ColumnLevel.ENTITY}
        levels.update({c.column: ColumnLevel(c.use) for c in new.columns})
        products, read = offered_products(dataset, new.products, levels if new.columns else None)
        if not new.columns:  # a grant of products only: the columns their queries read, at the levels they need
            levels.update(read)
        return dataset, {name: levels[name] for name in sorted(levels, key=order.index)}, products

    def _check_window(self, new: NewRequest) -> None:
        """The validity window (not ending in the past) and the expected volume."""
        valid_from = _date(new.valid_from, "valid_from")
        valid_until = _date(new.valid_until, "valid_until")
        if valid_until < valid_from:
            raise RequestFieldError("valid_until is before valid_from", field="valid_until")
        if valid_until < self.clock().astimezone(self.owner_timezone).date():
            raise RequestFieldError("valid_until is in the past", field="valid_until")
        if new.queries_per_day < 1:
            raise RequestFieldError("queries_per_day (the expected volume) must be at least 1",
                                    field="queries_per_day")
        if new.queries_total < 0:
            raise RequestFieldError("queries_total must not be negative", field="queries_total")

    def _draft(self, request_id: str, principal: Principal, new: NewRequest, dataset, columns,
               products: dict[str, Product]) -> str:
        suffix = request_id.removeprefix("req-")
        policy = Policy(
            id=f"{principal.department[:40]}-{suffix}", version=1, department=principal.department,
            district=principal.district,  # the requester's: the grant binds the row filter to it
            purpose=new.purpose.strip(), dataset=new.dataset, columns=columns, aggregates=DEFAULT_AGGREGATES,
            row_filter=dataset.row_filter or None, min_entities=dataset.min_entities or 10,
            max_groups=DEFAULT_MAX_GROUPS, valid_from=_date(new.valid_from, "valid_from"),
            valid_until=_date(new.valid_until, "valid_until"), results=tuple(new.result_modes) or ("aggregate",),
            queries_per_day=new.queries_per_day, queries_total=new.queries_total or None, request=request_id,
            products=products,
            products_only=bool(products) and not new.columns)
        return render_policy(drafted_dominance(policy), comment=f"Drafted by dsbroker from access request "
                                                                f"{request_id} of {principal.department}.")

    def _replace(self, request: StoredRequest, moved: StoredRequest, action: str) -> StoredRequest:
        stored = self.store.replace_request(moved)
        if stored is None:
            raise self._lost_race(request.id, action)
        return stored

    def _lost_race(self, request_id: str, action: str) -> DsbrokerError:
        current = self.store.get_request(request_id)
        if current is not None:
            try:
                next_state(action, current.state, subject=_name(request_id))
            except DsbrokerError as error:
                return error
        return DsbrokerError(f"access request {request_id!r} changed meanwhile; read it again and retry",
                             reason="CONCURRENT_CHANGE", access_request=request_id)

    def _audited(self, call: Call, event: str, request_id: str, act: Callable[[], StoredRequest]) -> StoredRequest:
        try:
            result = act()
        except DsbrokerError as error:
            self._record(call, event, request_id, "deny", error.reason, detail=dict(error.metadata))
            raise
        self._record(call, event, result.id, "allow", "", grant_id=result.policy_id,
                     detail={"state": result.state.value, "version": result.version})
        return result

    def _record(self, call: Call, event: str, request_id: str, decision: str, reason: str, *, grant_id: str = "",
                detail: dict) -> None:
        self.access_log.append(AccessRecord(
            event=event, decision=decision, subject=call.principal.subject, department=call.principal.department,
            token_id=call.principal.token_id, client=call.client, request_id=call.request_id, grant_id=grant_id,
            reason=reason, detail={"access_request": request_id, **detail}), now=self.clock())

    def _export(self, policy: Policy) -> None:
        """Write the activated policy into the policies directory for operators (the store is authoritative)."""
        if self.policies_dir is None:
            return
        self.policies_dir.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.policies_dir, prefix=".", suffix=".partial")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(policy.document)
        os.replace(temporary, self.policies_dir / f"{policy.id}.yaml")


def _document_error(message: str) -> DsbrokerError:
    return DsbrokerError(message, reason="APPROVAL_DOCUMENT_INVALID", field="policy_document")


def _check_columns(new: NewRequest, published: dict) -> None:
    """Each asked-for column: in the catalog, once, for a use its owner allows."""
    seen = set()
    for index, wanted in enumerate(new.columns):
        where = f"columns[{index}]"
        column = published.get(wanted.column)
        if column is None:
            raise RequestFieldError(f"{where}: {shown(wanted.column)} is not a column of {new.dataset} in the catalog",
                                    field=where, reason="COLUMN_NOT_IN_CATALOG", table=new.dataset,
                                    column=wanted.column)
        if wanted.use not in USES:
            raise RequestFieldError(f"{where}.use is required: one of {', '.join(USES)}", field=f"{where}.use",
                                    column=wanted.column)
        if wanted.use not in column.levels:
            allowed = ", ".join(column.levels) or "nothing"
            raise RequestFieldError(f"{where}: {wanted.column} may be requested for {allowed}, not {wanted.use}",
                                    field=where, reason="COLUMN_LEVEL_NOT_ALLOWED", table=new.dataset,
                                    column=wanted.column)
        if wanted.column in seen:
            raise RequestFieldError(f"{where}: {shown(wanted.column)} is asked for twice", field=where,
                                    column=wanted.column)
        seen.add(wanted.column)
        bounded_text(wanted.reason, f"{where}.reason")


def _check_result_modes(modes: tuple[str, ...]) -> None:
    if len(set(modes)) != len(modes):
        raise RequestFieldError("result_modes names a mode twice", field="result_modes")
    for mode in modes:
        if mode not in RESULT_MODES:
            raise RequestFieldError(f"result mode {shown(mode)} is not offered by this version (offered: "
                                    f"{', '.join(RESULT_MODES)})", field="result_modes",
                                    reason="RESULT_MODE_UNSUPPORTED")


def _date(text: str, field: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise RequestFieldError(f"{field} must be a date, YYYY-MM-DD", field=field) from None


def _name(request_id: str) -> str:
    return f"accessRequests/{request_id}"


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
