"""AuditService: the access log for callers with the auditor role. Reads are recorded by the
call-audit interceptor (event ``audit.read``), like every other call."""

from __future__ import annotations

from broker.access_log.log import AccessLog, RecordFilter, StoredRecord
from dsbroker.records.checkpoints import Checkpoint
from dsbroker.records.access_record import to_row
from broker.permissions import require_role
from dsbroker.errors import DsbrokerError
from dsbroker.rpc.request_fields import (RequestFieldError, bounded_text, page_size, page_token, read_page_token,
                                   resource_number, timestamp_field)
from broker.servicers.resource_names import timestamp
from broker.v1 import audit_service_pb2 as pb
from broker.v1 import audit_service_pb2_grpc as pb_grpc

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
                             department=bounded_text(request.department, "department"),
                             grant_id=bounded_text(request.grant, "grant"), decision=request.decision,
                             event=bounded_text(request.event, "event"))
        records = self.access_log.records(after=after, limit=limit + 1, where=where)
        token = page_token(records[limit - 1].seq) if len(records) > limit else ""
        return pb.ListAccessRecordsResponse(access_records=[to_proto(r) for r in records[:limit]],
                                            next_page_token=token)

    def GetAccessRecord(self, request, context):
        require_role("auditor")
        seq = resource_number(request.name, COLLECTION)
        record = self.access_log.store.record(seq)
        if record is None:
            raise DsbrokerError(f"no access record {seq}", reason="ACCESS_RECORD_NOT_FOUND",
                                subject=f"{COLLECTION}/{seq}")
        return pb.GetAccessRecordResponse(access_record=to_proto(record))

    def ListCheckpoints(self, request, context):
        require_role("auditor")
        limit, after = _page(request.page_size, request.page_token)
        checkpoints = [c for c in self.access_log.checkpoints() if c.size > after][:limit + 1]
        token = page_token(checkpoints[limit - 1].size) if len(checkpoints) > limit else ""
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


def _page(size: int, token: str) -> tuple[int, int]:
    """The page's size and the position (a seq or a size) it starts after."""
    after = read_page_token(token, int)
    return page_size(size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE), after[0] if after else 0


def _iso(request, field: str) -> str:
    moment = timestamp_field(request, field)
    return moment.isoformat(timespec="microseconds") if moment else ""
