"""QueryService: proto in, pipeline, proto out. No decisions are made here."""

from __future__ import annotations

import grpc

from dsbroker.identity.auth import current_token, require_principal
from dsbroker.rpc.call_context import body_request_id, time_limit
from dsbroker.guard import GuardedQuery
from dsbroker.guard.release_plan import describe
from dsbroker.guard.noise_calibration import column_scale, half_width, plan_calibration
from broker.query.pipeline import QueryPipeline
from broker.servicers.resource_names import access_record_name
from dsbroker.policy.model import Policy
from dsbroker.identity.tls import peer_certificate
from broker.v1 import query_service_pb2 as pb
from broker.v1 import query_service_pb2_grpc as pb_grpc
from dsbroker.v1 import results_pb2
from sandbox.v1 import sandbox_service_pb2 as sandbox_pb


class QueryServicer(pb_grpc.QueryServiceServicer):
    """Answers RunQuery and ExplainQuery through the query pipeline."""

    def __init__(self, pipeline: QueryPipeline) -> None:
        self.pipeline = pipeline

    def RunQuery(self, request: pb.RunQueryRequest, context: grpc.ServicerContext) -> pb.RunQueryResponse:
        outcome = self.pipeline.run(
            require_principal(), request.policy, request.sql,
            request_id=body_request_id(request.request_id), client=context.peer(),
            timeout_s=time_limit(context), token=current_token.get(), certificate=peer_certificate(context),
            encryption=request.encryption if request.HasField("encryption") else None)
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
            encrypted=request.encrypted)
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


def planned_noise(guarded: GuardedQuery, policy: Policy) -> results_pb2.NoiseReport | None:
    """The noise a query would get (for explain): it depends on the policy and the query's shape, never the data."""
    if guarded.noise is None or policy.noise is None:
        return None
    calibration = plan_calibration(guarded.noise, policy.noise, policy.min_entities)
    columns = []
    for output in guarded.noise.outputs:
        if output.kind != "key":
            scale = column_scale(output, calibration)
            # An average's interval depends on its cells' counts, known only when it runs.
            columns.append(results_pb2.NoisyColumn(name=output.name, scale=scale,
                                                   half_width_95=0 if output.kind == "avg" else half_width(scale)))
    return results_pb2.NoiseReport(epsilon_spent=policy.noise.epsilon, epsilon_budget=policy.noise.budget,
                                   delta=policy.noise.delta, threshold=calibration.threshold,
                                   groups_per_entity=policy.noise.groups_per_entity, columns=columns)


def disclosure_rules(guarded: GuardedQuery, policy: Policy, result: sandbox_pb.ExecutePlanResponse | None = None,
                     noise: results_pb2.NoiseReport | None = None) -> list[pb.DisclosureRule]:
    """The disclosure rules a result under ``guarded`` is subject to, with what they withheld (no result:
    nothing ran)."""
    if noise is not None:
        return _noise_rules(guarded, noise, ran=result is not None)

    if guarded.encrypted:
        return [pb.DisclosureRule(
            rule="min_entities", column=guarded.entity, threshold=guarded.min_entities,
            description=f"groups with fewer than {guarded.min_entities} distinct {guarded.entity} values are left "
                        "out" + ("; each partition leaves out its own such cells, and the decrypted result counts "
                                 "them per group" if policy.partitions else ""))]
    ran = result is not None
    result = result or sandbox_pb.ExecutePlanResponse()  # nothing ran: nothing withheld

    def counted(cells: int) -> str:
        return f" ({cells} withheld)" if ran else ""

    below = f"cells with fewer than {guarded.min_entities} distinct {guarded.entity} values"
    marked = guarded.suppression == "mark"
    rules = [pb.DisclosureRule(
        rule="min_entities", column=guarded.entity, threshold=guarded.min_entities,
        cells_withheld=result.threshold_cells_withheld,
        description=f"{below} are withheld and marked{counted(result.threshold_cells_withheld)}"
        if marked else f"rows with {below} are left out")]
    if guarded.cells is not None and guarded.cells.totals:
        rules.append(pb.DisclosureRule(
            rule="secondary_suppression", column=guarded.entity, threshold=guarded.min_entities,
            cells_withheld=result.secondary_cells_withheld,
            description="further cells are withheld so that no withheld cell is a total less its released parts"
                        + counted(result.secondary_cells_withheld)
                        + ("" if marked else "; their rows are left out too")))
    dominance = policy.dominance
    if dominance is not None:
        tests = []
        if dominance.n is not None:
            tests.append(f"its {dominance.n} largest {guarded.entity} hold over {dominance.k:g}% of the total")
        if dominance.p is not None:
            tests.append(f"the rest of the total is under {dominance.p:g}% of its largest {guarded.entity}")
        rules.append(pb.DisclosureRule(
            rule="dominance", column=guarded.entity, threshold=dominance.n or 2,
            cells_withheld=result.cells_withheld,
            description=f"a SUM or AVG cell is withheld when {' or '.join(tests)}{counted(result.cells_withheld)}"))
    return rules


def _noise_rules(guarded: GuardedQuery, noise: results_pb2.NoiseReport, *, ran: bool) -> list[pb.DisclosureRule]:
    columns = ", ".join(f"{c.name} \u00b1{c.half_width_95:,.0f}" if c.half_width_95
                        else f"{c.name} (scale {c.scale:,.3g})" for c in noise.columns)
    if not ran:
        budget = f"each query spends epsilon {noise.epsilon_spent:g} of the grant's {noise.epsilon_budget:g}"
    elif noise.repeated_answer:
        budget = (f"the stored answer to this same query, repeated (no epsilon spent; {noise.epsilon_total_spent:g} "
                  f"of {noise.epsilon_budget:g} spent)")
    else:
        budget = (f"epsilon {noise.epsilon_spent:g} spent; "
                  f"{noise.epsilon_total_spent:g} of {noise.epsilon_budget:g} spent")
    return [
        pb.DisclosureRule(
            rule="noisy_threshold", column=guarded.entity, threshold=noise.threshold,
            description=f"a cell appears only when its noisy count of distinct {guarded.entity} is at least "
                        f"{noise.threshold} (a single {guarded.entity}'s cell appears with probability under "
                        f"{noise.delta:g})"),
        pb.DisclosureRule(
            rule="noise", column=guarded.entity, threshold=noise.groups_per_entity,
            description=f"discrete Laplace noise, 95% of cells within: {columns}; {budget}"),
    ]
