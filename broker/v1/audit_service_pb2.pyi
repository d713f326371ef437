import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccessRecord(_message.Message):
    __slots__ = ("name", "seq", "event_id", "create_time", "event", "decision", "reason", "subject", "department", "token_id", "client", "request_id", "policy", "policy_version", "policy_sha256", "sql", "sql_sha256", "rewritten_sql", "rewritten_sql_sha256", "detail_json", "prev_hash", "hash", "sql_size_bytes", "rewritten_sql_size_bytes", "seal_key_id", "seal")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_SHA256_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    SQL_SHA256_FIELD_NUMBER: _ClassVar[int]
    REWRITTEN_SQL_FIELD_NUMBER: _ClassVar[int]
    REWRITTEN_SQL_SHA256_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    SQL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    REWRITTEN_SQL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SEAL_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SEAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    seq: int
    event_id: str
    create_time: _timestamp_pb2.Timestamp
    event: str
    decision: str
    reason: str
    subject: str
    department: str
    token_id: str
    client: str
    request_id: str
    policy: str
    policy_version: int
    policy_sha256: str
    sql: str
    sql_sha256: str
    rewritten_sql: str
    rewritten_sql_sha256: str
    detail_json: str
    prev_hash: str
    hash: str
    sql_size_bytes: int
    rewritten_sql_size_bytes: int
    seal_key_id: str
    seal: str
    def __init__(self, name: _Optional[str] = ..., seq: _Optional[int] = ..., event_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event: _Optional[str] = ..., decision: _Optional[str] = ..., reason: _Optional[str] = ..., subject: _Optional[str] = ..., department: _Optional[str] = ..., token_id: _Optional[str] = ..., client: _Optional[str] = ..., request_id: _Optional[str] = ..., policy: _Optional[str] = ..., policy_version: _Optional[int] = ..., policy_sha256: _Optional[str] = ..., sql: _Optional[str] = ..., sql_sha256: _Optional[str] = ..., rewritten_sql: _Optional[str] = ..., rewritten_sql_sha256: _Optional[str] = ..., detail_json: _Optional[str] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ..., sql_size_bytes: _Optional[int] = ..., rewritten_sql_size_bytes: _Optional[int] = ..., seal_key_id: _Optional[str] = ..., seal: _Optional[str] = ...) -> None: ...

class ListAccessRecordsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "start_time", "end_time", "department", "policy", "decision", "event")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    department: str
    policy: str
    decision: str
    event: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., department: _Optional[str] = ..., policy: _Optional[str] = ..., decision: _Optional[str] = ..., event: _Optional[str] = ...) -> None: ...

class ListAccessRecordsResponse(_message.Message):
    __slots__ = ("access_records", "next_page_token")
    ACCESS_RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    access_records: _containers.RepeatedCompositeFieldContainer[AccessRecord]
    next_page_token: str
    def __init__(self, access_records: _Optional[_Iterable[_Union[AccessRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAccessRecordRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetAccessRecordResponse(_message.Message):
    __slots__ = ("access_record",)
    ACCESS_RECORD_FIELD_NUMBER: _ClassVar[int]
    access_record: AccessRecord
    def __init__(self, access_record: _Optional[_Union[AccessRecord, _Mapping]] = ...) -> None: ...

class ListCheckpointsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("size", "root", "prev", "sign_time", "key_id", "signature", "json")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    PREV_FIELD_NUMBER: _ClassVar[int]
    SIGN_TIME_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    size: int
    root: str
    prev: str
    sign_time: str
    key_id: str
    signature: str
    json: str
    def __init__(self, size: _Optional[int] = ..., root: _Optional[str] = ..., prev: _Optional[str] = ..., sign_time: _Optional[str] = ..., key_id: _Optional[str] = ..., signature: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...

class ListCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints", "next_page_token")
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[Checkpoint]
    next_page_token: str
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[Checkpoint, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
