"""Reads the guard's SQL fixtures: blocks that start with ``-- title:``, then ``-- key: value`` lines, then SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "guard"


@dataclass
class Case:
    file: str
    title: str
    sql: str
    expect: dict = field(default_factory=dict)
    rewritten: str | None = None

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
            cases.append(Case(path.stem, title.strip(), sql.strip(), expect,
                              rewritten.strip() if rewritten else None))
    assert cases, f"no fixtures match {pattern}"
    return cases
