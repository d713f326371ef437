"""What the attack tests share: crafted declarations (opened with the ``engines`` fixture of conftest), the
guard's plan as the sandbox checks it, and what a caller learns from one run, so that two neighbouring
databases can be compared."""

from __future__ import annotations

import dataclasses
import datetime as dt

from dsbroker.errors import DsbrokerError
from dsbroker.guard import guard
from sandbox.disclosure.release import run
from tests.conftest import XUANWU

JAN = dt.date(2025, 1, 1)
# The engine's column types, as the sandbox reads them for the type rules (declarations_file's schema).
TYPES = {"tax.declarations": {
    "taxpayer_id": "VARCHAR", "period": "DATE", "district_code": "VARCHAR", "street_code": "VARCHAR",
    "industry_code": "VARCHAR", "industry_section": "VARCHAR", "registration_type": "VARCHAR",
    "size_class": "VARCHAR", "revenue": "BIGINT", "vat_paid": "BIGINT", "cit_paid": "BIGINT",
    "iit_withheld": "BIGINT", "employees": "INTEGER"}}


def street(name: str, taxpayers: int, revenue: int = 100, vat: int = 10) -> list[tuple]:
    """Rows of one street: ``taxpayers`` taxpayers, one January declaration each (cit_paid 0)."""
    return [(f"{name}-{n}", JAN, name, revenue, vat) for n in range(taxpayers)]


def guarded_for(sql: str, policy, *, encrypted: bool = False, **overrides):
    """The guard's plan for ``sql`` under ``policy`` with ``overrides``, checked as the sandbox checks it."""
    granted = dataclasses.replace(policy, **overrides) if overrides else policy
    return guard(sql, granted, district=XUANWU, department="xuanwu-fgw", column_types=TYPES, encrypted=encrypted)


def outcome(engine, guarded):
    """What a caller learns from one plaintext run: rows and marks, or the refusal's reason. Any other
    exception is an INTERNAL error for the caller, and is reported as such."""
    try:
        released = run(engine, guarded, timeout_s=30)
    except DsbrokerError as error:
        return ("refused", error.reason)
    except Exception as error:  # noqa: BLE001 - an INTERNAL error is an answer too, and a finding
        return ("internal", type(error).__name__)
    return ("answered", released.rows, released.withheld, released.truncated)
