"""AuditService: the access log for callers with the auditor role. Reads are recorded by the
call-audit interceptor (event ``audit.read``), like every other call."""

from __future__ import annotations

from broker.access_log.log import AccessLog, RecordFilter, StoredRecord
from dsbroker.records.checkpoints import Checkpoint
from dsbroker.records.access_record import to_row
from broker.permissions import require_role
from dsbroker.errors import DsbrokerError
from dsbroker.rpc.pagination import Pages
from dsbroker.rpc.request_fields import RequestFieldError, bounded_text, resource_id, resource_number, timestamp_field
from broker.servicers.resource_names import ACCESS_RECORDS, policy_name, timestamp
from broker.workflow.policy_registry import POLICIES
from broker.v1 import audit_service_pb2 as pb
from broker.v1 import audit_service_pb2_grpc as pb_grpc

COLLECTION = ACCESS_RECORDS
RECORD_PAGES = Pages(COLLECTION, (int,), default_size=100, max_size=1000)  # after the seq, oldest first
CHECKPOINT_PAGES = Pages("checkpoints", (int,), default_size=100, max_size=1000)  # after the size, oldest first
DECISIONS = ("allow", "deny", "released", "error")


class AuditServicer(pb_grpc.AuditServiceServicer):
    """Converts between protos and the access log."""

    def __init__(self, access_log: AccessLog) -> None:
        self.access_log = access_log

    def ListAccessRecords(self, request, context):
        require_role("auditor")
        if request.decision and request.decision not in DECISIONS:
            raise RequestFieldError(f"decision must be one of {', '.join(DECISIONS)}", field="decision")
        where = RecordFilter(since=_iso(request, "start_time"), until=_iso(request, "end_time"),
                             department=bounded_text(request.department, "department"),
                             grant_id=resource_id(request.policy, POLICIES, "policy") if request.policy else "",
                             decision=request.decision, event=bounded_text(request.event, "event"))
        page = RECORD_PAGES.read(request.page_size, request.page_token, where.since, where.until, where.department,
                                 where.grant_id, where.decision, where.event)
        records, token = page.cut(self.access_log.records(after=page.after[0] if page.after else 0,
                                                          limit=page.limit, where=where), key=lambda r: (r.seq,))
        return pb.ListAccessRecordsResponse(access_records=[to_proto(r) for r in records], next_page_token=token)

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
        page = CHECKPOINT_PAGES.read(request.page_size, request.page_token)
        after = page.after[0] if page.after else 0
        checkpoints, token = page.cut([c for c in self.access_log.checkpoints() if c.size > after][:page.limit],
                                      key=lambda c: (c.size,))
        return pb.ListCheckpointsResponse(checkpoints=[checkpoint_proto(c) for c in checkpoints],
                                          next_page_token=token)


def to_proto(record: StoredRecord) -> pb.AccessRecord:
    """The AccessRecord message of a stored record."""
    return pb.AccessRecord(
        name=f"{COLLECTION}/{record.seq}", seq=record.seq, event_id=record.event_id,
        create_time=timestamp(record.at), event=record.event, decision=record.decision, reason=record.reason,
        subject=record.subject, department=record.department, token_id=record.token_id, client=record.client,
        request_id=record.request_id, policy=policy_name(record.grant_id), policy_version=record.policy_version,
        policy_sha256=record.policy_sha256, sql=record.sql, sql_sha256=record.sql_sha256,
        rewritten_sql=record.rewritten_sql, rewritten_sql_sha256=record.rewritten_sql_sha256,
        detail_json=to_row(record)["detail"],
        prev_hash=record.prev_hash, hash=record.hash, sql_size_bytes=record.sql_bytes,
        rewritten_sql_size_bytes=record.rewritten_sql_bytes, seal_key_id=record.seal_key_id, seal=record.seal)


def checkpoint_proto(checkpoint: Checkpoint) -> pb.Checkpoint:
    """The Checkpoint message of a signed checkpoint."""
    return pb.Checkpoint(size=checkpoint.size, root=checkpoint.root, prev=checkpoint.prev, sign_time=checkpoint.at,
                         key_id=checkpoint.key_id, signature=checkpoint.signature, json=checkpoint.to_json())


def _iso(request, field: str) -> str:
    moment = timestamp_field(request, field)
    return moment.isoformat(timespec="microseconds") if moment else ""
