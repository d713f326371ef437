from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Dataset(_message.Message):
    __slots__ = ("name", "title", "description", "entity_column", "row_filter", "min_entities", "approval_stages", "columns", "engine_dialect", "products", "title_zh", "description_zh")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ENTITY_COLUMN_FIELD_NUMBER: _ClassVar[int]
    ROW_FILTER_FIELD_NUMBER: _ClassVar[int]
    MIN_ENTITIES_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_STAGES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_DIALECT_FIELD_NUMBER: _ClassVar[int]
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    TITLE_ZH_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_ZH_FIELD_NUMBER: _ClassVar[int]
    name: str
    title: str
    description: str
    entity_column: str
    row_filter: str
    min_entities: int
    approval_stages: _containers.RepeatedScalarFieldContainer[str]
    columns: _containers.RepeatedCompositeFieldContainer[DatasetColumn]
    engine_dialect: str
    products: _containers.RepeatedCompositeFieldContainer[DatasetProduct]
    title_zh: str
    description_zh: str
    def __init__(self, name: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., entity_column: _Optional[str] = ..., row_filter: _Optional[str] = ..., min_entities: _Optional[int] = ..., approval_stages: _Optional[_Iterable[str]] = ..., columns: _Optional[_Iterable[_Union[DatasetColumn, _Mapping]]] = ..., engine_dialect: _Optional[str] = ..., products: _Optional[_Iterable[_Union[DatasetProduct, _Mapping]]] = ..., title_zh: _Optional[str] = ..., description_zh: _Optional[str] = ...) -> None: ...

class DatasetProduct(_message.Message):
    __slots__ = ("name", "version", "title_zh", "title_en", "description_zh", "description_en", "definition", "columns")
    class ColumnsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TITLE_ZH_FIELD_NUMBER: _ClassVar[int]
    TITLE_EN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_ZH_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_EN_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    title_zh: str
    title_en: str
    description_zh: str
    description_en: str
    definition: str
    columns: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., title_zh: _Optional[str] = ..., title_en: _Optional[str] = ..., description_zh: _Optional[str] = ..., description_en: _Optional[str] = ..., definition: _Optional[str] = ..., columns: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DatasetColumn(_message.Message):
    __slots__ = ("name", "type", "description", "unit", "classification", "levels", "description_zh")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_ZH_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    description: str
    unit: str
    classification: str
    levels: _containers.RepeatedScalarFieldContainer[str]
    description_zh: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., description: _Optional[str] = ..., unit: _Optional[str] = ..., classification: _Optional[str] = ..., levels: _Optional[_Iterable[str]] = ..., description_zh: _Optional[str] = ...) -> None: ...
