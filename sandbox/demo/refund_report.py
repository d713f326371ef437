"""The demo's monthly report through the released-cell auditor, on data where some VAT amounts are refunds.

Street totals, section totals, street x section, 24 months, year x street, in order, against one ledger, as
``tests/test_released_cell_auditor_refunds.py`` runs them; per query the audit's seconds, its search work (per
pool, :class:`sandbox.audit.linear.AuditCheck`) and the cells it withheld. The data: the demo's (made once under
``.cache/refunds``) with the VAT of 0.5% of declarations negated, chosen by a hash of taxpayer and month;
``--one-sign`` runs the demo's own data. ``python -m sandbox.demo.refund_report [--taxpayers N] [--one-sign]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from dsbroker.guard import guard
from dsbroker.policy.model import load_policy
from sandbox.audit.auditor import Auditor
from sandbox.demo.data import make_demo_data
from sandbox.disclosure.release import release
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.engine.interface import EngineLimits
from sandbox.ledgers.released_cells import ReleasedCellLedger

ROOT = Path(__file__).resolve().parents[2]
GRANT = ROOT / "policies" / "xuanwu-fgw-2026-007.yaml"
DISTRICT = "320102"
REPORT = ["SELECT street_code, SUM(vat_paid) FROM tax.declarations GROUP BY street_code",
          "SELECT industry_section, SUM(vat_paid) FROM tax.declarations GROUP BY industry_section",
          "SELECT street_code, industry_section, SUM(vat_paid) FROM tax.declarations GROUP BY 1, 2",
          "SELECT period, SUM(vat_paid) FROM tax.declarations GROUP BY period",
          "SELECT year(period) AS y, street_code, SUM(vat_paid) FROM tax.declarations GROUP BY 1, 2"]
# The VAT of 0.5% of declarations made refunds, by a hash of taxpayer and month (a taxpayer may pay in some months
# and be refunded in others).
REFUNDS = "UPDATE tax.declarations SET vat_paid = -vat_paid WHERE hash(taxpayer_id || period) % 200 = 0"


def data(taxpayers: int, refunds: bool) -> Path:
    """The demo data file (made once), or its copy with refunds."""
    folder = ROOT / ".cache" / "refunds"
    folder.mkdir(parents=True, exist_ok=True)
    demo = folder / f"demo-{taxpayers}.duckdb"
    if not demo.exists():
        make_demo_data(demo, taxpayers=taxpayers)
    if not refunds:
        return demo
    path = folder / f"refunds-{taxpayers}.duckdb"
    if not path.exists():
        partial = path.with_suffix(".partial")
        shutil.copy(demo, partial)
        with duckdb.connect(str(partial)) as connection:
            connection.execute(REFUNDS)
        partial.rename(path)
    return path


def main() -> None:
    """Print, per query of the report, the audit's seconds, its work and the cells it withheld."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taxpayers", type=int, default=20_000)
    parser.add_argument("--one-sign", action="store_true", help="the demo's data, without refunds")
    arguments = parser.parse_args()
    policy = load_policy(GRANT)
    engine = DuckDBEngine(str(data(arguments.taxpayers, not arguments.one_sign)), EngineLimits())
    with tempfile.TemporaryDirectory() as folder:
        auditor = Auditor(engine, ReleasedCellLedger(Path(folder) / "released.sqlite"))
        try:
            for sql in REPORT:
                guarded = guard(sql, policy, district=DISTRICT, department="xuanwu-fgw")
                result = engine.execute(guarded.sql, timeout_s=600, max_rows=10_000)
                started = time.perf_counter()
                audited = release(result.names, result.types, result.rows, guarded,
                                  audit=auditor.session(guarded, deadline=time.monotonic() + 600))
                seconds = time.perf_counter() - started
                work = ", ".join(f"{pool or 'failing'} {spent:,}" for pool, spent in auditor.last_work.items())
                print(f"{seconds:6.2f} s  withheld {audited.counts['audit']:2} of {len(result.rows):3}  "
                      f"work {work or '-'}  {sql}", flush=True)
        finally:
            engine.close()


if __name__ == "__main__":
    main()
