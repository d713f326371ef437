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

class PolicyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_STATE_UNSPECIFIED: _ClassVar[PolicyState]
    POLICY_STATE_ACTIVE: _ClassVar[PolicyState]
    POLICY_STATE_SUSPENDED: _ClassVar[PolicyState]
    POLICY_STATE_REVOKED: _ClassVar[PolicyState]
    POLICY_STATE_EXPIRED: _ClassVar[PolicyState]
    POLICY_STATE_EXHAUSTED: _ClassVar[PolicyState]
POLICY_STATE_UNSPECIFIED: PolicyState
POLICY_STATE_ACTIVE: PolicyState
POLICY_STATE_SUSPENDED: PolicyState
POLICY_STATE_REVOKED: PolicyState
POLICY_STATE_EXPIRED: PolicyState
POLICY_STATE_EXHAUSTED: PolicyState

class Policy(_message.Message):
    __slots__ = ("name", "version", "state", "department", "dataset", "purpose", "valid_from", "valid_until", "document", "sha256", "access_request", "state_reason", "update_time", "reused_version_body_sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ACCESS_REQUEST_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REUSED_VERSION_BODY_SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    state: PolicyState
    department: str
    dataset: str
    purpose: str
    valid_from: str
    valid_until: str
    document: str
    sha256: str
    access_request: str
    state_reason: str
    update_time: _timestamp_pb2.Timestamp
    reused_version_body_sha256: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., state: _Optional[_Union[PolicyState, str]] = ..., department: _Optional[str] = ..., dataset: _Optional[str] = ..., purpose: _Optional[str] = ..., valid_from: _Optional[str] = ..., valid_until: _Optional[str] = ..., document: _Optional[str] = ..., sha256: _Optional[str] = ..., access_request: _Optional[str] = ..., state_reason: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reused_version_body_sha256: _Optional[str] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies", "next_page_token")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[Policy]
    next_page_token: str
    def __init__(self, policies: _Optional[_Iterable[_Union[Policy, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class SuspendPolicyRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SuspendPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class ResumePolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ResumePolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class RevokePolicyRequest(_message.Message):
    __slots__ = ("name", "reason", "statement")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    statement: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ..., statement: _Optional[str] = ...) -> None: ...

class RevokePolicyResponse(_message.Message):
    __slots__ = ("policy", "sandboxes_notified")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SANDBOXES_NOTIFIED_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    sandboxes_notified: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ..., sandboxes_notified: _Optional[_Iterable[str]] = ...) -> None: ...
