"""The Python SDK: ``BrokerClient(target, token=...).query(grant, sql)``."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from dsbroker.records.checkpoints import Checkpoint
from broker.access_log.store import RecordFilter
from dsbroker.records.access_record import StoredRecord, from_row
from dsbroker.rpc.call_context import REQUEST_ID_HEADER
from dsbroker.rpc.pagination import MOST_CATALOG_PAGES, every_page
from dsbroker.errors import ConfigError, DsbrokerError
from dsbroker.identity.key_binding import sign_key_binding
from dsbroker.rpc.status import error_from_rpc_error
from dsbroker.rpc.serving import message_options
from dsbroker.identity.tls import ClientTls, open_channel
from dsbroker.policy.model import parse_policy
from dsbroker.policy.products import Product
from dsbroker.v1 import catalog_pb2, product_pb2, results_pb2
from broker.v1 import access_request_service_pb2 as requests_pb
from broker.v1 import access_request_service_pb2_grpc as requests_grpc
from broker.v1 import audit_service_pb2 as audit_pb
from broker.v1 import audit_service_pb2_grpc as audit_grpc
from broker.v1 import catalog_service_pb2 as catalog_pb
from broker.v1 import catalog_service_pb2_grpc as catalog_grpc
from broker.v1 import policy_service_pb2 as policies_pb
from broker.v1 import policy_service_pb2_grpc as policies_grpc
from broker.v1 import query_service_pb2 as pb
from broker.v1 import query_service_pb2_grpc as pb_grpc
from dsbroker.results.table import decode_table, marked_cells

if TYPE_CHECKING:  # TenSEAL is loaded only by callers that encrypt
    from broker.client.encryption_key import EncryptionKey

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
    noise: dict | None = None  # under a noise policy: the noise, the grant's budget and the dataset's
    withheld: set = field(default_factory=set)  # (row, column) of each cell disclosure control withheld
    rolled_up: set = field(default_factory=set)  # (row, column) of each key cell a total spans (ROLLUP)
    # An encrypted result, decrypted here: the key id, the partitions added, and per row how many of
    # them left their cell out (under their threshold).
    encryption: dict | None = None

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
            "noise": self.noise,
            "withheld": sorted(map(list, self.withheld)),
            "rolled_up": sorted(map(list, self.rolled_up)),
            "encryption": self.encryption,
        }


class BrokerClient:
    """A client of the broker. Errors raise :class:`dsbroker.errors.DsbrokerError` with code and reason.

    ``tls`` gives the CA that issued the broker's certificate and, for mutual TLS, the client's
    certificate and key; without it the channel is plaintext, which only a loopback broker accepts.
    Every call carries a deadline (``timeout``) and an ``x-request-id``.
    """

    def __init__(self, target: str, *, token: str | None = None, tls: ClientTls | None = None,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.target = target
        self.timeout = timeout
        self.token = token or ""  # the bearer token each call carries (an encrypted query signs its hash)
        self._tls = tls
        self._signing_key = None  # the client certificate's private key, read when an encrypted query needs it
        self._authorization = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = open_channel(target, tls=tls, options=message_options(CLIENT_MAX_MESSAGE_BYTES))
        self._queries = pb_grpc.QueryServiceStub(self._channel)
        self._catalog = catalog_grpc.CatalogServiceStub(self._channel)
        self._requests = requests_grpc.AccessRequestServiceStub(self._channel)
        self._policies = policies_grpc.PolicyServiceStub(self._channel)
        self._audit = audit_grpc.AuditServiceStub(self._channel)

    def query(self, grant: str, sql: str, *, request_id: str | None = None, timeout: float | None = None,
              encryption_key: EncryptionKey | None = None) -> QueryResult:
        """Run ``sql`` under ``grant`` (the grant's id, e.g. ``xuanwu-fgw-2026-007``, or its name
        ``policies/{id}``) and return the released cells.

        With ``encryption_key`` the cells travel encrypted under its public half and are decrypted here;
        a result encrypted under any other key is refused (ENCRYPTION_KEY_MISMATCH). The key is bound
        to this query by a signature with the client certificate's key (:meth:`encryption_for`).
        """
        name = _named(grant, "policies")
        request = pb.RunQueryRequest(policy=name, sql=sql,
                                     encryption=self.encryption_for(name.removeprefix("policies/"), sql,
                                                                    encryption_key) if encryption_key else None)
        return self._run(request, request_id=request_id or str(uuid.uuid4()), timeout=timeout,
                         encryption_key=encryption_key)

    def run_product(self, grant: str, product: str, parameters: Mapping[str, str] | None = None, *,
                    version: int = 0, request_id: str | None = None, timeout: float | None = None) -> QueryResult:
        """Run the data product ``product`` of ``grant`` with ``parameters`` (each value as text: a date
        ``YYYY-MM-DD``, a whole number, a list's members separated by commas) and return the released cells.

        The broker binds the parameters into the product's signed query and answers it as any query; a
        parameter out of its bounds is refused with the parameter named (``error.metadata["parameter"]``).
        ``version`` (0: the grant's) refuses the call when the grant holds another version."""
        call = product_pb2.ProductCall(name=product, version=version, parameters=dict(parameters or {}))
        request = pb.RunQueryRequest(policy=_named(grant, "policies"), product=call)
        return self._run(request, request_id=request_id or str(uuid.uuid4()), timeout=timeout, encryption_key=None)

    def products(self, grant: str) -> dict[str, Product]:
        """The data products of ``grant``, read from its signed policy (as the broker shows it), by name."""
        return parse_policy(self.get_policy(grant).document, source=_named(grant, "policies")).products

    def _run(self, request: pb.RunQueryRequest, *, request_id: str, timeout: float | None,
             encryption_key: EncryptionKey | None) -> QueryResult:
        try:
            response = self._queries.RunQuery(
                request, timeout=timeout or self.timeout,
                metadata=(*self._authorization, (REQUEST_ID_HEADER, request_id)))
        except grpc.RpcError as rpc_error:
            raise error_from_rpc_error(rpc_error) from None
        encryption = None
        if encryption_key is not None:
            if not response.HasField("encrypted"):
                raise DsbrokerError("the broker answered an encrypted query in plaintext",
                                    reason="ENCRYPTED_RESULT_INVALID")
            decrypted = encryption_key.decrypt(response.encrypted)
            columns, rows = decrypted.columns, decrypted.rows
            encryption = {"key_id": response.encrypted.key_id, "partitions": decrypted.partitions,
                          "partitions_withheld": decrypted.partitions_withheld}
        else:
            columns, rows = decode_table(response.table)
        return QueryResult(
            columns=columns, rows=rows, truncated=response.truncated, rewritten_sql=response.rewritten_sql,
            disclosure_rules=[{"rule": r.rule, "column": r.column, "threshold": r.threshold,
                               "description": r.description, "cells_withheld": r.cells_withheld}
                              for r in response.disclosure_rules],
            access_record=access_record_seq(response.access_record), policy_version=response.policy_version,
            request_id=request_id,
            noise=noise_dict(response.noise) if response.HasField("noise") else None,
            withheld=marked_cells(response.table, "withheld"), rolled_up=marked_cells(response.table, "rolled_up"),
            encryption=encryption)

    def encryption_for(self, grant: str, sql: str, encryption_key: EncryptionKey) -> results_pb2.Encryption:
        """What an encrypted query sends: the public context, and this client's signature binding its key id
        to the grant, the SQL and the token, made with the private key of the mutual-TLS client
        certificate (the sandbox refuses an encrypted plan whose key the caller did not sign)."""
        encryption = encryption_key.encryption()
        if self._tls is None or not self._tls.key:
            raise ConfigError("an encrypted query is signed with your client certificate's key: connect with "
                              "--cert and --key (mutual TLS)")
        if self._signing_key is None:
            from dsbroker.private_files import load_private_key

            self._signing_key = load_private_key(self._tls.key)
        encryption.key_signature = sign_key_binding(self._signing_key, key_id=encryption_key.key_id, grant=grant,
                                                    sql=sql, token=self.token)
        return encryption

    def explain(self, grant: str, sql: str, *, encrypted: bool = False) -> pb.ExplainQueryResponse:
        """What the guard makes of ``sql`` under ``grant``, without running it (recorded in the access log)."""
        return self._call(self._queries.ExplainQuery, pb.ExplainQueryRequest(policy=_named(grant, "policies"), sql=sql,
                                                                              encrypted=encrypted))

    def explain_product(self, grant: str, product: str, parameters: Mapping[str, str] | None = None, *,
                        version: int = 0) -> pb.ExplainQueryResponse:
        """What the guard makes of a data product's query with ``parameters`` bound, without running it (recorded
        in the access log, as ``explain``)."""
        call = product_pb2.ProductCall(name=product, version=version, parameters=dict(parameters or {}))
        return self._call(self._queries.ExplainQuery, pb.ExplainQueryRequest(policy=_named(grant, "policies"),
                                                                              product=call))

    # -- catalog -----------------------------------------------------------------------------------

    def datasets(self) -> list[catalog_pb2.Dataset]:
        """The owners' catalog: every dataset, described (all pages)."""
        def fetch(token: str) -> tuple[list[catalog_pb2.Dataset], str]:
            page = self._call(self._catalog.ListDatasets, catalog_pb.ListDatasetsRequest(page_token=token))
            return list(page.datasets), page.next_page_token
        return every_page(fetch, list_name="datasets", most_pages=MOST_CATALOG_PAGES)

    def dataset(self, name: str) -> catalog_pb2.Dataset:
        """One dataset's description."""
        return self._call(self._catalog.GetDataset, catalog_pb.GetDatasetRequest(name=name)).dataset

    # -- access requests -------------------------------------------------------------------------

    def submit_request(self, request: requests_pb.AccessRequest, *,
                       request_id: str = "") -> requests_pb.AccessRequest:
        """Submit an access request; returns it with its name and state. ``request_id`` (optional) correlates
        the call with the access log, as the ``x-request-id`` of any call does."""
        return self._call(self._requests.CreateAccessRequest, requests_pb.CreateAccessRequestRequest(
            access_request=request, request_id=request_id)).access_request

    def get_request(self, name: str) -> requests_pb.AccessRequest:
        """One access request (``accessRequests/{id}`` or the bare id)."""
        return self._call(self._requests.GetAccessRequest,
                          requests_pb.GetAccessRequestRequest(name=_named(name, "accessRequests"))).access_request

    def list_requests(self, *, state: int = 0, page_size: int = 0,
                      page_token: str = "") -> tuple[list[requests_pb.AccessRequest], str]:
        """A page of access requests and the next page's token."""
        response = self._call(self._requests.ListAccessRequests, requests_pb.ListAccessRequestsRequest(
            state=state, page_size=page_size, page_token=page_token))
        return list(response.access_requests), response.next_page_token

    def withdraw_request(self, name: str, *, reason: str = "") -> requests_pb.AccessRequest:
        """Withdraw an access request that is not yet active."""
        return self._call(self._requests.WithdrawAccessRequest, requests_pb.WithdrawAccessRequestRequest(
            name=_named(name, "accessRequests"), reason=reason)).access_request

    def approve_request(self, name: str, policy_document: str, *, comment: str = "") -> requests_pb.AccessRequest:
        """Send a signed approval (see :func:`broker.client.approving.sign_approval`)."""
        return self._call(self._requests.ApproveAccessRequest, requests_pb.ApproveAccessRequestRequest(
            name=_named(name, "accessRequests"), policy_document=policy_document, comment=comment)).access_request

    def reject_request(self, name: str, *, reason: str) -> requests_pb.AccessRequest:
        """Reject an access request with a reason."""
        return self._call(self._requests.RejectAccessRequest, requests_pb.RejectAccessRequestRequest(
            name=_named(name, "accessRequests"), reason=reason)).access_request

    # -- policies --------------------------------------------------------------------------------

    def list_policies(self, *, page_size: int = 0, page_token: str = "") -> tuple[list[policies_pb.Policy], str]:
        """A page of policies and the next page's token."""
        response = self._call(self._policies.ListPolicies,
                              policies_pb.ListPoliciesRequest(page_size=page_size, page_token=page_token))
        return list(response.policies), response.next_page_token

    def get_policy(self, name: str) -> policies_pb.Policy:
        """One policy with its signed document."""
        return self._call(self._policies.GetPolicy,
                          policies_pb.GetPolicyRequest(name=_named(name, "policies"))).policy

    def change_policy(self, name: str, action: str, *, reason: str = "", statement: str = "") -> policies_pb.Policy:
        """Suspend, resume or revoke a policy (owner role); a revocation needs the owner's signed ``statement``
        (:func:`dsbroker.policy.statements.sign_revocation`)."""
        name = _named(name, "policies")
        if action == "suspend":
            return self._call(self._policies.SuspendPolicy,
                              policies_pb.SuspendPolicyRequest(name=name, reason=reason)).policy
        if action == "resume":
            return self._call(self._policies.ResumePolicy, policies_pb.ResumePolicyRequest(name=name)).policy
        if action == "revoke":
            return self.revoke_policy(name, statement, reason=reason).policy
        raise ValueError(f"unknown policy action {action!r}")

    def revoke_policy(self, name: str, statement: str, *, reason: str = "") -> policies_pb.RevokePolicyResponse:
        """Revoke a policy with the owner's signed statement; the answer names the sandboxes that kept it."""
        return self._call(self._policies.RevokePolicy, policies_pb.RevokePolicyRequest(
            name=_named(name, "policies"), reason=reason, statement=statement))

    def list_access_records(self, *, page_size: int = 0, page_token: str = "",
                            where: RecordFilter = RecordFilter()) -> tuple[list[StoredRecord], str]:
        """A page of access records (auditor role) as stored, so their hashes can be checked, and the next
        page's token. ``where`` filters by time (ISO 8601), department, grant, decision and event."""
        request = audit_pb.ListAccessRecordsRequest(page_size=page_size, page_token=page_token,
                                                    department=where.department,
                                                    policy=_named(where.grant_id, "policies") if where.grant_id else "",
                                                    decision=where.decision, event=where.event)
        for field_name, text in (("start_time", where.since), ("end_time", where.until)):
            if text:
                getattr(request, field_name).FromDatetime(dt.datetime.fromisoformat(text))
        response = self._call(self._audit.ListAccessRecords, request)
        return [record_from_proto(r) for r in response.access_records], response.next_page_token

    def get_access_record(self, seq: int) -> StoredRecord:
        """One access record (auditor role)."""
        return record_from_proto(self._call(self._audit.GetAccessRecord,
                                            audit_pb.GetAccessRecordRequest(name=f"accessRecords/{seq}")).access_record)

    def list_checkpoints(self, *, page_size: int = 0, page_token: str = "") -> tuple[list[Checkpoint], str]:
        """A page of the broker's signed checkpoints (auditor role), and the next page's token."""
        response = self._call(self._audit.ListCheckpoints,
                              audit_pb.ListCheckpointsRequest(page_size=page_size, page_token=page_token))
        return [Checkpoint.from_json(c.json) for c in response.checkpoints], response.next_page_token

    def _call(self, method, request, *, timeout: float | None = None):
        try:
            return method(request, timeout=timeout or self.timeout,
                          metadata=(*self._authorization, (REQUEST_ID_HEADER, str(uuid.uuid4()))))
        except grpc.RpcError as rpc_error:
            raise error_from_rpc_error(rpc_error) from None

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def record_from_proto(message: audit_pb.AccessRecord) -> StoredRecord:
    """A stored record from its message, exactly as hashed (the detail travels as its stored JSON)."""
    return from_row({
        "seq": message.seq, "event_id": message.event_id,
        "at": message.create_time.ToDatetime(tzinfo=dt.timezone.utc).isoformat(timespec="microseconds"),
        "event": message.event, "decision": message.decision, "reason": message.reason, "subject": message.subject,
        "department": message.department, "token_id": message.token_id, "client": message.client,
        "request_id": message.request_id, "grant_id": message.policy.removeprefix("policies/"),
        "policy_version": message.policy_version,
        "policy_sha256": message.policy_sha256, "sql": message.sql, "sql_sha256": message.sql_sha256,
        "rewritten_sql": message.rewritten_sql, "rewritten_sql_sha256": message.rewritten_sql_sha256,
        "detail": message.detail_json or "{}", "prev_hash": message.prev_hash, "hash": message.hash,
        "sql_bytes": message.sql_size_bytes if message.HasField("sql_size_bytes") else None,
        "rewritten_sql_bytes": (message.rewritten_sql_size_bytes if message.HasField("rewritten_sql_size_bytes")
                                else None),
        "seal_key_id": message.seal_key_id, "seal": message.seal})


def noise_dict(noise: results_pb2.NoiseReport) -> dict:
    """A noise report as plain JSON-ready values (numbers stay numbers)."""
    return {"epsilon_spent": noise.epsilon_spent, "epsilon_total_spent": noise.epsilon_total_spent,
            "epsilon_budget": noise.epsilon_budget, "dataset_epsilon_spent": noise.dataset_epsilon_spent,
            "dataset_epsilon_budget": noise.dataset_epsilon_budget, "delta": noise.delta, "threshold": noise.threshold,
            "repeated_answer": noise.repeated_answer, "groups_per_entity": noise.groups_per_entity,
            "columns": [{"name": c.name, "scale": c.scale, "half_width_95": c.half_width_95} for c in noise.columns]}


def _named(name: str, collection: str) -> str:
    """The resource name a request carries, from the bare id a department writes (or the name itself)."""
    return name if name.startswith(f"{collection}/") else f"{collection}/{name}"


def access_record_seq(name: str) -> int:
    """The sequence number in an access record's name, ``accessRecords/{seq}`` (0 when there is none)."""
    number = name.removeprefix("accessRecords/")
    return int(number) if number.isascii() and number.isdigit() else 0


def _jsonable(value):
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return str(value) if not hasattr(value, "isoformat") else value.isoformat()
