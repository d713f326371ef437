"""Turns the engine's exact, bounded cells into the noisy answer a noise policy allows.

The guard's :class:`~dsbroker.guard.add_noise_measures.NoisePlan` says what each engine column is.
Cells pass OpenDP's noisy threshold on their count of taxpayers; each noisy quantity gets discrete
Laplace noise over the released cells, calibrated by :mod:`dsbroker.guard.noise_calibration`. ORDER BY and
LIMIT then apply to the noisy values. Only the released values leave this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsbroker.guard.add_noise_measures import NoisePlan
from dsbroker.guard.noise_calibration import (Calibration, column_scale, half_width, laplace_threshold,
                                               plan_calibration, vector_laplace)
from dsbroker.policy.model import Noise


@dataclass(frozen=True)
class NoisyColumn:
    """How noisy one released column is."""

    name: str
    scale: float  # Laplace scale of the noise (avg: of its sum)
    half_width: float  # half the 95% interval around the true value (avg: approximate, per cell at worst)


@dataclass(frozen=True)
class NoisyAnswer:
    """The released cells and what was done to them."""

    names: list[str]
    types: list[str]
    rows: list[tuple]
    truncated: bool
    calibration: Calibration
    columns: tuple[NoisyColumn, ...]


def noisy_answer(plan: NoisePlan, noise: Noise, min_entities: int, names: list[str], types: list[str],
                 rows: list[tuple], *, max_rows: int) -> NoisyAnswer:
    """Apply the noisy threshold and noise to exact cells ``rows`` (the engine's result for ``plan``)."""
    calibration = plan_calibration(plan, noise, min_entities)
    counts = {str(index): int(row[plan.keys]) for index, row in enumerate(rows)}
    kept = laplace_threshold(calibration.threshold_scale, calibration.threshold)(counts)
    released = sorted(kept, key=int)
    cells = [rows[int(key)] for key in released]
    noisy = []
    for index, scale in enumerate(calibration.scales):
        values = [int(cell[plan.keys + 1 + index]) for cell in cells]
        noisy.append(vector_laplace(scale)(values) if values else [])
    out_rows = []
    for position, cell in enumerate(cells):
        row = []
        for output in plan.outputs:
            if output.kind == "key":
                row.append(cell[output.column])
            elif output.kind == "entities":
                row.append(int(kept[released[position]]))
            elif output.kind in ("rows", "sum"):
                value = int(noisy[output.column][position])
                row.append(max(value, 0) if output.kind == "rows" else value)
            else:
                count = max(int(noisy[output.count][position]), 1)
                row.append(noisy[output.column][position] / count)
        out_rows.append(tuple(row))
    # The keys first, then the caller's order: the order of rows says nothing but the released values.
    keys = [position for position, output in enumerate(plan.outputs) if output.kind == "key"]
    out_rows.sort(key=lambda r: [(r[p] is None, r[p]) for p in keys])
    for position, descending in reversed(plan.order):
        out_rows.sort(key=lambda r: (r[position] is None, r[position]) if not descending
                      else (r[position] is not None, r[position]), reverse=descending)
    out_rows = out_rows[:plan.limit]
    truncated = len(out_rows) > max_rows
    out_types = []
    for output in plan.outputs:
        out_types.append(types[output.column] if output.kind == "key"
                         else "DOUBLE" if output.kind == "avg" else "BIGINT")
    return NoisyAnswer([o.name for o in plan.outputs], out_types, out_rows[:max_rows], truncated, calibration,
                       _noisy_columns(plan, calibration, out_rows))


def _noisy_columns(plan: NoisePlan, calibration: Calibration, rows: list[tuple]) -> tuple[NoisyColumn, ...]:
    columns = []
    for position, output in enumerate(plan.outputs):
        if output.kind == "key":
            continue
        scale = column_scale(output, calibration)
        if output.kind != "avg":
            columns.append(NoisyColumn(output.name, scale, half_width(scale)))
        else:
            # avg = (s + e_s) / (n + e_n): to first order its error is (e_s - avg * e_n) / n; the worst
            # released cell (the fewest rows, the largest average) bounds the interval.
            total, count = scale, calibration.scales[output.count]
            fewest = max(calibration.threshold, 1)
            largest = max((abs(row[position]) for row in rows), default=0.0)
            columns.append(NoisyColumn(output.name, total, (half_width(total) + largest * half_width(count)) / fewest))
    return tuple(columns)
