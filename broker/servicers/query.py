"""QueryService: proto in, pipeline, proto out. No decisions are made here."""

from __future__ import annotations

import grpc

from broker.auth import current_token, require_principal
from broker.call_context import current_request_id, time_limit
from broker.guard import GuardedQuery
from broker.pipeline import QueryPipeline
from broker.policy import Policy
from broker.v1 import query_service_pb2 as pb
from broker.v1 import query_service_pb2_grpc as pb_grpc


class QueryServicer(pb_grpc.QueryServiceServicer):
    """Answers RunQuery and ExplainQuery through the query pipeline."""

    def __init__(self, pipeline: QueryPipeline) -> None:
        self.pipeline = pipeline

    def RunQuery(self, request: pb.RunQueryRequest, context: grpc.ServicerContext) -> pb.RunQueryResponse:
        outcome = self.pipeline.run(
            require_principal(), request.grant, request.sql,
            request_id=request.request_id or current_request_id.get(), client=context.peer(),
            timeout_s=time_limit(context), token=current_token.get())
        guarded = outcome.guarded
        return pb.RunQueryResponse(
            table=outcome.response.table, truncated=outcome.response.truncated, rewritten_sql=guarded.sql,
            access_record=outcome.access_record, policy_version=outcome.policy.version,
            disclosure_rules=disclosure_rules(guarded, outcome.policy, outcome.response.cells_withheld))

    def ExplainQuery(self, request: pb.ExplainQueryRequest, context: grpc.ServicerContext) -> pb.ExplainQueryResponse:
        explanation = self.pipeline.explain(
            require_principal(), request.grant, request.sql,
            request_id=request.request_id or current_request_id.get(), client=context.peer())
        guarded = explanation.guarded
        return pb.ExplainQueryResponse(
            rewritten_sql=guarded.sql, disclosure_rules=disclosure_rules(guarded, explanation.policy),
            max_groups=guarded.max_rows,
            lookup_tables=guarded.lookups, access_record=explanation.access_record,
            policy_version=explanation.policy.version,
            steps=[pb.GuardStep(rule=step.rule, action=_ACTIONS[step.action], summary=step.summary)
                   for step in explanation.steps])


_ACTIONS = {"checked": pb.GuardStep.ACTION_CHECKED, "rewrote": pb.GuardStep.ACTION_REWROTE,
            "unchanged": pb.GuardStep.ACTION_UNCHANGED}


def disclosure_rules(guarded: GuardedQuery, policy: Policy,
                     cells_withheld: int | None = None) -> list[pb.DisclosureRule]:
    """The disclosure rules a result under ``guarded`` is subject to, with what they withheld (None: nothing ran)."""
    rules = [pb.DisclosureRule(
        rule="min_entities", column=guarded.entity, threshold=guarded.min_entities,
        description=f"cells with fewer than {guarded.min_entities} distinct {guarded.entity} values are withheld")]
    dominance = policy.dominance
    if dominance is not None:
        tests = []
        if dominance.n is not None:
            tests.append(f"its {dominance.n} largest {guarded.entity} hold over {dominance.k:g}% of the total")
        if dominance.p is not None:
            tests.append(f"the rest of the total is under {dominance.p:g}% of its largest {guarded.entity}")
        counted = "" if cells_withheld is None else f" ({cells_withheld} withheld)"
        rules.append(pb.DisclosureRule(
            rule="dominance", column=guarded.entity, threshold=dominance.n or 2, cells_withheld=cells_withheld or 0,
            description=f"a SUM or AVG cell is withheld when {' or '.join(tests)}{counted}"))
    return rules
