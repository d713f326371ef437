"""QueryService: proto in, pipeline, proto out. No decisions are made here."""

from __future__ import annotations

import uuid

import grpc

from broker.auth import require_principal
from broker.pipeline import QueryPipeline
from broker.v1 import query_service_pb2 as pb
from broker.v1 import query_service_pb2_grpc as pb_grpc


class QueryServicer(pb_grpc.QueryServiceServicer):
    """Answers RunQuery through the query pipeline."""

    def __init__(self, pipeline: QueryPipeline, *, default_deadline_seconds: float) -> None:
        self.pipeline = pipeline
        self.default_deadline_seconds = default_deadline_seconds

    def RunQuery(self, request: pb.RunQueryRequest, context: grpc.ServicerContext) -> pb.RunQueryResponse:
        remaining = context.time_remaining()
        outcome = self.pipeline.run(
            require_principal(), request.grant, request.sql,
            request_id=request.request_id or str(uuid.uuid4()), client=context.peer(),
            timeout_s=self.default_deadline_seconds if remaining is None else remaining)
        guarded = outcome.guarded
        return pb.RunQueryResponse(
            table=outcome.response.table, truncated=outcome.response.truncated, rewritten_sql=guarded.sql,
            access_record=outcome.access_record, policy_version=outcome.policy.version,
            disclosure_rules=[pb.DisclosureRule(
                rule="min_entities", column=guarded.entity, threshold=guarded.min_entities,
                description=f"cells with fewer than {guarded.min_entities} distinct {guarded.entity} "
                            "values are withheld")])
