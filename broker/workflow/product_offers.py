"""The owner's products a request asks for: found in the catalog, with the columns their queries read.

The catalog (the sandbox's, :mod:`sandbox.catalog`) offers a product with its definition, the product as a grant
holds it, and the level of each column its query reads. A request names products; the broker writes their
definitions into the draft, which the reviewer and the owner sign as they sign any draft (the definition is then
theirs, byte for byte: the catalog is not signed). A request with columns must ask for every column its products
read, at a level that allows the use; a request of products only gets the columns they read, and a grant that
answers only its products (``queries: products``).
"""

from __future__ import annotations

from dsbroker.errors import PolicyFileError, shown
from dsbroker.policy.model import ColumnLevel, parse_products
from dsbroker.policy.products import Product
from dsbroker.rpc.request_fields import RequestFieldError, bounded_list
from dsbroker.v1 import catalog_pb2

MAX_PRODUCTS = 16  # a request's products; the draft holds each one's query


def offered_products(dataset: catalog_pb2.Dataset, names: tuple[str, ...], requested: dict[str, ColumnLevel] | None
                     ) -> tuple[dict[str, Product], dict[str, ColumnLevel]]:
    """The products ``names`` of ``dataset``'s catalog, by name, and the level of each column they read (a column
    one reads as a group and another as a filter is a group column: it may stand in WHERE too). With
    ``requested`` (the columns a request asks for, at their levels), each product's columns must be among them at
    a level that allows its use: a product does not widen what the request asks for. Without it (products only),
    the products must agree on each column's level. INVALID_ARGUMENT naming the product and the column otherwise."""
    bounded_list(names, "products", most=MAX_PRODUCTS)
    offers = {offer.name: offer for offer in dataset.products if offer.definition}
    found: dict[str, Product] = {}
    levels: dict[str, tuple[ColumnLevel, str]] = {}  # each column's level, and the product it is first read by
    for index, name in enumerate(names):
        where = f"products[{index}]"
        if name in found:
            raise RequestFieldError(f"{where}: {shown(name)} is asked for twice", field=where)
        offer = offers.get(name)
        if offer is None:
            raise RequestFieldError(f"{where}: {dataset.name} offers no product {shown(name)} to requests",
                                    field=where, reason="PRODUCT_NOT_OFFERED", table=dataset.name, product=name)
        try:
            found[name] = parse_products(offer.definition, source=f"the catalog's {name}")[name]
        except (PolicyFileError, KeyError):
            raise RequestFieldError(f"{where}: the owner's definition of {name!r} does not load", field=where,
                                    reason="PRODUCT_NOT_OFFERED", table=dataset.name, product=name) from None
        for column, text in sorted(offer.columns.items()):
            level = ColumnLevel(text)
            if requested is not None:
                have = requested.get(column)
                if have is not level and not (have is ColumnLevel.GROUP and level is ColumnLevel.FILTER):
                    raise RequestFieldError(
                        f"{where}: product {name!r} reads {column} as {level.value}; ask for it so (or ask for "
                        "products only)", field=where, reason="PRODUCT_COLUMN_NOT_REQUESTED", table=dataset.name,
                        product=name, column=column)
            before, other = levels.get(column, (level, name))
            if {before, level} == {ColumnLevel.GROUP, ColumnLevel.FILTER}:
                level = ColumnLevel.GROUP
            elif before is not level:
                raise RequestFieldError(
                    f"{where}: product {name!r} reads {column} as {level.value}, product {other!r} as "
                    f"{before.value}: no grant holds both", field=where, reason="PRODUCT_COLUMN_NOT_REQUESTED",
                    table=dataset.name, product=name, column=column)
            levels[column] = (level, other)
    return found, {column: level for column, (level, _product) in levels.items()}
