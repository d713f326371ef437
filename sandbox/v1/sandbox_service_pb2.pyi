from dsbroker.v1 import catalog_pb2 as _catalog_pb2
from dsbroker.v1 import product_pb2 as _product_pb2
from dsbroker.v1 import results_pb2 as _results_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "next_page_token")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[_catalog_pb2.Dataset]
    next_page_token: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[_catalog_pb2.Dataset, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ExecutePlanRequest(_message.Message):
    __slots__ = ("plan", "request_id")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    request_id: str
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("dataset", "sql", "policy_id", "policy_version", "max_rows", "policy_document", "original_sql", "caller_token", "execution_id", "encryption", "caller_certificate", "policy_statements", "product")
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
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    sql: str
    policy_id: str
    policy_version: int
    max_rows: int
    policy_document: str
    original_sql: str
    caller_token: str
    execution_id: str
    encryption: _results_pb2.Encryption
    caller_certificate: bytes
    policy_statements: _containers.RepeatedScalarFieldContainer[str]
    product: _product_pb2.ProductCall
    def __init__(self, dataset: _Optional[str] = ..., sql: _Optional[str] = ..., policy_id: _Optional[str] = ..., policy_version: _Optional[int] = ..., max_rows: _Optional[int] = ..., policy_document: _Optional[str] = ..., original_sql: _Optional[str] = ..., caller_token: _Optional[str] = ..., execution_id: _Optional[str] = ..., encryption: _Optional[_Union[_results_pb2.Encryption, _Mapping]] = ..., caller_certificate: _Optional[bytes] = ..., policy_statements: _Optional[_Iterable[str]] = ..., product: _Optional[_Union[_product_pb2.ProductCall, _Mapping]] = ...) -> None: ...

class EncryptPartitionRequest(_message.Message):
    __slots__ = ("execution_id", "groups")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    groups: _results_pb2.ResultTable
    def __init__(self, execution_id: _Optional[str] = ..., groups: _Optional[_Union[_results_pb2.ResultTable, _Mapping]] = ...) -> None: ...

class EncryptPartitionResponse(_message.Message):
    __slots__ = ("encrypted", "sandbox_id")
    ENCRYPTED_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    encrypted: _results_pb2.EncryptedTable
    sandbox_id: str
    def __init__(self, encrypted: _Optional[_Union[_results_pb2.EncryptedTable, _Mapping]] = ..., sandbox_id: _Optional[str] = ...) -> None: ...

class ExecutePlanResponse(_message.Message):
    __slots__ = ("table", "truncated", "engine_micros", "cells_withheld", "noise", "threshold_cells_withheld", "secondary_cells_withheld", "sandbox_id", "encrypted", "partition_groups", "audit_cells_withheld", "audited")
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
    AUDIT_CELLS_WITHHELD_FIELD_NUMBER: _ClassVar[int]
    AUDITED_FIELD_NUMBER: _ClassVar[int]
    table: _results_pb2.ResultTable
    truncated: bool
    engine_micros: int
    cells_withheld: int
    noise: _results_pb2.NoiseReport
    threshold_cells_withheld: int
    secondary_cells_withheld: int
    sandbox_id: str
    encrypted: _results_pb2.EncryptedTable
    partition_groups: _results_pb2.ResultTable
    audit_cells_withheld: int
    audited: bool
    def __init__(self, table: _Optional[_Union[_results_pb2.ResultTable, _Mapping]] = ..., truncated: _Optional[bool] = ..., engine_micros: _Optional[int] = ..., cells_withheld: _Optional[int] = ..., noise: _Optional[_Union[_results_pb2.NoiseReport, _Mapping]] = ..., threshold_cells_withheld: _Optional[int] = ..., secondary_cells_withheld: _Optional[int] = ..., sandbox_id: _Optional[str] = ..., encrypted: _Optional[_Union[_results_pb2.EncryptedTable, _Mapping]] = ..., partition_groups: _Optional[_Union[_results_pb2.ResultTable, _Mapping]] = ..., audit_cells_withheld: _Optional[int] = ..., audited: _Optional[bool] = ...) -> None: ...

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
