from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EncryptedColumnKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCRYPTED_COLUMN_KIND_UNSPECIFIED: _ClassVar[EncryptedColumnKind]
    ENCRYPTED_COLUMN_KIND_TOTAL: _ClassVar[EncryptedColumnKind]
    ENCRYPTED_COLUMN_KIND_AVERAGE: _ClassVar[EncryptedColumnKind]

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
ENCRYPTED_COLUMN_KIND_UNSPECIFIED: EncryptedColumnKind
ENCRYPTED_COLUMN_KIND_TOTAL: EncryptedColumnKind
ENCRYPTED_COLUMN_KIND_AVERAGE: EncryptedColumnKind
COLUMN_TYPE_UNSPECIFIED: ColumnType
COLUMN_TYPE_INTEGER: ColumnType
COLUMN_TYPE_DOUBLE: ColumnType
COLUMN_TYPE_STRING: ColumnType
COLUMN_TYPE_DECIMAL: ColumnType
COLUMN_TYPE_DATE: ColumnType
COLUMN_TYPE_TIMESTAMP: ColumnType
COLUMN_TYPE_BOOLEAN: ColumnType

class PublishPolicyStatementsRequest(_message.Message):
    __slots__ = ("statements", "policy_documents")
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    statements: _containers.RepeatedScalarFieldContainer[str]
    policy_documents: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, statements: _Optional[_Iterable[str]] = ..., policy_documents: _Optional[_Iterable[str]] = ...) -> None: ...

class PublishPolicyStatementsResponse(_message.Message):
    __slots__ = ("statements_added", "policy_versions_added", "sandbox_id")
    STATEMENTS_ADDED_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSIONS_ADDED_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    statements_added: int
    policy_versions_added: int
    sandbox_id: str
    def __init__(self, statements_added: _Optional[int] = ..., policy_versions_added: _Optional[int] = ..., sandbox_id: _Optional[str] = ...) -> None: ...

class ListPolicyStatementsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPolicyStatementsResponse(_message.Message):
    __slots__ = ("statements", "next_page_token")
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    statements: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, statements: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets",)
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("name", "title", "description", "entity_column", "row_filter", "min_entities", "approval_stages", "columns")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ENTITY_COLUMN_FIELD_NUMBER: _ClassVar[int]
    ROW_FILTER_FIELD_NUMBER: _ClassVar[int]
    MIN_ENTITIES_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_STAGES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    name: str
    title: str
    description: str
    entity_column: str
    row_filter: str
    min_entities: int
    approval_stages: _containers.RepeatedScalarFieldContainer[str]
    columns: _containers.RepeatedCompositeFieldContainer[DatasetColumn]
    def __init__(self, name: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., entity_column: _Optional[str] = ..., row_filter: _Optional[str] = ..., min_entities: _Optional[int] = ..., approval_stages: _Optional[_Iterable[str]] = ..., columns: _Optional[_Iterable[_Union[DatasetColumn, _Mapping]]] = ...) -> None: ...

class DatasetColumn(_message.Message):
    __slots__ = ("name", "type", "description", "unit", "classification", "levels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    description: str
    unit: str
    classification: str
    levels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., description: _Optional[str] = ..., unit: _Optional[str] = ..., classification: _Optional[str] = ..., levels: _Optional[_Iterable[str]] = ...) -> None: ...

class ExecutePlanRequest(_message.Message):
    __slots__ = ("plan", "request_id")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    request_id: str
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("dataset", "sql", "policy_id", "policy_version", "max_rows", "policy_document", "original_sql", "caller_token", "execution_id", "encryption", "caller_certificate", "policy_statements")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    POLICY_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_SQL_FIELD_NUMBER: _ClassVar[int]
    CALLER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_FIELD_NUMBER: _ClassVar[int]
    CALLER_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    POLICY_STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    sql: str
    policy_id: str
    policy_version: int
    max_rows: int
    policy_document: str
    original_sql: str
    caller_token: str
    execution_id: str
    encryption: Encryption
    caller_certificate: bytes
    policy_statements: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dataset: _Optional[str] = ..., sql: _Optional[str] = ..., policy_id: _Optional[str] = ..., policy_version: _Optional[int] = ..., max_rows: _Optional[int] = ..., policy_document: _Optional[str] = ..., original_sql: _Optional[str] = ..., caller_token: _Optional[str] = ..., execution_id: _Optional[str] = ..., encryption: _Optional[_Union[Encryption, _Mapping]] = ..., caller_certificate: _Optional[bytes] = ..., policy_statements: _Optional[_Iterable[str]] = ...) -> None: ...

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

class EncryptPartitionRequest(_message.Message):
    __slots__ = ("execution_id", "groups")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    groups: ResultTable
    def __init__(self, execution_id: _Optional[str] = ..., groups: _Optional[_Union[ResultTable, _Mapping]] = ...) -> None: ...

