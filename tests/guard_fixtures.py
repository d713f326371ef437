"""Reads the guard's SQL fixtures: blocks that start with ``-- title:``, then ``-- key: value`` lines, then SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "guard"
# The attacks of DESIGN section 3 and of the guard's issue, as the refused fixtures are grouped.
CATEGORIES = {
    "raw-rows": "raw rows, or output neither grouped nor aggregated",
    "entity-id": "the taxpayer id output, grouped, filtered or counted without DISTINCT",
    "isolating-cells": "filters and groupings that isolate one enterprise (measures, hidden columns, finer periods)",
    "trackers": "OR padding, complements, and conditions or other columns inside aggregates",
    "min-max": "MIN/MAX and other picks of one value (median, first, arg_max, any_value)",
    "string-list-aggregates": "string and list aggregates",
    "joins": "joins on unique keys, to other tables, or other than on a lookup's key",
    "engine-escape": "statements and functions that read files, settings or metadata, or change the engine",
    "unreasoned-syntax": "constructs the guard does not reason about (subqueries, CTEs, set operations, windows)",
    "smuggling": "several statements, and text smuggled in comments",
    "probing": "probing for tables and columns the caller may not see",
    "name-confusion": "aliases and positions that could make two engines read a query differently",
    "malformed": "input that does not parse",
    "totals": "totals that would give a withheld cell away by subtraction (cut or hidden rows, unnamed keys)",
    "noise-evasion": "under noise, outputs computed from exact values (arithmetic, HAVING, hidden orderings)",
    "outer-query": "a two-level query's outer part reaching past the released cells (the dataset, the entity, raw "
                   "rows, an aggregate no rule guards) or computing from a withheld cell without a mark",
    "encrypted-mode": "encrypted results: plaintext under an encrypted-only grant, and outputs that could not be "
                      "added up under encryption or would be computed on a partition's cells",
}


@dataclass
class Case:
    file: str
    title: str
    sql: str
    expect: dict = field(default_factory=dict)
    rewritten: str | None = None
    category: str | None = None
    releases: str | None = None  # what the sandbox computes from the released cells (release_plan.describe)

    @property
    def id(self) -> str:
        return f"{self.file}: {self.title}"


def read_cases(pattern: str) -> list[Case]:
    cases: list[Case] = []
    for path in sorted(FIXTURES.glob(pattern)):
        for block in path.read_text(encoding="utf-8").split("-- title:")[1:]:
            title, _, body = block.partition("\n")
            expect: dict[str, str] = {}
            lines = body.splitlines()
            while lines and lines[0].startswith("-- ") and ":" in lines[0] and not lines[0].startswith("-- rewritten:"):
                key, _, value = lines.pop(0)[3:].partition(":")
                expect[key.strip()] = value.strip()
            text = "\n".join(lines)
            sql, _, rewritten = text.partition("-- rewritten:")
            rewritten, _, releases = rewritten.partition("-- releases:")
            category = expect.pop("category", None)
            cases.append(Case(path.stem, title.strip(), sql.strip(), expect,
                              rewritten.strip() if rewritten else None, category, releases.strip() or None))
    assert cases, f"no fixtures match {pattern}"
    return cases
