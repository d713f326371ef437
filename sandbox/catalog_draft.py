"""A draft of the owner's catalog, from the served tables' columns as the engine reports them.

The draft has the shape :mod:`sandbox.catalog` reads, with one entry per served table and one per column, in
table order, each column's engine type beside it as a comment. What only the owner can decide (titles and
descriptions, which column is the privacy unit, each column's classification and the levels a request may
ask for) is a ``TODO`` placeholder, and :func:`sandbox.catalog.load_catalog` refuses a file that still holds
one: the owner fills every one in, or deletes the dataset (a served table the catalog does not describe is
published by name only, with nothing requestable) or the column (not published, never requestable).
"""

from __future__ import annotations

import json
import re
from typing import Callable, Iterable

from sandbox.catalog import DEFAULT_MIN_ENTITIES, DEFAULT_STAGES, PLACEHOLDER

_PLAIN = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}  # YAML would read them as others
_HEADER = f"""\
# The owner's catalog (数据目录) of the tables this sandbox serves: metadata only, never a value.
# Drafted by `dsbroker catalog draft` from the columns of {{source}}. Replace every {PLACEHOLDER}:
# the sandbox refuses to load this file while one is left (delete a dataset to publish it by name
# only, a column to keep it unpublished).
#   entity          the column that identifies the privacy unit (e.g. the taxpayer id); its levels are [entity]
#   row_filter      optional: the condition every grant binds to its caller, e.g. "district_code = :district"
#   classification  the owner's grading of a column, e.g. public, internal, sensitive, core
#   levels          what a request may ask a column for: group, filter, measure ([] for none); entity for the entity
#   unit            optional: the unit of a measure's values, e.g. fen (1/100 yuan)
datasets:"""


def draft_catalog(tables: Iterable[str], columns_of: Callable[[str], list[tuple[str, str]]], *,
                  source: str = "the served tables") -> str:
    """The YAML text of a catalog draft for ``tables`` ("schema.table"), their columns read with ``columns_of``
    (the engine's (name, type) in table order); ``source`` says in the header where they were read."""
    lines = [_HEADER.format(source=source)]
    stages = ", ".join(DEFAULT_STAGES)
    for table in sorted(tables):
        lines += [f"  {_text(table)}:",
                  f"    title: {_text(PLACEHOLDER + ': a short title')}",
                  f"    description: {_text(PLACEHOLDER + ': what one row is')}",
                  f"    entity: {_text(PLACEHOLDER + ': the column that identifies the privacy unit')}",
                  f"    min_entities: {DEFAULT_MIN_ENTITIES}",
                  f"    approval_stages: [{stages}]",
                  "    columns:"]
        for name, kind in columns_of(table):
            lines.append(f"      {_text(name)}: {{description: {_text(PLACEHOLDER + ': what it holds')}, "
                         f"classification: {PLACEHOLDER}, levels: [{PLACEHOLDER}]}}  # {kind}")
    return "\n".join(lines) + "\n"


def _text(value: str) -> str:
    """``value`` as a YAML scalar: a plain name as it is, anything else as a JSON string (a valid YAML one)."""
    if _PLAIN.match(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value, ensure_ascii=False)
