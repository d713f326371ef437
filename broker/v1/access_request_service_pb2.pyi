import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccessRequestState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCESS_REQUEST_STATE_UNSPECIFIED: _ClassVar[AccessRequestState]
    ACCESS_REQUEST_STATE_SUBMITTED: _ClassVar[AccessRequestState]
    ACCESS_REQUEST_STATE_REVIEWED: _ClassVar[AccessRequestState]
    ACCESS_REQUEST_STATE_ACTIVE: _ClassVar[AccessRequestState]
    ACCESS_REQUEST_STATE_REJECTED: _ClassVar[AccessRequestState]
    ACCESS_REQUEST_STATE_WITHDRAWN: _ClassVar[AccessRequestState]
    ACCESS_REQUEST_STATE_SUSPENDED: _ClassVar[AccessRequestState]
    ACCESS_REQUEST_STATE_REVOKED: _ClassVar[AccessRequestState]
    ACCESS_REQUEST_STATE_EXPIRED: _ClassVar[AccessRequestState]
    ACCESS_REQUEST_STATE_EXHAUSTED: _ClassVar[AccessRequestState]

class ColumnUse(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLUMN_USE_UNSPECIFIED: _ClassVar[ColumnUse]
    COLUMN_USE_GROUP: _ClassVar[ColumnUse]
    COLUMN_USE_FILTER: _ClassVar[ColumnUse]
    COLUMN_USE_MEASURE: _ClassVar[ColumnUse]
ACCESS_REQUEST_STATE_UNSPECIFIED: AccessRequestState
ACCESS_REQUEST_STATE_SUBMITTED: AccessRequestState
ACCESS_REQUEST_STATE_REVIEWED: AccessRequestState
ACCESS_REQUEST_STATE_ACTIVE: AccessRequestState
ACCESS_REQUEST_STATE_REJECTED: AccessRequestState
ACCESS_REQUEST_STATE_WITHDRAWN: AccessRequestState
ACCESS_REQUEST_STATE_SUSPENDED: AccessRequestState
ACCESS_REQUEST_STATE_REVOKED: AccessRequestState
ACCESS_REQUEST_STATE_EXPIRED: AccessRequestState
ACCESS_REQUEST_STATE_EXHAUSTED: AccessRequestState
COLUMN_USE_UNSPECIFIED: ColumnUse
COLUMN_USE_GROUP: ColumnUse
COLUMN_USE_FILTER: ColumnUse
COLUMN_USE_MEASURE: ColumnUse

class RequestedColumn(_message.Message):
    __slots__ = ("column", "use", "reason")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    USE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    column: str
    use: ColumnUse
    reason: str
    def __init__(self, column: _Optional[str] = ..., use: _Optional[_Union[ColumnUse, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class Approval(_message.Message):
    __slots__ = ("role", "by", "subject", "key", "signed_at", "signature", "comment")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNED_AT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    by: str
    subject: str
    key: str
    signed_at: str
    signature: str
    comment: str
    def __init__(self, role: _Optional[str] = ..., by: _Optional[str] = ..., subject: _Optional[str] = ..., key: _Optional[str] = ..., signed_at: _Optional[str] = ..., signature: _Optional[str] = ..., comment: _Optional[str] = ...) -> None: ...

class ExampleQueryCheck(_message.Message):
    __slots__ = ("sql", "accepted", "rewritten_sql", "reason", "message")
    SQL_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REWRITTEN_SQL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    sql: str
    accepted: bool
    rewritten_sql: str
    reason: str
    message: str
    def __init__(self, sql: _Optional[str] = ..., accepted: _Optional[bool] = ..., rewritten_sql: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class AccessRequest(_message.Message):
    __slots__ = ("name", "state", "department", "district", "requester", "purpose", "dataset", "columns", "example_queries", "result_modes", "valid_from", "valid_until", "queries_per_day", "queries_total", "create_time", "update_time", "draft_policy", "approvals", "approval_stages", "state_reason", "policy", "example_checks", "products")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    DISTRICT_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_QUERIES_FIELD_NUMBER: _ClassVar[int]
    RESULT_MODES_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    QUERIES_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    QUERIES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DRAFT_POLICY_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_STAGES_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_CHECKS_FIELD_NUMBER: _ClassVar[int]
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: AccessRequestState
    department: str
    district: str
    requester: str
    purpose: str
    dataset: str
    columns: _containers.RepeatedCompositeFieldContainer[RequestedColumn]
    example_queries: _containers.RepeatedScalarFieldContainer[str]
    result_modes: _containers.RepeatedScalarFieldContainer[str]
    valid_from: str
    valid_until: str
    queries_per_day: int
    queries_total: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    draft_policy: str
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    approval_stages: _containers.RepeatedScalarFieldContainer[str]
    state_reason: str
    policy: str
    example_checks: _containers.RepeatedCompositeFieldContainer[ExampleQueryCheck]
    products: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[AccessRequestState, str]] = ..., department: _Optional[str] = ..., district: _Optional[str] = ..., requester: _Optional[str] = ..., purpose: _Optional[str] = ..., dataset: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[RequestedColumn, _Mapping]]] = ..., example_queries: _Optional[_Iterable[str]] = ..., result_modes: _Optional[_Iterable[str]] = ..., valid_from: _Optional[str] = ..., valid_until: _Optional[str] = ..., queries_per_day: _Optional[int] = ..., queries_total: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., draft_policy: _Optional[str] = ..., approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ..., approval_stages: _Optional[_Iterable[str]] = ..., state_reason: _Optional[str] = ..., policy: _Optional[str] = ..., example_checks: _Optional[_Iterable[_Union[ExampleQueryCheck, _Mapping]]] = ..., products: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateAccessRequestRequest(_message.Message):
    __slots__ = ("access_request", "request_id")
    ACCESS_REQUEST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    access_request: AccessRequest
    request_id: str
    def __init__(self, access_request: _Optional[_Union[AccessRequest, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateAccessRequestResponse(_message.Message):
    __slots__ = ("access_request",)
    ACCESS_REQUEST_FIELD_NUMBER: _ClassVar[int]
    access_request: AccessRequest
    def __init__(self, access_request: _Optional[_Union[AccessRequest, _Mapping]] = ...) -> None: ...

class GetAccessRequestRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetAccessRequestResponse(_message.Message):
    __slots__ = ("access_request",)
    ACCESS_REQUEST_FIELD_NUMBER: _ClassVar[int]
    access_request: AccessRequest
    def __init__(self, access_request: _Optional[_Union[AccessRequest, _Mapping]] = ...) -> None: ...

class ListAccessRequestsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: AccessRequestState
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[AccessRequestState, str]] = ...) -> None: ...

class ListAccessRequestsResponse(_message.Message):
    __slots__ = ("access_requests", "next_page_token")
    ACCESS_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    access_requests: _containers.RepeatedCompositeFieldContainer[AccessRequest]
    next_page_token: str
    def __init__(self, access_requests: _Optional[_Iterable[_Union[AccessRequest, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WithdrawAccessRequestRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WithdrawAccessRequestResponse(_message.Message):
    __slots__ = ("access_request",)
    ACCESS_REQUEST_FIELD_NUMBER: _ClassVar[int]
    access_request: AccessRequest
    def __init__(self, access_request: _Optional[_Union[AccessRequest, _Mapping]] = ...) -> None: ...

class ApproveAccessRequestRequest(_message.Message):
    __slots__ = ("name", "policy_document", "comment")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    policy_document: str
    comment: str
    def __init__(self, name: _Optional[str] = ..., policy_document: _Optional[str] = ..., comment: _Optional[str] = ...) -> None: ...

class ApproveAccessRequestResponse(_message.Message):
    __slots__ = ("access_request",)
    ACCESS_REQUEST_FIELD_NUMBER: _ClassVar[int]
    access_request: AccessRequest
    def __init__(self, access_request: _Optional[_Union[AccessRequest, _Mapping]] = ...) -> None: ...

class RejectAccessRequestRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RejectAccessRequestResponse(_message.Message):
    __slots__ = ("access_request",)
    ACCESS_REQUEST_FIELD_NUMBER: _ClassVar[int]
    access_request: AccessRequest
    def __init__(self, access_request: _Optional[_Union[AccessRequest, _Mapping]] = ...) -> None: ...
