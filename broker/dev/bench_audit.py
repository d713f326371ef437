"""The released-cell auditor's cost per query as the ledger grows: a district's 24 monthly street x industry
tables and street totals, in order, with each audit's added time (the release with the audit less the same
release without it, in the same process). ``scripts/bench`` prints its row; alone:
``python -m broker.dev.bench_audit [--taxpayers N]`` (demo data made once under .cache/bench).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dsbroker.guard import guard
from dsbroker.policy.model import load_policy
from sandbox.audit.auditor import Auditor
from sandbox.demo.data import make_demo_data
from sandbox.disclosure.release import release
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.engine.interface import EngineLimits
from sandbox.ledgers.released_cells import ReleasedCellLedger

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class AuditFigures:
    """Each audit's added seconds, in order, with the cells released and withheld over the run."""

    seconds: list[float]
    cells: int
    withheld: int


def main() -> None:
    """Print each eighth audit's time, then the median and largest, the cells released and the peak RSS."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taxpayers", type=int, default=20_000)
    arguments = parser.parse_args()
    data = ROOT / ".cache" / "bench" / f"audit-{arguments.taxpayers}.duckdb"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        make_demo_data(data, taxpayers=arguments.taxpayers)
    from dsbroker.garbage_collection import tune_for_serving

    tune_for_serving()  # as the sandbox's process does
    figures = audit_figures(data, progress=print)
    times = figures.seconds
    print(f"audit: median {statistics.median(times) * 1000:.1f} ms, largest {max(times) * 1000:.1f} ms; "
          f"{figures.cells:,} cells released, {figures.withheld} withheld by the audit; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def audit_figures(data: Path, *, progress=None) -> AuditFigures:
    """Run the workload (see the module) on ``data`` with a fresh ledger and time each audit."""
    engine = DuckDBEngine(str(data), EngineLimits())
    policy = load_policy(ROOT / "policies" / "xuanwu-fgw-2026-007.yaml")
    auditor = Auditor(engine, ReleasedCellLedger(Path(tempfile.mkdtemp()) / "released.sqlite"))
    months = [f"{year}-{month:02d}-01" for year in (2024, 2025) for month in range(1, 13)]
    queries = []
    for month in months:
        queries.append(f"SELECT street_code, industry_code, SUM(vat_paid) FROM tax.declarations "
                       f"WHERE period = DATE '{month}' GROUP BY 1, 2")
        queries.append(f"SELECT street_code, SUM(vat_paid) FROM tax.declarations WHERE period = DATE '{month}' "
                       "GROUP BY 1")
    times: list[float] = []
    cells = withheld = 0
    for sql in queries:
        guarded = guard(sql, policy, district="320102", department="xuanwu-fgw")
        result = engine.execute(guarded.sql, timeout_s=60, max_rows=10_000)
        started = time.perf_counter()
        release(result.names, result.types, result.rows, guarded)
        plain = time.perf_counter() - started
        started = time.perf_counter()
        audited = release(result.names, result.types, result.rows, guarded,
                          audit=auditor.session(guarded, deadline=time.monotonic() + 300))
        times.append(time.perf_counter() - started - plain)
        cells += sum(1 for row in audited.rows if row[-1] is not None)
        withheld += audited.counts["audit"]
        if progress is not None and len(times) % 8 == 0:
            progress(f"{len(times):3d} queries, {cells:6,d} cells released, last audit {times[-1] * 1000:7.1f} ms")
    engine.close()
    return AuditFigures(times, cells, withheld)


if __name__ == "__main__":
    main()
