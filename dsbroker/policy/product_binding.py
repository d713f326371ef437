"""Binding a product's parameters: each value checked against its type and bounds, then put into the
template's parse tree as a typed literal.

Never by pasting text: a value becomes a sqlglot literal node (a string, a number, ``CAST('…' AS DATE)``) in
place of its placeholder, so whatever it holds is data, never SQL. The broker binds to build the query it
guards; the sandbox binds again from the signed policy it verified and refuses a plan whose original SQL is
anything else, so the text that runs is the one the owner signed.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping

import sqlglot
import sqlglot.expressions as exp

from dsbroker.errors import ProductError, shown
from dsbroker.policy.model import Policy
from dsbroker.policy.products import Parameter, Product
from dsbroker.v1 import product_pb2

_INTEGER = re.compile(r"^-?[0-9]{1,18}$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
MAX_VALUE_CHARS = 4000  # of all of one parameter's text: list members are separated by commas
MAX_PARAMETERS_RECORDED = 16  # a product has at most 8; a call naming more is refused, and recorded in part
RECORDED_VALUE_CHARS = 256  # of each value, in the access log: a longer one is refused anyway, and recorded cut


def granted_product(policy: Policy, name: str, version: int = 0) -> Product:
    """The grant's product ``name`` (at ``version`` when not 0); PRODUCT_NOT_GRANTED or PRODUCT_VERSION_MISMATCH."""
    product = policy.products.get(name)
    if product is None:
        raise ProductError(f"grant {policy.id!r} has no product {shown(name)}", reason="PRODUCT_NOT_GRANTED",
                           grant=policy.id, product=name)
    if version and version != product.version:
        raise ProductError(f"grant {policy.id!r} has version {product.version} of product {name!r}, not {version}",
                           reason="PRODUCT_VERSION_MISMATCH", grant=policy.id, product=name,
                           version=product.version)
    return product


def product_query(policy: Policy, call: product_pb2.ProductCall, unverified_sql: str = "") -> str:
    """The query a product call runs under ``policy``: the grant's product, parameters bound. A call that gives
    SQL besides the product is refused (PRODUCT_CALL_INVALID): which of the two would run is no guess to make."""
    if unverified_sql.strip():
        raise ProductError("a query gives either SQL or a product, not both", reason="PRODUCT_CALL_INVALID",
                           field="sql")
    return bind_product(granted_product(policy, call.name, call.version), dict(call.parameters))


def query_of(policy: Policy, call: product_pb2.ProductCall | None, unverified_sql: str) -> str:
    """The query a call runs under ``policy``: the product's, bound (:func:`product_query`), or the caller's SQL
    where the grant answers SQL of the caller's own; AD_HOC_QUERY_NOT_GRANTED under ``queries: products``."""
    if call is not None:
        return product_query(policy, call, unverified_sql)
    if policy.products_only:
        raise ProductError(f"grant {policy.id!r} answers only its products (dsbroker product list), not SQL",
                           reason="AD_HOC_QUERY_NOT_GRANTED", grant=policy.id)
    return unverified_sql


def product_detail(call: product_pb2.ProductCall) -> dict[str, object]:
    """What the access log records of a product call: its name, version asked for and parameters (the caller's
    query, as its SQL would be)."""
    return {"product": call.name[:80], "product_version": call.version,
            "product_parameters": {name[:40]: value[:RECORDED_VALUE_CHARS] for name, value in
                                   sorted(call.parameters.items())[:MAX_PARAMETERS_RECORDED]}}


