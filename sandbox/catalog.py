"""The owner's catalog ("数据目录"): what each served dataset holds, described in a YAML file beside the data.

Metadata only, never a value: tables, columns with descriptions, engine types, units, the owner's
classification level and which column levels a request may ask for. The broker shows it to
departments before they ask, and drafts policies from it. A catalog file looks like::

    datasets:
      tax.declarations:
        title: Monthly tax declarations
        description: One row per taxpayer and month.
        entity: taxpayer_id
        row_filter: "district_code = :district"
        min_entities: 10
        approval_stages: [reviewer, owner]
        columns:
          taxpayer_id: {description: Unified social credit code, classification: core, levels: [entity]}
          revenue: {description: Declared revenue, unit: fen, classification: sensitive, levels: [measure]}

A column the file does not describe is not published and may not be requested. ``dsbroker catalog draft``
(:mod:`sandbox.catalog_draft`) writes a file of this shape from the engine's columns with every judgement the
owner must make left as a ``TODO`` placeholder; a value that still starts with ``TODO`` is refused, naming its
line, so a draft cannot be served before the owner has classified every column it describes.
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import sqlglot
import yaml

from dsbroker.errors import ConfigError, PolicyFileError
from dsbroker.policy.model import read_offered_products
from dsbroker.policy.products import render_products
from dsbroker.v1 import catalog_pb2

REQUESTABLE_LEVELS = ("entity", "group", "filter", "measure")
APPROVAL_ROLES = ("reviewer", "owner")
DEFAULT_STAGES = ("reviewer", "owner")
DEFAULT_MIN_ENTITIES = 10
_DATASET_KEYS = {"title", "description", "entity", "row_filter", "min_entities", "approval_stages", "columns",
                 "products"}
_PRODUCT_KEYS = {"version", "title", "description", "parameters", "sql", "columns"}
# What a product offered to requests needs besides its description: its query and the levels of the columns it
# reads, from which a request that asks for it gets its draft.
_OFFER_KEYS = ("parameters", "sql", "columns")
_PRODUCT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
# ASCII digits only (str.isdigit takes "²", which int() refuses), and few enough for the message's int64.
_PRODUCT_VERSION = re.compile(r"^[0-9]{1,9}$")
_COLUMN_KEYS = {"description", "unit", "classification", "levels"}
PLACEHOLDER = "TODO"  # how a draft marks what the owner must fill in


@dataclass(frozen=True)
class Catalog:
    """The datasets a sandbox publishes, by name."""

    datasets: dict[str, catalog_pb2.Dataset] = field(default_factory=dict)

    def listing(self, *, after: str | None = None, limit: int | None = None) -> list[catalog_pb2.Dataset]:
        """The datasets in name order (as the sandbox answers ListDatasets): those after the name ``after``, at
        most ``limit`` of them."""
        names = sorted(name for name in self.datasets if after is None or name > after)
        return [self.datasets[name] for name in names[:limit]]


def catalog_path_for(data: str | Path) -> Path:
    """Where a data file's catalog lives by default: beside it, ``<name>.catalog.yaml``."""
    data = Path(data)
    return data.with_name(f"{data.stem}.catalog.yaml")


def load_catalog(path: str | Path | None, served: set[str], columns_of: Callable[[str], list[tuple[str, str]]], *,
                 engine_dialect: str = "duckdb") -> Catalog:
    """Read the owner's catalog file and check it against the served tables' real columns.

    Without a file every served table is published by name only, with nothing requestable. Every dataset
    carries ``engine_dialect``, the dialect the broker's guard must write its SQL in. Errors name the file and
    line.
    """
    if path is None:
        return Catalog({name: catalog_pb2.Dataset(name=name, approval_stages=DEFAULT_STAGES,
                                                  engine_dialect=engine_dialect) for name in served})
    path = Path(path)
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read the catalog ({error.__class__.__name__})") from None
    reader = _Reader(path, engine_dialect)
    reader.refuse_placeholders(root)
    top = reader.mapping(root, "the catalog", {"datasets"})
    if "datasets" not in top:
        raise reader.fail(root, "missing required key 'datasets'")
    datasets = {}
    for name, node in reader.mapping(top["datasets"], "datasets", None).items():
        if name not in served:
            raise reader.fail(node, f"dataset {name!r} is not served by this sandbox")
        datasets[name] = reader.dataset(name, node, dict(columns_of(name)))
    for name in served - set(datasets):
        datasets[name] = catalog_pb2.Dataset(name=name, approval_stages=DEFAULT_STAGES, engine_dialect=engine_dialect)
    return Catalog(datasets)


