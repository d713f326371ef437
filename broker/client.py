"""The Python SDK: ``BrokerClient(target, token=...).query(grant, sql)``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import grpc

from broker.call_context import REQUEST_ID_HEADER
from broker.rpc_status import error_from_rpc_error
from broker.serving import message_options
from broker.tls import ClientTls, open_channel
from broker.v1 import query_service_pb2 as pb
from broker.v1 import query_service_pb2_grpc as pb_grpc
from sandbox.result_table import decode_table

DEFAULT_TIMEOUT_SECONDS = 60.0
CLIENT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class QueryResult:
    """An answer: columns, rows, and what disclosure control did."""

    columns: list[str]
    rows: list[list]
    truncated: bool
    rewritten_sql: str
    disclosure_rules: list[dict] = field(default_factory=list)
    access_record: int = 0
    policy_version: int = 0
    request_id: str = ""

    def as_json(self) -> dict:
        """A JSON-ready dict (dates and decimals as text)."""
        return {
            "columns": self.columns,
            "rows": [[_jsonable(v) for v in row] for row in self.rows],
            "truncated": self.truncated,
            "rewritten_sql": self.rewritten_sql,
            "disclosure_rules": self.disclosure_rules,
            "access_record": self.access_record,
            "policy_version": self.policy_version,
            "request_id": self.request_id,
        }


class BrokerClient:
    """A client of the broker. Errors raise :class:`broker.errors.DsbrokerError` with code and reason.

    ``tls`` gives the CA that issued the broker's certificate and, for mutual TLS, the client's
    certificate and key; without it the channel is plaintext, which only a loopback broker accepts.
    Every call carries a deadline (``timeout``) and an ``x-request-id``.
    """

    def __init__(self, target: str, *, token: str | None = None, tls: ClientTls | None = None,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.target = target
        self.timeout = timeout
        self._authorization = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = open_channel(target, tls=tls, options=message_options(CLIENT_MAX_MESSAGE_BYTES))
        self._queries = pb_grpc.QueryServiceStub(self._channel)

    def query(self, grant: str, sql: str, *, request_id: str | None = None, timeout: float | None = None) -> QueryResult:
        """Run ``sql`` under ``grant`` and return the released cells."""
        request_id = request_id or str(uuid.uuid4())
        request = pb.RunQueryRequest(grant=grant, sql=sql)
        try:
            response = self._queries.RunQuery(
                request, timeout=timeout or self.timeout,
                metadata=(*self._authorization, (REQUEST_ID_HEADER, request_id)))
        except grpc.RpcError as rpc_error:
            raise error_from_rpc_error(rpc_error) from None
        columns, rows = decode_table(response.table)
        return QueryResult(
            columns=columns, rows=rows, truncated=response.truncated, rewritten_sql=response.rewritten_sql,
            disclosure_rules=[{"rule": r.rule, "column": r.column, "threshold": r.threshold,
                               "description": r.description} for r in response.disclosure_rules],
            access_record=response.access_record, policy_version=response.policy_version, request_id=request_id)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> "BrokerClient":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def _jsonable(value):
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return str(value) if not hasattr(value, "isoformat") else value.isoformat()