def bind_product(product: Product, values: Mapping[str, str]) -> str:
    """The product's query with ``values`` (text, as a caller gives them) bound: one SELECT in DuckDB's dialect,
    ready for the guard. Raises ProductError naming the parameter when a value is missing, unknown, of the wrong
    type, out of range or not an allowed member."""
    unknown = sorted(set(values) - set(product.parameters))
    if unknown:
        raise _refused(product, unknown[0], "PRODUCT_PARAMETER_UNKNOWN", "is not a parameter of the product")
    literals = {name: _literals(product, parameter, values.get(name)) for name, parameter in product.parameters.items()}
    tree = _template(product.sql).copy()
    for placeholder in list(tree.find_all(exp.Placeholder)):
        bound = literals[placeholder.name]
        if isinstance(bound, list):  # a text_list: the IN list's members (the loader saw it stands alone there)
            listing = placeholder.parent
            assert isinstance(listing, exp.In)
            listing.set("expressions", bound)
        else:
            placeholder.replace(bound)
    return tree.sql(dialect="duckdb")


def parse_parameters(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``k=v`` pairs (the CLI's ``--param``) as a mapping; a parameter given twice keeps both, comma-separated
    (the form of a list)."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--param {pair!r} is not of the form NAME=VALUE")
        values[name] = f"{values[name]},{value}" if name in values else value
    return values


@functools.lru_cache(maxsize=64)
def _template(sql: str) -> exp.Expr:
    return sqlglot.parse_one(sql, read="duckdb")  # parsed once per text (checked at load); callers bind a copy


def _literals(product: Product, parameter: Parameter, value: str | None) -> exp.Expr | list[exp.Expr]:
    name = parameter.name
    if value is None or value == "":
        raise _refused(product, name, "PRODUCT_PARAMETER_MISSING", "is required")
    if len(value) > MAX_VALUE_CHARS:
        raise _refused(product, name, "PRODUCT_PARAMETER_INVALID", f"is longer than {MAX_VALUE_CHARS} characters")
    if parameter.type == "date":
        day = _date(value)
        if day is None:
            raise _refused(product, name, "PRODUCT_PARAMETER_INVALID", "must be a date, YYYY-MM-DD")
        _within(product, parameter, day)
        return exp.cast(exp.Literal.string(day.isoformat()), exp.DataType.Type.DATE)
    if parameter.type == "integer":
        if not _INTEGER.fullmatch(value):  # not match: "$" matches before a trailing newline
            raise _refused(product, name, "PRODUCT_PARAMETER_INVALID", "must be a whole number")
        _within(product, parameter, int(value))
        return exp.Literal.number(int(value))
    literals: list[exp.Expr] = [exp.Literal.string(member) for member in _members(product, parameter, value)]
    return literals if parameter.type == "text_list" else literals[0]


def _within(product: Product, parameter: Parameter, value: object) -> None:
    if not parameter.low <= value <= parameter.high:
        raise _refused(product, parameter.name, "PRODUCT_PARAMETER_OUT_OF_RANGE",
                       f"must lie from {parameter.low} to {parameter.high}")


def _members(product: Product, parameter: Parameter, value: str) -> list[str]:
    """A text's value, or a list's members, each one the product allows; sorted, so one set is one text."""
    name = parameter.name
    members = value.split(",") if parameter.type == "text_list" else [value]
    if len(members) > parameter.max_items:
        raise _refused(product, name, "PRODUCT_PARAMETER_OUT_OF_RANGE", f"takes at most {parameter.max_items} values")
    if len(set(members)) != len(members):
        raise _refused(product, name, "PRODUCT_PARAMETER_INVALID", "lists a value twice")
    for member in members:
        if member not in parameter.values:
            raise _refused(product, name, "PRODUCT_PARAMETER_NOT_ALLOWED", "is not one of the values the product "
                                                                           "allows (product show lists them)")
    return sorted(members)


def _date(value: str) -> dt.date | None:
    if not _DATE.fullmatch(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def _refused(product: Product, parameter: str, reason: str, problem: str) -> ProductError:
    # The value is the caller's, and never quoted back: only the parameter's name, which the product declares.
    shown_name = parameter if parameter in product.parameters else shown(parameter, 40)
    return ProductError(f"product {product.name!r}: parameter {shown_name} {problem}", reason=reason,
                        product=product.name, parameter=shown_name)
