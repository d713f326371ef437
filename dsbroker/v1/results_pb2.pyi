from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ColumnType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLUMN_TYPE_UNSPECIFIED: _ClassVar[ColumnType]
    COLUMN_TYPE_INTEGER: _ClassVar[ColumnType]
    COLUMN_TYPE_DOUBLE: _ClassVar[ColumnType]
    COLUMN_TYPE_STRING: _ClassVar[ColumnType]
    COLUMN_TYPE_DECIMAL: _ClassVar[ColumnType]
    COLUMN_TYPE_DATE: _ClassVar[ColumnType]
    COLUMN_TYPE_TIMESTAMP: _ClassVar[ColumnType]
    COLUMN_TYPE_BOOLEAN: _ClassVar[ColumnType]

class EncryptedColumnKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCRYPTED_COLUMN_KIND_UNSPECIFIED: _ClassVar[EncryptedColumnKind]
    ENCRYPTED_COLUMN_KIND_TOTAL: _ClassVar[EncryptedColumnKind]
    ENCRYPTED_COLUMN_KIND_AVERAGE: _ClassVar[EncryptedColumnKind]
COLUMN_TYPE_UNSPECIFIED: ColumnType
COLUMN_TYPE_INTEGER: ColumnType
COLUMN_TYPE_DOUBLE: ColumnType
COLUMN_TYPE_STRING: ColumnType
COLUMN_TYPE_DECIMAL: ColumnType
COLUMN_TYPE_DATE: ColumnType
COLUMN_TYPE_TIMESTAMP: ColumnType
COLUMN_TYPE_BOOLEAN: ColumnType
ENCRYPTED_COLUMN_KIND_UNSPECIFIED: EncryptedColumnKind
ENCRYPTED_COLUMN_KIND_TOTAL: EncryptedColumnKind
ENCRYPTED_COLUMN_KIND_AVERAGE: EncryptedColumnKind

class ResultTable(_message.Message):
    __slots__ = ("columns", "row_count")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[ResultColumn]
    row_count: int
    def __init__(self, columns: _Optional[_Iterable[_Union[ResultColumn, _Mapping]]] = ..., row_count: _Optional[int] = ...) -> None: ...

class ResultColumn(_message.Message):
    __slots__ = ("name", "type", "nulls", "int_values", "double_values", "string_values", "withheld", "rolled_up")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NULLS_FIELD_NUMBER: _ClassVar[int]
    INT_VALUES_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUES_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUES_FIELD_NUMBER: _ClassVar[int]
    WITHHELD_FIELD_NUMBER: _ClassVar[int]
    ROLLED_UP_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: ColumnType
    nulls: _containers.RepeatedScalarFieldContainer[bool]
    int_values: _containers.RepeatedScalarFieldContainer[int]
    double_values: _containers.RepeatedScalarFieldContainer[float]
    string_values: _containers.RepeatedScalarFieldContainer[str]
    withheld: _containers.RepeatedScalarFieldContainer[bool]
    rolled_up: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[ColumnType, str]] = ..., nulls: _Optional[_Iterable[bool]] = ..., int_values: _Optional[_Iterable[int]] = ..., double_values: _Optional[_Iterable[float]] = ..., string_values: _Optional[_Iterable[str]] = ..., withheld: _Optional[_Iterable[bool]] = ..., rolled_up: _Optional[_Iterable[bool]] = ...) -> None: ...

class NoiseReport(_message.Message):
    __slots__ = ("epsilon_spent", "epsilon_total_spent", "epsilon_budget", "delta", "threshold", "repeated_answer", "columns", "groups_per_entity", "dataset_epsilon_spent", "dataset_epsilon_budget")
    EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    EPSILON_TOTAL_SPENT_FIELD_NUMBER: _ClassVar[int]
    EPSILON_BUDGET_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REPEATED_ANSWER_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_PER_ENTITY_FIELD_NUMBER: _ClassVar[int]
    DATASET_EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    DATASET_EPSILON_BUDGET_FIELD_NUMBER: _ClassVar[int]
    epsilon_spent: float
    epsilon_total_spent: float
    epsilon_budget: float
    delta: float
    threshold: int
    repeated_answer: bool
    columns: _containers.RepeatedCompositeFieldContainer[NoisyColumn]
    groups_per_entity: int
    dataset_epsilon_spent: float
    dataset_epsilon_budget: float
    def __init__(self, epsilon_spent: _Optional[float] = ..., epsilon_total_spent: _Optional[float] = ..., epsilon_budget: _Optional[float] = ..., delta: _Optional[float] = ..., threshold: _Optional[int] = ..., repeated_answer: _Optional[bool] = ..., columns: _Optional[_Iterable[_Union[NoisyColumn, _Mapping]]] = ..., groups_per_entity: _Optional[int] = ..., dataset_epsilon_spent: _Optional[float] = ..., dataset_epsilon_budget: _Optional[float] = ...) -> None: ...

class NoisyColumn(_message.Message):
    __slots__ = ("name", "scale", "half_width_95")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    HALF_WIDTH_95_FIELD_NUMBER: _ClassVar[int]
    name: str
    scale: float
    half_width_95: float
    def __init__(self, name: _Optional[str] = ..., scale: _Optional[float] = ..., half_width_95: _Optional[float] = ...) -> None: ...

class Encryption(_message.Message):
    __slots__ = ("public_context", "key_signature")
    PUBLIC_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    public_context: bytes
    key_signature: bytes
    def __init__(self, public_context: _Optional[bytes] = ..., key_signature: _Optional[bytes] = ...) -> None: ...

class EncryptedTable(_message.Message):
    __slots__ = ("groups", "columns", "key_id", "partitions", "partitions_withheld")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_WITHHELD_FIELD_NUMBER: _ClassVar[int]
    groups: ResultTable
    columns: _containers.RepeatedCompositeFieldContainer[EncryptedColumn]
    key_id: str
    partitions: int
    partitions_withheld: bytes
    def __init__(self, groups: _Optional[_Union[ResultTable, _Mapping]] = ..., columns: _Optional[_Iterable[_Union[EncryptedColumn, _Mapping]]] = ..., key_id: _Optional[str] = ..., partitions: _Optional[int] = ..., partitions_withheld: _Optional[bytes] = ...) -> None: ...

class EncryptedColumn(_message.Message):
    __slots__ = ("name", "position", "kind", "ciphertext", "count_ciphertext")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    COUNT_CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    position: int
    kind: EncryptedColumnKind
    ciphertext: bytes
    count_ciphertext: bytes
    def __init__(self, name: _Optional[str] = ..., position: _Optional[int] = ..., kind: _Optional[_Union[EncryptedColumnKind, str]] = ..., ciphertext: _Optional[bytes] = ..., count_ciphertext: _Optional[bytes] = ...) -> None: ...
