"""SandboxService: proto in, the plan executor or the ledgers, proto out. No decisions are made here."""

from __future__ import annotations

import time

import grpc

from dsbroker.observability.metrics import ServerMetrics
from dsbroker.records.checkpoints import Checkpoint
from dsbroker.rpc.call_context import current_request_id, time_limit
from dsbroker.rpc.pagination import Pages
from sandbox.catalog import Catalog
from sandbox.checks.lookups import LookupChecker
from sandbox.checks.plan import PlanGuardChecker
from sandbox.checks.policy import PlanPolicyChecker
from sandbox.engine.interface import Engine
from sandbox.audit.auditor import Auditor
from sandbox.ledgers.released_cells import ReleasedCellLedger
from sandbox.executor import PlanExecutor
from sandbox.ledgers.checkpoint_witness import CheckpointWitness
from sandbox.ledgers.executions import ExecutionLedger
from sandbox.ledgers.privacy import PrivacyLedger
from sandbox.v1 import sandbox_service_pb2 as pb
from sandbox.v1 import sandbox_service_pb2_grpc as pb_grpc

STATEMENT_PAGES = Pages("policyStatements", (int,), default_size=100, max_size=1000)  # after the ledger position
DATASET_PAGES = Pages("datasets", (str,), default_size=100, max_size=1000)  # after the name, in name order


class SandboxServicer(pb_grpc.SandboxServiceServicer):
    """Executes plans against the datasets this sandbox serves."""

    def __init__(self, engine: Engine, datasets: set[str], *, catalog: Catalog, policies: PlanPolicyChecker,
                 plans: PlanGuardChecker, lookups: LookupChecker, max_rows: int, max_execution_seconds: float,
                 executions: ExecutionLedger, witness: CheckpointWitness, ledger: PrivacyLedger | None = None,
                 data_version: str = "", released: ReleasedCellLedger | None = None,
                 metrics: ServerMetrics | None = None) -> None:
        """``executions`` records every plan before it runs; ``witness`` witnesses the broker's log
        checkpoints; ``ledger`` keeps noise budgets and answers (noise plans are refused without one);
        ``data_version`` identifies the data, so a stored noisy answer is not returned for other data;
        ``released`` keeps the exact cells released, for the auditor (without it, the owner's choice, none is run);
        ``metrics`` are the server's."""
        metrics = metrics or ServerMetrics("sandbox")
        auditor = Auditor(engine, released, on_seconds=lambda seconds: metrics.stage("auditor", seconds)) \
            if released is not None else None
        self.executor = PlanExecutor(engine, datasets, policies=policies, plans=plans, lookups=lookups,
                                     max_rows=max_rows, max_execution_seconds=max_execution_seconds,
                                     executions=executions, ledger=ledger, data_version=data_version,
                                     auditor=auditor, metrics=metrics)
        self.executions = executions
        self.witness = witness
        self.catalog = catalog
        self.policies = policies

    def ExecutePlan(self, request: pb.ExecutePlanRequest, context: grpc.ServicerContext) -> pb.ExecutePlanResponse:
        return self.executor.execute(request.plan, deadline=time.monotonic() + time_limit(context),
                                     request_id=current_request_id.get())

    def EncryptPartition(self, request: pb.EncryptPartitionRequest,
                         context: grpc.ServicerContext) -> pb.EncryptPartitionResponse:
        return self.executor.encrypt_partition(request)

    def ListDatasets(self, request: pb.ListDatasetsRequest, context: grpc.ServicerContext) -> pb.ListDatasetsResponse:
        page = DATASET_PAGES.read(request.page_size, request.page_token)
        listed, token = page.cut(self.catalog.listing(after=page.after[0] if page.after else None, limit=page.limit),
                                 key=lambda dataset: (dataset.name,))
        return pb.ListDatasetsResponse(datasets=listed, next_page_token=token)

    def PublishPolicyStatements(self, request: pb.PublishPolicyStatementsRequest,
                                context: grpc.ServicerContext) -> pb.PublishPolicyStatementsResponse:
        standing = self.policies.standing
        return pb.PublishPolicyStatementsResponse(
            statements_added=standing.accept_statements(request.statements, source="published"),
            policy_versions_added=standing.accept_documents(request.policy_documents, source="published"),
            sandbox_id=self.executions.sandbox_id)

    def ListPolicyStatements(self, request: pb.ListPolicyStatementsRequest,
                             context: grpc.ServicerContext) -> pb.ListPolicyStatementsResponse:
        page = STATEMENT_PAGES.read(request.page_size, request.page_token)
        listed, token = page.cut(self.policies.standing.ledger.statements(
            after=page.after[0] if page.after else 0, limit=page.limit), key=lambda item: (item[0],))
        return pb.ListPolicyStatementsResponse(statements=[text for _, text in listed], next_page_token=token)

    def WitnessCheckpoint(self, request: pb.WitnessCheckpointRequest,
                          context: grpc.ServicerContext) -> pb.WitnessCheckpointResponse:
        signed = self.witness.witness(
            [Checkpoint(size=c.size, root=c.root, prev=c.prev, at=c.sign_time, key_id=c.key_id, signature=c.signature)
             for c in request.checkpoints], [list(c.consistency_proof_hashes) for c in request.checkpoints])
        return pb.WitnessCheckpointResponse(checkpoint_hash=signed.checkpoint, size=signed.size, root=signed.root,
                                            witness=signed.witness, witness_time=signed.at, key_id=signed.key_id,
                                            signature=signed.signature)

