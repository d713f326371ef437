from dsbroker.v1 import product_pb2 as _product_pb2
from dsbroker.v1 import results_pb2 as _results_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunQueryRequest(_message.Message):
    __slots__ = ("policy", "sql", "request_id", "encryption", "product")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    policy: str
    sql: str
    request_id: str
    encryption: _results_pb2.Encryption
    product: _product_pb2.ProductCall
    def __init__(self, policy: _Optional[str] = ..., sql: _Optional[str] = ..., request_id: _Optional[str] = ..., encryption: _Optional[_Union[_results_pb2.Encryption, _Mapping]] = ..., product: _Optional[_Union[_product_pb2.ProductCall, _Mapping]] = ...) -> None: ...

class RunQueryResponse(_message.Message):
    __slots__ = ("table", "truncated", "rewritten_sql", "disclosure_rules", "access_record", "policy_version", "noise", "encrypted")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    REWRITTEN_SQL_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_RULES_FIELD_NUMBER: _ClassVar[int]
    ACCESS_RECORD_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_FIELD_NUMBER: _ClassVar[int]
    table: _results_pb2.ResultTable
    truncated: bool
    rewritten_sql: str
    disclosure_rules: _containers.RepeatedCompositeFieldContainer[DisclosureRule]
    access_record: str
    policy_version: int
    noise: _results_pb2.NoiseReport
    encrypted: _results_pb2.EncryptedTable
    def __init__(self, table: _Optional[_Union[_results_pb2.ResultTable, _Mapping]] = ..., truncated: _Optional[bool] = ..., rewritten_sql: _Optional[str] = ..., disclosure_rules: _Optional[_Iterable[_Union[DisclosureRule, _Mapping]]] = ..., access_record: _Optional[str] = ..., policy_version: _Optional[int] = ..., noise: _Optional[_Union[_results_pb2.NoiseReport, _Mapping]] = ..., encrypted: _Optional[_Union[_results_pb2.EncryptedTable, _Mapping]] = ...) -> None: ...

class ExplainQueryRequest(_message.Message):
    __slots__ = ("policy", "sql", "request_id", "encrypted", "product")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    policy: str
    sql: str
    request_id: str
    encrypted: bool
    product: _product_pb2.ProductCall
    def __init__(self, policy: _Optional[str] = ..., sql: _Optional[str] = ..., request_id: _Optional[str] = ..., encrypted: _Optional[bool] = ..., product: _Optional[_Union[_product_pb2.ProductCall, _Mapping]] = ...) -> None: ...

class ExplainQueryResponse(_message.Message):
    __slots__ = ("rewritten_sql", "steps", "disclosure_rules", "max_groups", "lookup_tables", "access_record", "policy_version", "noise", "release_plan")
    REWRITTEN_SQL_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_RULES_FIELD_NUMBER: _ClassVar[int]
    MAX_GROUPS_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_TABLES_FIELD_NUMBER: _ClassVar[int]
    ACCESS_RECORD_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_PLAN_FIELD_NUMBER: _ClassVar[int]
    rewritten_sql: str
    steps: _containers.RepeatedCompositeFieldContainer[GuardStep]
    disclosure_rules: _containers.RepeatedCompositeFieldContainer[DisclosureRule]
    max_groups: int
    lookup_tables: _containers.RepeatedScalarFieldContainer[str]
    access_record: str
    policy_version: int
    noise: _results_pb2.NoiseReport
    release_plan: str
    def __init__(self, rewritten_sql: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[GuardStep, _Mapping]]] = ..., disclosure_rules: _Optional[_Iterable[_Union[DisclosureRule, _Mapping]]] = ..., max_groups: _Optional[int] = ..., lookup_tables: _Optional[_Iterable[str]] = ..., access_record: _Optional[str] = ..., policy_version: _Optional[int] = ..., noise: _Optional[_Union[_results_pb2.NoiseReport, _Mapping]] = ..., release_plan: _Optional[str] = ...) -> None: ...

class GuardStep(_message.Message):
    __slots__ = ("rule", "action", "summary")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[GuardStep.Action]
        ACTION_CHECKED: _ClassVar[GuardStep.Action]
        ACTION_REWROTE: _ClassVar[GuardStep.Action]
        ACTION_UNCHANGED: _ClassVar[GuardStep.Action]
    ACTION_UNSPECIFIED: GuardStep.Action
    ACTION_CHECKED: GuardStep.Action
    ACTION_REWROTE: GuardStep.Action
    ACTION_UNCHANGED: GuardStep.Action
    RULE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    rule: str
    action: GuardStep.Action
    summary: str
    def __init__(self, rule: _Optional[str] = ..., action: _Optional[_Union[GuardStep.Action, str]] = ..., summary: _Optional[str] = ...) -> None: ...

class DisclosureRule(_message.Message):
    __slots__ = ("rule", "column", "threshold", "description", "cells_withheld")
    RULE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CELLS_WITHHELD_FIELD_NUMBER: _ClassVar[int]
    rule: str
    column: str
    threshold: int
    description: str
    cells_withheld: int
    def __init__(self, rule: _Optional[str] = ..., column: _Optional[str] = ..., threshold: _Optional[int] = ..., description: _Optional[str] = ..., cells_withheld: _Optional[int] = ...) -> None: ...
