"""The disclosure rules a result is subject to, as the caller reads them: which rule, its threshold, what it withheld.

RunQuery answers with the rules that were applied (and how many cells each withheld); ExplainQuery with the
rules that would be, and the noise a noise policy would add. The text depends on the policy and the query's
shape, never on the data; the counts are the sandbox's.
"""

from __future__ import annotations

from collections.abc import Callable

from broker.v1 import query_service_pb2 as pb
from dsbroker.guard import GuardedQuery
from dsbroker.guard.noise_calibration import column_scale, half_width, plan_calibration
from dsbroker.policy.model import Policy
from dsbroker.results.noise_report import noise_report
from dsbroker.v1 import results_pb2
from sandbox.v1 import sandbox_service_pb2 as sandbox_pb


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
            columns.append((output.name, scale, 0 if output.kind == "avg" else half_width(scale)))
    return noise_report(policy.noise, calibration, columns)


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
                                 "them per group" if policy.partitions else "")
                        + ("; so are groups the released-cell auditor withholds (with cells of the dataset "
                           "released before, they would give away a total of too few)"
                           if result is not None and result.audited else ""))]
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
    if guarded.cells is not None and guarded.cells.rollup:  # a CUBE's table is the auditor's (below)
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
    if not ran or result.audited:
        rules.append(_audit_rule(guarded, result, counted))
    return rules


def _audit_rule(guarded: GuardedQuery, result: sandbox_pb.ExecutePlanResponse,
                counted: Callable[[int], str]) -> pb.DisclosureRule:
    return pb.DisclosureRule(
        rule="audit", column=guarded.entity, threshold=guarded.min_entities,
        cells_withheld=result.audit_cells_withheld,
        description=f"a cell is withheld when, with the cells of {guarded.dataset} released before (to any "
                    f"department){_own_table(guarded)}, it would give away a total of fewer than "
                    f"{guarded.min_entities} distinct {guarded.entity} values or one the other rules withhold"
                    + counted(result.audit_cells_withheld))


def _own_table(guarded: GuardedQuery) -> str:
    """Under CUBE or GROUPING SETS the auditor is also what protects the answer's own table of totals."""
    cells = guarded.cells
    return " and with the answer's other cells (its totals are not a ROLLUP's tree)" \
        if cells is not None and cells.totals and not cells.rollup else ""


def _dataset_spent(guarded: GuardedQuery, noise: results_pb2.NoiseReport) -> str:
    """The dataset's budget as the sandbox reported it ("" from a sandbox that reports none)."""
    if not noise.dataset_epsilon_budget:
        return ""
    return (f"; {noise.dataset_epsilon_spent:g} of {guarded.dataset}'s {noise.dataset_epsilon_budget:g} spent by "
            "all its grants")


def _noise_rules(guarded: GuardedQuery, noise: results_pb2.NoiseReport, *, ran: bool) -> list[pb.DisclosureRule]:
    columns = ", ".join(f"{c.name} \u00b1{c.half_width_95:,.0f}" if c.half_width_95
                        else f"{c.name} (scale {c.scale:,.3g})" for c in noise.columns)
    if not ran:
        budget = (f"each query spends epsilon {noise.epsilon_spent:g} of the grant's {noise.epsilon_budget:g}, "
                  f"its share of the budget of {guarded.dataset}, which every noise grant on it spends")
    elif noise.repeated_answer:
        budget = (f"the stored answer to this same query, repeated (no epsilon spent; {noise.epsilon_total_spent:g} "
                  f"of {noise.epsilon_budget:g} spent{_dataset_spent(guarded, noise)})")
    else:
        budget = (f"epsilon {noise.epsilon_spent:g} spent; "
                  f"{noise.epsilon_total_spent:g} of {noise.epsilon_budget:g} spent{_dataset_spent(guarded, noise)}")
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
