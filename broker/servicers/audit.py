"""AuditService: the access log for callers with the auditor role. Reads are recorded by the
call-audit interceptor (event ``audit.read``), like every other call."""

from __future__ import annotations

import base64
import datetime as dt

import grpc

from broker.access_log import AccessLog, RecordFilter, StoredRecord
from broker.audit.checkpoints import Checkpoint
from broker.audit.records import to_row
from broker.auth import require_role
from broker.errors import DsbrokerError
from broker.servicers.resource_names import timestamp
from broker.v1 import audit_service_pb2 as pb
from broker.v1 import audit_service_pb2_grpc as pb_grpc
from broker.workflow import RequestFieldError

COLLECTION = "accessRecords"
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000
DECISIONS = ("allow", "deny", "released", "error")


class AuditServicer(pb_grpc.AuditServiceServicer):
    """Converts between protos and the access log."""

    def __init__(self, access_log: AccessLog) -> None:
        self.access_log = access_log

    def ListAccessRecords(self, request, context):
        require_role("auditor")
        limit, after = _page(request.page_size, request.page_token)
        if request.decision and request.decision not in DECISIONS:
            raise RequestFieldError(f"decision must be one of {', '.join(DECISIONS)}", field="decision")
        where = RecordFilter(since=_iso(request, "start_time"), until=_iso(request, "end_time"),
                             department=request.department, grant_id=request.grant, decision=request.decision,
                             event=request.event)
        records = self.access_log.records(after=after, limit=limit + 1, where=where)
        token = _token(records[limit - 1].seq) if len(records) > limit else ""
        return pb.ListAccessRecordsResponse(access_records=[to_proto(r) for r in records[:limit]],
                                            next_page_token=token)

    def GetAccessRecord(self, request, context):
        require_role("auditor")
        seq_text = request.name.removeprefix(f"{COLLECTION}/")
        if not seq_text.isdigit() or int(seq_text) < 1:
            raise DsbrokerError(f"name must be {COLLECTION}/{{seq}}", reason="RESOURCE_NAME_INVALID",
                                code=grpc.StatusCode.INVALID_ARGUMENT, field="name")
        record = self.access_log.store.record(int(seq_text))
        if record is None:
            raise DsbrokerError(f"no access record {seq_text}", reason="ACCESS_RECORD_NOT_FOUND",
                                code=grpc.StatusCode.NOT_FOUND, subject=f"{COLLECTION}/{seq_text}")
        return pb.GetAccessRecordResponse(access_record=to_proto(record))

    def ListCheckpoints(self, request, context):
        require_role("auditor")
        limit, after = _page(request.page_size, request.page_token)
        checkpoints = [c for c in self.access_log.checkpoints() if c.size > after][:limit + 1]
        token = _token(checkpoints[limit - 1].size) if len(checkpoints) > limit else ""
        return pb.ListCheckpointsResponse(checkpoints=[checkpoint_proto(c) for c in checkpoints[:limit]],
                                          next_page_token=token)


def to_proto(record: StoredRecord) -> pb.AccessRecord:
    """The AccessRecord message of a stored record."""
    return pb.AccessRecord(
        name=f"{COLLECTION}/{record.seq}", seq=record.seq, event_id=record.event_id,
        create_time=timestamp(record.at), event=record.event, decision=record.decision, reason=record.reason,
        subject=record.subject, department=record.department, token_id=record.token_id, client=record.client,
        request_id=record.request_id, grant=record.grant_id, policy_version=record.policy_version,
        policy_sha256=record.policy_sha256, sql=record.sql, sql_sha256=record.sql_sha256,
        rewritten_sql=record.rewritten_sql, rewritten_sql_sha256=record.rewritten_sql_sha256,
        detail_json=to_row(record)["detail"],
        prev_hash=record.prev_hash, hash=record.hash, sql_bytes=record.sql_bytes,
        rewritten_sql_bytes=record.rewritten_sql_bytes, seal_key_id=record.seal_key_id, seal=record.seal)


def checkpoint_proto(checkpoint: Checkpoint) -> pb.Checkpoint:
    """The Checkpoint message of a signed checkpoint."""
    return pb.Checkpoint(size=checkpoint.size, root=checkpoint.root, prev=checkpoint.prev, sign_time=checkpoint.at,
                         key_id=checkpoint.key_id, signature=checkpoint.signature, json=checkpoint.to_json())


def _page(page_size: int, page_token: str) -> tuple[int, int]:
    if page_size < 0:
        raise RequestFieldError("page_size must not be negative", field="page_size")
    after = 0
    if page_token:
        try:
            after = int(base64.urlsafe_b64decode(page_token.encode()).decode())
        except ValueError:
            raise RequestFieldError("page_token is not one this server issued", field="page_token",
                                    reason="PAGE_TOKEN_INVALID") from None
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE), after


def _token(seq: int) -> str:
    return base64.urlsafe_b64encode(str(seq).encode()).decode()


def _iso(request, field: str) -> str:
    if not request.HasField(field):
        return ""
    return getattr(request, field).ToDatetime(tzinfo=dt.timezone.utc).isoformat(timespec="microseconds")
