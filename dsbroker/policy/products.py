"""The owner's data products: named, versioned, parameterised standing queries in a signed policy.

A product is part of the policy body (``products:``), so the reviewer's and the owner's signatures cover
its name, version, parameters and the exact text of its query template: a broker cannot swap the text
without the signatures failing, and the sandbox binds the parameters into the template it reads from the
signed document itself (:mod:`dsbroker.policy.product_binding`). A product never widens its grant: its
query, parameters bound, goes through the guard under the grant like any query.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Protocol

import sqlglot
import sqlglot.expressions as exp
import yaml

from dsbroker.errors import PolicyFileError, shown

PARAMETER_TYPES = ("date", "integer", "text", "text_list")
MAX_PARAMETERS = 8
MAX_LIST_ITEMS = 100
MAX_TEMPLATE_CHARS = 8000
_PRODUCT = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_PARAMETER = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_PRODUCT_KEYS = {"version", "title", "description", "parameters", "sql"}
_TEXT_KEYS = {"zh", "en"}
_PARAMETER_KEYS = {"type", "min", "max", "values", "max_items", "description"}
RESERVED_PARAMETERS = ("district", "department")  # the row filter's, bound to the caller
# Where a literal is no value but SQL: a number in GROUP BY, ORDER BY or DISTINCT ON is a column's position, a
# text in FROM a table (in DuckDB, a file it reads), after AS a name. A placeholder there would let the caller
# choose the query's shape, so the loader refuses it (wrapping parentheses and tuples looked through).
_NOT_VALUES = (exp.Group, exp.Rollup, exp.Cube, exp.GroupingSets, exp.Ordered, exp.Distinct, exp.Table,
               exp.TableAlias)


@dataclass(frozen=True)
class Parameter:
    """One typed, bounded parameter of a product.

    ``date``: an ISO date between ``low`` and ``high``; ``integer``: a whole number between them; ``text``: one
    of ``values``; ``text_list``: 1 to ``max_items`` distinct members of ``values`` (bound into an IN list)."""

    name: str
    type: str
    low: Any = None
    high: Any = None
    values: tuple[str, ...] = ()
    max_items: int = MAX_LIST_ITEMS
    description: str = ""


@dataclass(frozen=True)
class Product:
    """A standing query the owner designed once, which the grantee runs by name with parameters."""

    name: str
    version: int
    title: dict[str, str]
    description: dict[str, str]
    parameters: dict[str, Parameter]
    sql: str  # the template, byte for byte as signed; placeholders ``:name``


class _Reader(Protocol):
    def fail(self, node: yaml.Node, message: str) -> PolicyFileError: ...
    def mapping(self, node: yaml.Node, path: tuple[str, ...], allowed: set[str] | None) -> dict[str, yaml.Node]: ...
    def scalar(self, node: yaml.Node, name: str) -> Any: ...
    def text(self, node: yaml.Node, name: str, pattern: re.Pattern | None = None) -> str: ...
    def integer(self, node: yaml.Node, name: str, lowest: int) -> int: ...


def read_products(reader: _Reader, node: yaml.Node) -> dict[str, Product]:
    """The ``products:`` section of a policy; errors name the file and line."""
    products: dict[str, Product] = {}
    for name, value in reader.mapping(node, ("products",), None).items():
        if not _PRODUCT.match(str(name)):
            raise reader.fail(value, f"products: {shown(name)} is not a product name (lower-case letters, digits, -)")
        products[name] = _product(reader, str(name), value)
    return products


def _product(reader: _Reader, name: str, node: yaml.Node) -> Product:
    where = f"products.{name}"
    items = reader.mapping(node, ("products", name), _PRODUCT_KEYS)
    for required in ("version", "title", "sql"):
        if required not in items:
            raise reader.fail(node, f"missing required key '{where}.{required}'")
    title = _texts(reader, items["title"], f"{where}.title")
    description = _texts(reader, items["description"], f"{where}.description") if "description" in items else {}
    parameters = _parameters(reader, items["parameters"], where) if "parameters" in items else {}
    sql = reader.text(items["sql"], f"{where}.sql")
    _check_template(reader, items["sql"], where, sql, parameters)
    return Product(name, reader.integer(items["version"], f"{where}.version", 1), title, description, parameters, sql)


def _texts(reader: _Reader, node: yaml.Node, where: str) -> dict[str, str]:
    """A text in Chinese and English: ``{zh: ..., en: ...}``, both required."""
    items = reader.mapping(node, tuple(where.split(".")), _TEXT_KEYS)
    for language in sorted(_TEXT_KEYS):
        if language not in items:
            raise reader.fail(node, f"missing required key '{where}.{language}' (products are described in Chinese "
                                    "and English)")
    return {language: reader.text(items[language], f"{where}.{language}") for language in ("zh", "en")}


def _parameters(reader: _Reader, node: yaml.Node, where: str) -> dict[str, Parameter]:
    items = reader.mapping(node, (*where.split("."), "parameters"), None)
    if len(items) > MAX_PARAMETERS:
        raise reader.fail(node, f"{where}.parameters: at most {MAX_PARAMETERS}")
    parameters = {}
    for name, value in items.items():
        if not _PARAMETER.match(str(name)) or name in RESERVED_PARAMETERS:
            raise reader.fail(value, f"{where}.parameters: {shown(name)} is not a parameter name (or is the row "
                                     "filter's)")
        parameters[str(name)] = _parameter(reader, str(name), value, f"{where}.parameters.{name}")
    return parameters


def _parameter(reader: _Reader, name: str, node: yaml.Node, where: str) -> Parameter:
    items = reader.mapping(node, tuple(where.split(".")), _PARAMETER_KEYS)
    kind = reader.scalar(items["type"], f"{where}.type") if "type" in items else None
    if kind not in PARAMETER_TYPES:
        raise reader.fail(node, f"{where}.type must be one of {', '.join(PARAMETER_TYPES)}")
    description = reader.text(items["description"], f"{where}.description") if "description" in items else ""
    if kind in ("date", "integer"):
        for bound in ("min", "max"):  # every parameter is bounded: an open range is no product's
            if bound not in items:
                raise reader.fail(node, f"missing required key '{where}.{bound}'")
        low, high = (reader.scalar(items[bound], f"{where}.{bound}") for bound in ("min", "max"))
        wanted = dt.date if kind == "date" else int
        if not all(isinstance(v, wanted) and not isinstance(v, (bool, dt.datetime)) for v in (low, high)) \
                or low > high:
            raise reader.fail(node, f"{where}: min and max must be {'dates' if kind == 'date' else 'whole numbers'}, "
                                    "min <= max")
        return Parameter(name, kind, low, high, description=description)
    if "values" not in items or not isinstance(items["values"], yaml.SequenceNode) or not items["values"].value:
        raise reader.fail(node, f"{where}.values must list the values a caller may give")
    values = tuple(str(reader.text(item, f"{where}.values")) for item in items["values"].value)
    if len(set(values)) != len(values) or len(values) > 1000:
        raise reader.fail(items["values"], f"{where}.values: 1 to 1000 distinct values")
    if kind == "text_list" and any("," in value for value in values):  # the comma separates a call's members
        raise reader.fail(items["values"], f"{where}.values: a list's value holding a comma cannot be given")
    max_items = reader.integer(items["max_items"], f"{where}.max_items", 1) if "max_items" in items \
        else min(len(values), MAX_LIST_ITEMS)
    return Parameter(name, kind, values=values, max_items=min(max_items, MAX_LIST_ITEMS), description=description)


def _check_template(reader: _Reader, node: yaml.Node, where: str, sql: str, parameters: dict[str, Parameter]) -> None:
    """The template is one SELECT whose placeholders are exactly the declared parameters; a list parameter
    stands only as the whole list of an IN."""
    if len(sql) > MAX_TEMPLATE_CHARS:
        raise reader.fail(node, f"{where}.sql: at most {MAX_TEMPLATE_CHARS} characters")
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.SqlglotError:
        raise reader.fail(node, f"{where}.sql does not parse as SQL") from None
    if not isinstance(tree, exp.Query):
        raise reader.fail(node, f"{where}.sql must be one SELECT")
    used = set()
    for placeholder in tree.find_all(exp.Placeholder):
        if placeholder.name not in parameters:
            raise reader.fail(node, f"{where}.sql: :{placeholder.name} is not a declared parameter")
        used.add(placeholder.name)
        if _stands_for_sql(placeholder):
            raise reader.fail(node, f"{where}.sql: :{placeholder.name} stands for SQL (a GROUP BY or ORDER BY "
                                    "position, a table or a name), not for a value")
        listed = isinstance(placeholder.parent, exp.In) and placeholder.arg_key == "expressions" \
            and len(placeholder.parent.expressions) == 1
        if (parameters[placeholder.name].type == "text_list") != listed:
            raise reader.fail(node, f"{where}.sql: :{placeholder.name} must stand alone in an IN list (x IN "
                                    f"(:{placeholder.name})) exactly when it is a text_list")
    unused = sorted(set(parameters) - used)
    if unused:
        raise reader.fail(node, f"{where}.parameters: {', '.join(unused)} not used in the sql")


def _stands_for_sql(placeholder: exp.Placeholder) -> bool:
    """Whether the placeholder sits where a literal is read as SQL rather than as a value (see _NOT_VALUES)."""
    holder = placeholder.parent
    while isinstance(holder, (exp.Paren, exp.Tuple)):
        holder = holder.parent
    return isinstance(holder, _NOT_VALUES)


def reused_versions(before: dict[str, Product], after: dict[str, Product]) -> list[str]:
    """The products of ``after`` that keep their version in ``before`` but run another query (another template or
    other parameters): a caller that pins a version (``ProductCall.version``) is promised that version's query, so a
    newer grant that changes a product without a new version number is not installed."""
    return sorted(name for name, product in after.items() if name in before
                  and before[name].version == product.version
                  and (before[name].sql, before[name].parameters) != (product.sql, product.parameters))


def render_products(products: dict[str, Product]) -> str:
    """A ``products:`` section as YAML text that :func:`read_products` reads back to equal products (the broker
    writes the catalog's offers into a draft policy with it, for the approvers to sign)."""
    document = {"products": {name: _product_document(product) for name, product in products.items()}}
    return yaml.dump(document, Dumper=_ReadableDumper, allow_unicode=True, sort_keys=False, width=120)


class _ReadableDumper(yaml.SafeDumper):
    """Writes a text of several lines (a product's query) as a literal block, as its signers read it."""


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_ReadableDumper.add_representer(str, _text)


def _product_document(product: Product) -> dict[str, Any]:
    document: dict[str, Any] = {"version": product.version, "title": dict(product.title)}
    if product.description:
        document["description"] = dict(product.description)
    if product.parameters:
        document["parameters"] = {name: _parameter_document(p) for name, p in product.parameters.items()}
    document["sql"] = product.sql
    return document


def _parameter_document(parameter: Parameter) -> dict[str, Any]:
    document: dict[str, Any] = {"type": parameter.type}
    if parameter.type in ("date", "integer"):
        document.update(min=parameter.low, max=parameter.high)
    else:
        document["values"] = list(parameter.values)
        if parameter.type == "text_list":
            document["max_items"] = parameter.max_items
    if parameter.description:
        document["description"] = parameter.description
    return document

