"""AccessRequestService: proto in, workflow, proto out. No decisions are made here."""

from __future__ import annotations

import grpc

from dsbroker.identity.auth import require_principal
from dsbroker.rpc.call_context import body_request_id, current_request_id
from dsbroker.rpc.pagination import Pages
from dsbroker.rpc.request_fields import enum_value, resource_id
from broker.workflow.request_states import State
from broker.servicers.resource_names import ACCESS_REQUESTS, policy_name, timestamp
from broker.workflow.store import StoredRequest
from broker.v1 import access_request_service_pb2 as pb
from broker.v1 import access_request_service_pb2_grpc as pb_grpc
from broker.workflow.review import Call, ExampleCheck, NewRequest, RequestedColumn, Workflow

COLLECTION = ACCESS_REQUESTS
PAGES = Pages(COLLECTION, (str, str), default_size=50, max_size=500)  # after (created_at, id), newest first
_USES = {pb.COLUMN_USE_GROUP: "group", pb.COLUMN_USE_FILTER: "filter", pb.COLUMN_USE_MEASURE: "measure"}


class AccessRequestServicer(pb_grpc.AccessRequestServiceServicer):
    """Converts between protos and the workflow."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow

    def CreateAccessRequest(self, request, context):
        wanted = request.access_request
        columns = tuple(RequestedColumn(c.column, _USES.get(c.use, ""), c.reason) for c in wanted.columns)
        new = NewRequest(purpose=wanted.purpose, dataset=wanted.dataset, columns=columns,
                         valid_from=wanted.valid_from, valid_until=wanted.valid_until,
                         queries_per_day=wanted.queries_per_day, queries_total=wanted.queries_total,
                         example_queries=tuple(wanted.example_queries),
                         result_modes=tuple(wanted.result_modes) or ("aggregate",), products=tuple(wanted.products))
        stored = self.workflow.submit(_call(context, body_request_id(request.request_id)), new)
        return pb.CreateAccessRequestResponse(access_request=to_proto(stored))

    def GetAccessRequest(self, request, context):
        principal = require_principal()
        stored = self.workflow.get(principal, resource_id(request.name, COLLECTION))
        return pb.GetAccessRequestResponse(
            access_request=to_proto(stored, self.workflow.example_checks(principal, stored)))

    def ListAccessRequests(self, request, context):
        number = enum_value(request.state, pb.AccessRequestState.DESCRIPTOR, "state")
        state = State(pb.AccessRequestState.Name(number).removeprefix("ACCESS_REQUEST_STATE_")) if number else None
        page = PAGES.read(request.page_size, request.page_token, number)
        listed, token = page.cut(self.workflow.list(require_principal(), state=state, after=page.after,
                                                    limit=page.limit), key=lambda r: (r.created_at, r.id))
        return pb.ListAccessRequestsResponse(access_requests=[to_proto(r) for r in listed], next_page_token=token)

    def WithdrawAccessRequest(self, request, context):
        stored = self.workflow.withdraw(_call(context), resource_id(request.name, COLLECTION), reason=request.reason)
        return pb.WithdrawAccessRequestResponse(access_request=to_proto(stored))

    def ApproveAccessRequest(self, request, context):
        stored = self.workflow.approve(_call(context), resource_id(request.name, COLLECTION), request.policy_document,
                                       comment=request.comment)
        return pb.ApproveAccessRequestResponse(access_request=to_proto(stored))

    def RejectAccessRequest(self, request, context):
        stored = self.workflow.reject(_call(context), resource_id(request.name, COLLECTION), reason=request.reason)
        return pb.RejectAccessRequestResponse(access_request=to_proto(stored))


def state_proto(state: State) -> int:
    """The proto enum value of a state."""
    return pb.AccessRequestState.Value(f"ACCESS_REQUEST_STATE_{state.value}")


def to_proto(stored: StoredRequest, checks: list[ExampleCheck] = ()) -> pb.AccessRequest:
    """The AccessRequest message of a stored request."""
    body = stored.body
    uses = {name: value for value, name in _USES.items()}
    return pb.AccessRequest(
        name=f"{COLLECTION}/{stored.id}", state=state_proto(stored.state), department=stored.department,
        district=stored.district, requester=body["requester"], purpose=body["purpose"], dataset=body["dataset"],
        columns=[pb.RequestedColumn(column=c["column"], use=uses[c["use"]], reason=c["reason"])
                 for c in body["columns"]],
        example_queries=body["example_queries"], result_modes=body["result_modes"], valid_from=body["valid_from"],
        valid_until=body["valid_until"], queries_per_day=body["queries_per_day"],
        queries_total=body["queries_total"], create_time=timestamp(stored.created_at),
        update_time=timestamp(stored.updated_at), draft_policy=body["draft_policy"],
        approvals=[pb.Approval(**a) for a in body["approvals"]], approval_stages=body["approval_stages"],
        state_reason=body.get("state_reason", ""), policy=policy_name(stored.policy_id),
        example_checks=[pb.ExampleQueryCheck(sql=c.sql, accepted=c.accepted, rewritten_sql=c.rewritten_sql,
                                             reason=c.reason, message=c.message) for c in checks],
        products=body.get("products", []))


def _call(context: grpc.ServicerContext, request_id: str = "") -> Call:
    """The caller, for the workflow; ``request_id`` is the body's (CreateAccessRequest's), else the call's."""
    return Call(require_principal(), client=context.peer(), request_id=request_id or current_request_id.get())
