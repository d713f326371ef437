from sandbox.v1 import sandbox_service_pb2 as _sandbox_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunQueryRequest(_message.Message):
    __slots__ = ("grant", "sql", "request_id")
    GRANT_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    grant: str
    sql: str
    request_id: str
    def __init__(self, grant: _Optional[str] = ..., sql: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RunQueryResponse(_message.Message):
    __slots__ = ("table", "truncated", "rewritten_sql", "disclosure_rules", "access_record", "policy_version")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    REWRITTEN_SQL_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_RULES_FIELD_NUMBER: _ClassVar[int]
    ACCESS_RECORD_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    table: _sandbox_service_pb2.ResultTable
    truncated: bool
    rewritten_sql: str
    disclosure_rules: _containers.RepeatedCompositeFieldContainer[DisclosureRule]
    access_record: int
    policy_version: int
    def __init__(self, table: _Optional[_Union[_sandbox_service_pb2.ResultTable, _Mapping]] = ..., truncated: _Optional[bool] = ..., rewritten_sql: _Optional[str] = ..., disclosure_rules: _Optional[_Iterable[_Union[DisclosureRule, _Mapping]]] = ..., access_record: _Optional[int] = ..., policy_version: _Optional[int] = ...) -> None: ...

class DisclosureRule(_message.Message):
    __slots__ = ("rule", "column", "threshold", "description")
    RULE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    rule: str
    column: str
    threshold: int
    description: str
    def __init__(self, rule: _Optional[str] = ..., column: _Optional[str] = ..., threshold: _Optional[int] = ..., description: _Optional[str] = ...) -> None: ...
