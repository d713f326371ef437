"""PolicyService: proto in, policy registry, proto out. No decisions are made here."""

from __future__ import annotations

import logging

import grpc

from dsbroker.identity.auth import require_principal
from dsbroker.rpc.call_context import current_request_id
from broker.workflow.policy_registry import POLICIES, PolicyRegistry
from dsbroker.rpc.pagination import Pages
from dsbroker.rpc.request_fields import resource_id
from broker.servicers.resource_names import access_request_name, policy_name, timestamp
from broker.workflow.request_states import State
from broker.workflow.store import StoredPolicy
from broker.v1 import policy_service_pb2 as pb
from broker.v1 import policy_service_pb2_grpc as pb_grpc

COLLECTION = POLICIES
PAGES = Pages(COLLECTION, (str,), default_size=50, max_size=500)  # after the id, in id order


log = logging.getLogger(__name__)


class PolicyServicer(pb_grpc.PolicyServiceServicer):
    """Lists policies and passes the owner's suspend, resume and (signed) revoke to the registry."""

    def __init__(self, registry: PolicyRegistry) -> None:
        self.registry = registry

    def ListPolicies(self, request, context):
        page = PAGES.read(request.page_size, request.page_token)
        listed, token = page.cut(self.registry.list(require_principal(), after=page.after[0] if page.after else None,
                                                    limit=page.limit), key=lambda p: (p.id,))
        return pb.ListPoliciesResponse(policies=[self._proto(p, document=False) for p in listed],
                                       next_page_token=token)

    def GetPolicy(self, request, context):
        stored = self.registry.get(require_principal(), resource_id(request.name, COLLECTION))
        return pb.GetPolicyResponse(policy=self._proto(stored, document=True))

    def SuspendPolicy(self, request, context):
        return pb.SuspendPolicyResponse(policy=self._change(request.name, "suspend", request.reason, context))

    def ResumePolicy(self, request, context):
        return pb.ResumePolicyResponse(policy=self._change(request.name, "resume", "", context))

    def RevokePolicy(self, request, context):
        stored, notified = self.registry.revoke(require_principal(), resource_id(request.name, COLLECTION),
                                                statement=request.statement, reason=request.reason,
                                                client=context.peer(), request_id=current_request_id.get())
        return pb.RevokePolicyResponse(policy=self._proto(stored, document=False), sandboxes_notified=notified)

    def _change(self, name: str, action: str, reason: str, context: grpc.ServicerContext) -> pb.Policy:
        stored = self.registry.change(require_principal(), resource_id(name, COLLECTION), action, reason=reason,
                                      client=context.peer(), request_id=current_request_id.get())
        return self._proto(stored, document=False)

    def _proto(self, stored: StoredPolicy, *, document: bool) -> pb.Policy:
        policy = self.registry.policy(stored)
        return pb.Policy(
            name=policy_name(stored.id), version=stored.version, state=policy_state(stored.state),
            department=stored.department, dataset=policy.dataset, purpose=policy.purpose,
            valid_from=policy.valid_from.isoformat() if policy.valid_from else "",
            valid_until=policy.valid_until.isoformat() if policy.valid_until else "",
            document=stored.document if document else "", sha256=stored.sha256,
            access_request=access_request_name(stored.request_id),
            state_reason=stored.state_reason, update_time=timestamp(stored.updated_at),
            reused_version_body_sha256=self.registry.reused_body_of(stored))


def policy_state(state: State) -> int:
    """The PolicyState of a stored policy's state. A policy is only ever in one of a policy's states; one
    stored in another (a database writer's edit) reads as unspecified, so one row cannot break a list."""
    name = f"POLICY_STATE_{state.value}"
    if name not in pb.PolicyState.keys():
        log.error("policy stored in %s, which is no policy state; shown as unspecified", state.value)
        return pb.POLICY_STATE_UNSPECIFIED
    return pb.PolicyState.Value(name)