class EncryptPartitionResponse(_message.Message):
    __slots__ = ("encrypted", "sandbox_id")
    ENCRYPTED_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    encrypted: EncryptedTable
    sandbox_id: str
    def __init__(self, encrypted: _Optional[_Union[EncryptedTable, _Mapping]] = ..., sandbox_id: _Optional[str] = ...) -> None: ...

class ExecutePlanResponse(_message.Message):
    __slots__ = ("table", "truncated", "engine_micros", "cells_withheld", "noise", "threshold_cells_withheld", "secondary_cells_withheld", "sandbox_id", "encrypted", "partition_groups")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    ENGINE_MICROS_FIELD_NUMBER: _ClassVar[int]
    CELLS_WITHHELD_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_CELLS_WITHHELD_FIELD_NUMBER: _ClassVar[int]
    SECONDARY_CELLS_WITHHELD_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_FIELD_NUMBER: _ClassVar[int]
    PARTITION_GROUPS_FIELD_NUMBER: _ClassVar[int]
    table: ResultTable
    truncated: bool
    engine_micros: int
    cells_withheld: int
    noise: NoiseReport
    threshold_cells_withheld: int
    secondary_cells_withheld: int
    sandbox_id: str
    encrypted: EncryptedTable
    partition_groups: ResultTable
    def __init__(self, table: _Optional[_Union[ResultTable, _Mapping]] = ..., truncated: _Optional[bool] = ..., engine_micros: _Optional[int] = ..., cells_withheld: _Optional[int] = ..., noise: _Optional[_Union[NoiseReport, _Mapping]] = ..., threshold_cells_withheld: _Optional[int] = ..., secondary_cells_withheld: _Optional[int] = ..., sandbox_id: _Optional[str] = ..., encrypted: _Optional[_Union[EncryptedTable, _Mapping]] = ..., partition_groups: _Optional[_Union[ResultTable, _Mapping]] = ...) -> None: ...

class NoiseReport(_message.Message):
    __slots__ = ("epsilon_spent", "epsilon_total_spent", "epsilon_budget", "delta", "threshold", "repeated_answer", "columns", "groups_per_entity")
    EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    EPSILON_TOTAL_SPENT_FIELD_NUMBER: _ClassVar[int]
    EPSILON_BUDGET_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REPEATED_ANSWER_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_PER_ENTITY_FIELD_NUMBER: _ClassVar[int]
    epsilon_spent: float
    epsilon_total_spent: float
    epsilon_budget: float
    delta: float
    threshold: int
    repeated_answer: bool
    columns: _containers.RepeatedCompositeFieldContainer[NoisyColumn]
    groups_per_entity: int
    def __init__(self, epsilon_spent: _Optional[float] = ..., epsilon_total_spent: _Optional[float] = ..., epsilon_budget: _Optional[float] = ..., delta: _Optional[float] = ..., threshold: _Optional[int] = ..., repeated_answer: _Optional[bool] = ..., columns: _Optional[_Iterable[_Union[NoisyColumn, _Mapping]]] = ..., groups_per_entity: _Optional[int] = ...) -> None: ...

class NoisyColumn(_message.Message):
    __slots__ = ("name", "scale", "half_width_95")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    HALF_WIDTH_95_FIELD_NUMBER: _ClassVar[int]
    name: str
    scale: float
    half_width_95: float
    def __init__(self, name: _Optional[str] = ..., scale: _Optional[float] = ..., half_width_95: _Optional[float] = ...) -> None: ...

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

class WitnessCheckpointRequest(_message.Message):
    __slots__ = ("checkpoints",)
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[LogCheckpoint]
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[LogCheckpoint, _Mapping]]] = ...) -> None: ...

class LogCheckpoint(_message.Message):
    __slots__ = ("size", "root", "prev", "sign_time", "key_id", "signature", "consistency_proof_hashes")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    PREV_FIELD_NUMBER: _ClassVar[int]
    SIGN_TIME_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_PROOF_HASHES_FIELD_NUMBER: _ClassVar[int]
    size: int
    root: str
    prev: str
    sign_time: str
    key_id: str
    signature: str
    consistency_proof_hashes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, size: _Optional[int] = ..., root: _Optional[str] = ..., prev: _Optional[str] = ..., sign_time: _Optional[str] = ..., key_id: _Optional[str] = ..., signature: _Optional[str] = ..., consistency_proof_hashes: _Optional[_Iterable[str]] = ...) -> None: ...

class WitnessCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint_hash", "size", "root", "witness", "witness_time", "key_id", "signature")
    CHECKPOINT_HASH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    WITNESS_FIELD_NUMBER: _ClassVar[int]
    WITNESS_TIME_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    checkpoint_hash: str
    size: int
    root: str
    witness: str
    witness_time: str
    key_id: str
    signature: str
    def __init__(self, checkpoint_hash: _Optional[str] = ..., size: _Optional[int] = ..., root: _Optional[str] = ..., witness: _Optional[str] = ..., witness_time: _Optional[str] = ..., key_id: _Optional[str] = ..., signature: _Optional[str] = ...) -> None: ...