class _Reader:
    def __init__(self, path: Path, dialect: str) -> None:
        self.path = path
        self.dialect = dialect

    def refuse_placeholders(self, node: yaml.Node) -> None:
        """Refuse the first value a draft left for the owner (it starts with TODO), naming its line."""
        if isinstance(node, yaml.ScalarNode):
            if str(node.value).startswith(PLACEHOLDER):
                raise self.fail(node, f"{node.value!r} is a placeholder of the draft: the owner must replace it "
                                      "(or remove the dataset) before the catalog is served")
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                self.refuse_placeholders(item)
        elif isinstance(node, yaml.MappingNode):
            for _key, value in node.value:
                self.refuse_placeholders(value)

    def fail(self, node: yaml.Node | None, message: str) -> ConfigError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return ConfigError(f"{self.path}{line}: {message}")

    def mapping(self, node: yaml.Node, where: str, allowed: set[str] | None) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{where} must be a mapping")
        items = {}
        for key, value in node.value:
            if key.value in items:
                raise self.fail(key, f"{where}: duplicate key {key.value!r}")
            if allowed is not None and key.value not in allowed:
                raise self.fail(key, f"{where}: unknown key {key.value!r} (allowed: {', '.join(sorted(allowed))})")
            items[key.value] = value
        return items

    def text(self, node: yaml.Node | None, where: str) -> str:
        if node is None:
            return ""
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{where} must be text")
        return str(node.value)

    def texts(self, node: yaml.Node | None, where: str) -> tuple[str, str]:
        """A description as one text, or in Chinese and English (``{zh: …, en: …}``): (the text, or the English;
        the Chinese, or empty)."""
        if not isinstance(node, yaml.MappingNode):
            return self.text(node, where), ""
        both = self.mapping(node, where, {"zh", "en"})
        if set(both) != {"zh", "en"}:
            raise self.fail(node, f"{where}: give zh and en, or one text")
        return self.text(both["en"], f"{where}.en"), self.text(both["zh"], f"{where}.zh")

    def words(self, node: yaml.Node | None, where: str, allowed: tuple[str, ...]) -> list[str]:
        if node is None:
            return []
        if not isinstance(node, yaml.SequenceNode) or not all(isinstance(i, yaml.ScalarNode) for i in node.value):
            raise self.fail(node, f"{where} must be a list")
        values = [item.value for item in node.value]
        for item, value in zip(node.value, values, strict=True):
            if value not in allowed:
                raise self.fail(item, f"{where}: unknown value {value!r} (allowed: {', '.join(allowed)})")
        return values

    def dataset(self, name: str, node: yaml.Node, real_columns: dict[str, str]) -> catalog_pb2.Dataset:
        items = self.mapping(node, name, _DATASET_KEYS)
        for required in ("entity", "columns"):
            if required not in items:
                raise self.fail(node, f"{name}: missing required key {required!r}")
        entity = self.text(items["entity"], f"{name}.entity")
        stages = (self.words(items.get("approval_stages"), f"{name}.approval_stages", APPROVAL_ROLES)
                  or list(DEFAULT_STAGES))
        if stages[-1] != "owner" or stages.count("owner") != 1:
            raise self.fail(items.get("approval_stages"), f"{name}.approval_stages must end with the owner, once")
        min_entities = DEFAULT_MIN_ENTITIES
        if "min_entities" in items:
            value = self.text(items["min_entities"], f"{name}.min_entities")
            if not value.isdigit() or int(value) < 2:
                raise self.fail(items["min_entities"], f"{name}.min_entities must be a whole number of at least 2")
            min_entities = int(value)
        row_filter = self.text(items.get("row_filter"), f"{name}.row_filter")
        if row_filter:
            try:
                sqlglot.parse_one(row_filter, read="duckdb")  # as the guard reads it, whatever the engine
            except sqlglot.errors.SqlglotError:
                raise self.fail(items["row_filter"], f"{name}.row_filter does not parse as a SQL condition") from None
        columns = []
        for column, column_node in self.mapping(items["columns"], f"{name}.columns", None).items():
            if column not in real_columns:
                raise self.fail(column_node, f"{name}.columns: {column!r} is not a column of the table")
            fields = self.mapping(column_node, f"{name}.columns.{column}", _COLUMN_KEYS)
            levels = self.words(fields.get("levels"), f"{name}.columns.{column}.levels", REQUESTABLE_LEVELS)
            if (column == entity) != ("entity" in levels) or (column == entity and levels != ["entity"]):
                raise self.fail(column_node, f"{name}.columns.{column}: the entity column, and only it, has "
                                             "levels [entity]")
            description, description_zh = self.texts(fields.get("description"), f"{name}.columns.{column}.description")
            columns.append(catalog_pb2.DatasetColumn(
                name=column, type=real_columns[column], description=description, description_zh=description_zh,
                unit=self.text(fields.get("unit"), column),
                classification=self.text(fields.get("classification"), column),
                levels=levels))
        if entity not in {c.name for c in columns}:
            raise self.fail(items["entity"], f"{name}.entity {entity!r} must be described under columns")
        order = list(real_columns)
        columns.sort(key=lambda c: order.index(c.name))
        title, title_zh = self.texts(items.get("title"), f"{name}.title")
        description, description_zh = self.texts(items.get("description"), f"{name}.description")
        return catalog_pb2.Dataset(name=name, title=title, title_zh=title_zh, description=description,
                                   description_zh=description_zh,
                                   entity_column=entity, row_filter=row_filter, min_entities=min_entities,
                                   approval_stages=stages, columns=columns, engine_dialect=self.dialect,
                                   products=self.products(items["products"], name,
                                                          {c.name: list(c.levels) for c in columns})
                                   if "products" in items else [])

    def products(self, node: yaml.Node, dataset: str,
                 columns: dict[str, list[str]]) -> list[catalog_pb2.DatasetProduct]:
        """The data products offered on ``dataset``, each titled and described in Chinese and English."""
        offered = []
        for name, product_node in self.mapping(node, f"{dataset}.products", None).items():
            where = f"{dataset}.products.{name}"
            if not _PRODUCT_NAME.match(name):
                raise self.fail(product_node, f"{where}: not a product name (lower-case letters, digits, -)")
            fields = self.mapping(product_node, where, _PRODUCT_KEYS)
            version = self.text(fields.get("version"), f"{where}.version")
            if not _PRODUCT_VERSION.fullmatch(version) or int(version) < 1:
                raise self.fail(product_node, f"{where}.version must be a whole number of at least 1")
            texts = {}
            for key in ("title", "description"):
                if key not in fields:
                    raise self.fail(product_node, f"{where}: missing required key {key!r}")
                both = self.mapping(fields[key], f"{where}.{key}", {"zh", "en"})
                if set(both) != {"zh", "en"}:
                    raise self.fail(fields[key], f"{where}.{key} needs zh and en (products are described in Chinese "
                                                 "and English)")
                texts.update({f"{key}_{language}": self.text(both[language], f"{where}.{key}.{language}")
                              for language in ("zh", "en")})
            offered.append(catalog_pb2.DatasetProduct(name=name, version=int(version), **texts,
                                                      **self.offer(name, product_node, fields, columns)))
        return offered

    def offer(self, name: str, node: yaml.Node, fields: dict[str, yaml.Node],
              columns: dict[str, list[str]]) -> dict[str, object]:
        """What a request that asks for the product gets in its draft: the product as a policy holds it (read by the
        policy's own rules: typed, bounded parameters, a template of one SELECT) and the level of each column its
        query reads. Empty where the product is described only (a request cannot ask for it)."""
        where = f"products.{name}"
        if "sql" not in fields:
            if "columns" in fields or "parameters" in fields:
                raise self.fail(node, f"{where}: a product offered to requests needs its sql too")
            return {}
        if "columns" not in fields:
            raise self.fail(node, f"{where}: missing required key 'columns' (the level of each column its query "
                                  "reads)")
        levels = {}
        for column, level_node in self.mapping(fields["columns"], f"{where}.columns", None).items():
            level = self.text(level_node, f"{where}.columns.{column}")
            if column not in columns:
                raise self.fail(level_node, f"{where}.columns: {column!r} is not a column the catalog describes")
            if level not in columns[column]:
                raise self.fail(level_node, f"{where}.columns.{column}: {level!r} is not a level the column may be "
                                            f"asked for (allowed: {', '.join(columns[column]) or 'none'})")
            levels[column] = level
        definition = yaml.MappingNode("tag:yaml.org,2002:map", [
            (key, value) for key, value in node.value if key.value not in ("columns",)])
        mapping = yaml.MappingNode("tag:yaml.org,2002:map", [(yaml.ScalarNode("tag:yaml.org,2002:str", name),
                                                               definition)])
        try:
            product = read_offered_products(str(self.path), mapping)[name]
        except PolicyFileError as error:
            raise ConfigError(str(error)) from None
        return {"definition": render_products({name: product}), "columns": levels}
