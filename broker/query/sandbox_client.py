"""The broker's channel to the owner's sandbox: plans out, results or statuses back."""

from __future__ import annotations

import grpc

from dsbroker.rpc.call_context import REQUEST_ID_HEADER
from dsbroker.rpc.pagination import MOST_CATALOG_PAGES, every_page
from dsbroker.errors import DsbrokerError, SandboxError
from dsbroker.rpc.status import error_from_rpc_error
from dsbroker.rpc.serving import message_options
from dsbroker.identity.tls import ClientTls, open_channel
from dsbroker.v1 import catalog_pb2, results_pb2
from sandbox.v1 import sandbox_service_pb2 as pb
from sandbox.v1 import sandbox_service_pb2_grpc as pb_grpc


# The owner's statements are revocations, a few a year: a thousand pages of a thousand is no sandbox's.
STATEMENTS_PER_PAGE = 1000
MOST_STATEMENT_PAGES = 1000

class SandboxClient:
    """Calls one sandbox over a long-lived channel (no per-query connection set-up)."""

    def __init__(self, target: str, *, tls: ClientTls | None, max_message_bytes: int) -> None:
        self.target = target
        self._channel = open_channel(target, tls=tls, options=message_options(max_message_bytes))
        self._stub = pb_grpc.SandboxServiceStub(self._channel)

    def execute(self, plan: pb.Plan, *, timeout_s: float, request_id: str) -> pb.ExecutePlanResponse:
        """Run ``plan``; failures come back as DsbrokerError with the sandbox's reason."""
        return self._call(self._stub.ExecutePlan, pb.ExecutePlanRequest(plan=plan, request_id=request_id), timeout_s,
                          request_id=request_id)

    def encrypt_partition(self, execution_id: str, groups: results_pb2.ResultTable, *, timeout_s: float,
                          request_id: str) -> pb.EncryptPartitionResponse:
        """Second round of a secure sum: this partition's cells of ``execution_id``, encrypted over ``groups``."""
        return self._call(self._stub.EncryptPartition,
                          pb.EncryptPartitionRequest(execution_id=execution_id, groups=groups), timeout_s,
                          request_id=request_id)

    def publish_statements(self, statements: list[str], documents: list[str], *,
                           timeout_s: float = 10.0) -> pb.PublishPolicyStatementsResponse:
        """Hand the sandbox the owner's statements and signed policy documents; it verifies and keeps them."""
        return self._call(self._stub.PublishPolicyStatements, pb.PublishPolicyStatementsRequest(
            statements=statements, policy_documents=documents), timeout_s)

    def list_statements(self, *, timeout_s: float = 10.0) -> list[str]:
        """Every owner's statement the sandbox holds, oldest first (all pages)."""
        def fetch(token: str) -> tuple[list[str], str]:
            page = self._call(self._stub.ListPolicyStatements, pb.ListPolicyStatementsRequest(
                page_size=STATEMENTS_PER_PAGE, page_token=token), timeout_s)
            return list(page.statements), page.next_page_token
        return every_page(fetch, list_name="policy statements", most_pages=MOST_STATEMENT_PAGES)

    def witness(self, checkpoints, proofs, *, timeout_s: float) -> pb.WitnessCheckpointResponse:
        """Ask the sandbox to witness ``checkpoints`` (dsbroker.records.checkpoints.Checkpoint, oldest first), each
        with its consistency proof (``proofs[i]``, hex nodes) from the checkpoint it names as ``prev``."""
        return self._call(self._stub.WitnessCheckpoint, pb.WitnessCheckpointRequest(checkpoints=[
            pb.LogCheckpoint(size=c.size, root=c.root, prev=c.prev, sign_time=c.at, key_id=c.key_id,
                             signature=c.signature, consistency_proof_hashes=proof)
            for c, proof in zip(checkpoints, proofs, strict=True)]), timeout_s)

    def list_datasets(self, *, timeout_s: float = 10.0) -> list[catalog_pb2.Dataset]:
        """The sandbox's catalog: the datasets it serves, described by the owner, in name order (all pages)."""
        def fetch(token: str) -> tuple[list[catalog_pb2.Dataset], str]:
            page = self._call(self._stub.ListDatasets, pb.ListDatasetsRequest(page_token=token), timeout_s)
            return list(page.datasets), page.next_page_token
        return every_page(fetch, list_name="datasets", most_pages=MOST_CATALOG_PAGES)

    def _call(self, method, request, timeout_s: float, *, request_id: str = ""):
        try:
            return method(request, timeout=timeout_s,
                          metadata=((REQUEST_ID_HEADER, request_id),) if request_id else None)
        except grpc.RpcError as rpc_error:
            error = error_from_rpc_error(rpc_error)
            if error.reason == "UNAVAILABLE":
                raise SandboxError("the data owner's sandbox cannot be reached; try again later",
                                   sandbox=self.target) from None
            if error.reason == "DEADLINE_EXCEEDED":
                raise DsbrokerError("the query ran past its deadline", reason="QUERY_TIMEOUT") from None
            raise error from None

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()
