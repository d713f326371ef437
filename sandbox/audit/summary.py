"""How much of a dataset the released cells pin down, for the owner and its auditors (``dsbroker sandbox
released``).

Read from the released-cell ledger and the data, on the owner's side: the cells and coverages released,
the blocks they tell apart (``sandbox.audit.blocks``), the dimension of what they determine (the rank of
the released cells over the blocks), how many blocks' totals are determined one by one, and how many of
those fail the cell rules. The last number is 0 wherever the auditor ran for every release: a block that
fails the rules and is determined alone was released before the auditor, or under a grant with a lower
threshold, or with the auditor off.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from dsbroker.policy.model import Dominance
from sandbox.audit.auditor import Rules, Judge, Membership, merged_blocks
from sandbox.audit.blocks import read_blocks
from sandbox.audit.linear import Echelon, Row, reduced
from sandbox.ledgers.released_cells import ReleasedCellLedger


@dataclass(frozen=True)
class ReleasedSummary:
    """What the released cells of one dataset determine (see the module)."""

    dataset: str
    cells: int  # released cells (a cell's statistics count once)
    coverages: int  # distinct coverages (queries' rows and keys) they come from
    blocks: int  # the finest partition the released cells tell apart
    determined_dimension: int  # the rank of the released cells over the blocks
    determined_blocks: int  # blocks whose own total the released cells determine
    failing_blocks: int  # blocks that fail the cell rules alone
    failing_determined: int  # of those, determined alone: 0 wherever every release was audited
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data."""
        return asdict(self)


def released_summary(engine: Any, ledger: ReleasedCellLedger, dataset: str, *, entity: str, min_entities: int,
                     dominance: Dominance | None = None, timeout_s: float = 600.0) -> ReleasedSummary:
    """Summarise what the released cells of ``dataset`` determine, judged by the rules given."""
    started = time.perf_counter()
    released = ledger.cells(dataset)
    cells = list(dict.fromkeys((c.coverage, c.fixed, c.keys) for c in released))
    coverages = list(dict.fromkeys(c.coverage for c in released))
    if not cells:
        return ReleasedSummary(dataset, 0, 0, 0, 0, 0, 0, 0, round(time.perf_counter() - started, 3))
    measures = sorted({c.statistic.split(":", 1)[1] for c in released if ":" in c.statistic})
    # Not bounded as an audit is: the owner asks for the whole ledger, and no answer waits for it.
    blocks = read_blocks(engine, coverages, dataset=dataset, entity=entity, measures=measures, timeout_s=timeout_s,
                         bounded=False)
    members = Membership(blocks, coverages)
    rows = [members.cell(members.place[coverage], fixed, keys) for coverage, fixed, keys in cells]
    merged = merged_blocks(rows)
    parts: dict[int, list[int]] = {}
    for block, representative in merged.items():
        parts.setdefault(representative, []).append(block)
    columns = sorted(parts)
    echelon = Echelon({c: i for i, c in enumerate(columns)})
    for index, row in enumerate(rows):
        echelon.add(Row({merged[b]: 1 for b in row}, {index: 1}))
    basis = reduced(list(echelon.pivots.values()))
    determined = {next(iter(row.vector)) for row in basis if len(row.vector) == 1}
    judge = Judge(blocks, sorted({c.statistic for c in released}), Rules(min_entities, dominance), dataset)
    failing = {c for c in columns if judge.fails(frozenset(parts[c]))}
    return ReleasedSummary(dataset, len(cells), len(coverages), len(columns), len(basis), len(determined),
                           len(failing), len(failing & determined), round(time.perf_counter() - started, 3))
