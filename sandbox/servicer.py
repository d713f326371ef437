"""SandboxService: checks a plan's envelope and runs it on the engine (proto to engine and back)."""

from __future__ import annotations

import grpc

from broker.call_context import time_limit
from broker.errors import DsbrokerError
from sandbox.catalog import Catalog
from sandbox.engine_duckdb import DuckDBEngine
from sandbox.plan_check import PlanGuardChecker
from sandbox.policy_check import PlanPolicyChecker
from sandbox.result_table import encode_table
from sandbox.v1 import sandbox_service_pb2 as pb
from sandbox.v1 import sandbox_service_pb2_grpc as pb_grpc

DEADLINE_MARGIN_SECONDS = 0.05


class SandboxServicer(pb_grpc.SandboxServiceServicer):
    """Executes plans against the datasets this sandbox serves."""

    def __init__(self, engine: DuckDBEngine, datasets: set[str], *, catalog: Catalog, policies: PlanPolicyChecker,
                 plans: PlanGuardChecker, max_rows: int, max_execution_seconds: float) -> None:
        self.engine = engine
        self.plans = plans
        self.catalog = catalog
        self.policies = policies
        self.datasets = datasets
        self.max_rows = max_rows
        self.max_execution_seconds = max_execution_seconds

    def ExecutePlan(self, request: pb.ExecutePlanRequest, context: grpc.ServicerContext) -> pb.ExecutePlanResponse:
        plan = request.plan
        if plan.dataset not in self.datasets:
            raise DsbrokerError(f"this sandbox does not serve dataset {plan.dataset!r}",
                                reason="DATASET_NOT_SERVED", code=grpc.StatusCode.NOT_FOUND, table=plan.dataset)
        policy = self.policies.check(plan)
        if not plan.sql.strip():
            raise DsbrokerError("the plan has no SQL", reason="PLAN_INVALID", code=grpc.StatusCode.INVALID_ARGUMENT)
        guarded = self.plans.check(plan, policy)
        unserved = sorted(set(guarded.lookups) - self.datasets)
        if unserved:
            raise DsbrokerError(f"this sandbox does not serve the lookup table {unserved[0]!r}",
                                reason="DATASET_NOT_SERVED", code=grpc.StatusCode.NOT_FOUND, table=unserved[0])
        max_rows = min(plan.max_rows or guarded.max_rows, guarded.max_rows, self.max_rows)
        timeout = min(self.max_execution_seconds, time_limit(context) - DEADLINE_MARGIN_SECONDS)
        if timeout <= 0:
            raise DsbrokerError("the deadline passed before the query could start", reason="QUERY_TIMEOUT",
                                code=grpc.StatusCode.DEADLINE_EXCEEDED)
        result = self.engine.execute(plan.sql, timeout_s=timeout, max_rows=max_rows)
        names, types, rows, withheld = without_dominance_flags(result.names, result.types, result.rows,
                                                               guarded.dominance_flags)
        return pb.ExecutePlanResponse(table=encode_table(names, types, rows), truncated=result.truncated,
                                      engine_micros=result.micros, cells_withheld=withheld)

    def ListDatasets(self, request: pb.ListDatasetsRequest, context: grpc.ServicerContext) -> pb.ListDatasetsResponse:
        return self.catalog.listing()


def without_dominance_flags(names: list[str], types: list[str], rows: list[tuple],
                            flags: tuple[tuple[int, ...], ...]) -> tuple[list[str], list[str], list[tuple], int]:
    """Drop the dominance rule's flag columns (the last ones) and count the cells they withheld.

    The withheld cells are already null: the engine query set them so before HAVING and ORDER BY.
    """
    if not flags:
        return names, types, rows, 0
    width = len(names) - len(flags)
    # A cell with several dominated measures (SUM(vat_paid + cit_paid)) is one withheld cell.
    withheld = sum(len(set().union(*(outputs for flagged, outputs in zip(row[width:], flags) if flagged)))
                   for row in rows)
    return names[:width], types[:width], [row[:width] for row in rows], withheld
