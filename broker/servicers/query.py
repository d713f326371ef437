"""QueryService: proto in, pipeline, proto out. No decisions are made here."""

from __future__ import annotations

import grpc

from dsbroker.identity.auth import current_token, require_principal
from dsbroker.rpc.call_context import body_request_id, time_limit
from dsbroker.guard.release_plan import describe
from broker.query.disclosure_rules import disclosure_rules, planned_noise
from broker.query.pipeline import QueryPipeline
from broker.servicers.resource_names import access_record_name
from dsbroker.identity.tls import peer_certificate
from broker.v1 import query_service_pb2 as pb
from broker.v1 import query_service_pb2_grpc as pb_grpc


class QueryServicer(pb_grpc.QueryServiceServicer):
    """Answers RunQuery and ExplainQuery through the query pipeline."""

    def __init__(self, pipeline: QueryPipeline) -> None:
        self.pipeline = pipeline

    def RunQuery(self, request: pb.RunQueryRequest, context: grpc.ServicerContext) -> pb.RunQueryResponse:
        outcome = self.pipeline.run(
            require_principal(), request.policy, request.sql,
            request_id=body_request_id(request.request_id), client=context.peer(),
            timeout_s=time_limit(context), token=current_token.get(), certificate=peer_certificate(context),
            encryption=request.encryption if request.HasField("encryption") else None,
            product=request.product if request.HasField("product") else None)
        guarded = outcome.guarded
        noise = outcome.response.noise if outcome.response.HasField("noise") else None
        encrypted = outcome.response.encrypted if outcome.response.HasField("encrypted") else None
        return pb.RunQueryResponse(
            table=outcome.response.table, truncated=outcome.response.truncated, rewritten_sql=guarded.sql,
            access_record=access_record_name(outcome.access_record), policy_version=outcome.policy.version,
            noise=noise, encrypted=encrypted,
            disclosure_rules=disclosure_rules(guarded, outcome.policy, outcome.response, noise))

    def ExplainQuery(self, request: pb.ExplainQueryRequest, context: grpc.ServicerContext) -> pb.ExplainQueryResponse:
        explanation = self.pipeline.explain(
            require_principal(), request.policy, request.sql,
            request_id=body_request_id(request.request_id), client=context.peer(),
            encrypted=request.encrypted, product=request.product if request.HasField("product") else None)
        guarded = explanation.guarded
        noise = planned_noise(guarded, explanation.policy)
        return pb.ExplainQueryResponse(
            rewritten_sql=guarded.sql, disclosure_rules=disclosure_rules(guarded, explanation.policy, noise=noise),
            release_plan=describe(guarded.cells) if guarded.cells is not None else "",
            noise=noise,
            max_groups=guarded.max_rows,
            lookup_tables=guarded.lookups, access_record=access_record_name(explanation.access_record),
            policy_version=explanation.policy.version,
            steps=[pb.GuardStep(rule=step.rule, action=_ACTIONS[step.action], summary=step.summary)
                   for step in explanation.steps])


_ACTIONS = {"checked": pb.GuardStep.ACTION_CHECKED, "rewrote": pb.GuardStep.ACTION_REWROTE,
            "unchanged": pb.GuardStep.ACTION_UNCHANGED}
