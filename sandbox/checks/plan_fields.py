"""The fields of a plan, checked before the plan is recorded or run.

A plan comes from a broker that may be broken or hostile, so the sandbox takes no field's range for
granted: a row cap below 1 would reach the engine (DuckDB's ``fetchmany`` with a negative size fails
after the plan was written to the execution ledger as run), and an execution id of any length would be
written to the ledger whole. Each field is refused INVALID_ARGUMENT ``PLAN_INVALID`` with a BadRequest
naming it. The policy's own fields (id, version, dataset) are checked against the signed document it
carries, the SQL against the guard, and the caller's token by the authenticator.
"""

from __future__ import annotations

import re

from dsbroker.policy.model import MAX_POLICY_CHARS
from dsbroker.rpc.request_fields import RequestFieldError
from dsbroker.identity.tls import MAX_FORWARDED_CERTIFICATE_BYTES
from sandbox.v1 import sandbox_service_pb2 as pb

# As the broker writes them (a UUID) and as request ids are held: what the ledger may store and quote.
EXECUTION_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def check_plan_fields(plan: pb.Plan) -> None:
    """Refuse a plan whose SQL, original SQL, row cap, caller certificate, policy document or execution id
    is missing or out of range."""
    if not plan.sql.strip():
        raise _invalid("the plan has no SQL", "plan.sql")
    if not plan.original_sql.strip():
        raise _invalid("the plan carries no original SQL, so the sandbox cannot run the guard on it again",
                       "plan.original_sql")
    if plan.max_rows < 1:
        raise _invalid("the plan's row cap (max_rows) must be at least 1", "plan.max_rows")
    if len(plan.caller_certificate) > MAX_FORWARDED_CERTIFICATE_BYTES:
        raise _invalid(f"the plan's caller certificate is larger than {MAX_FORWARDED_CERTIFICATE_BYTES} bytes, "
                       "more than any client certificate", "plan.caller_certificate")
    if len(plan.policy_document) > MAX_POLICY_CHARS:
        raise _invalid(f"the plan's policy document is longer than {MAX_POLICY_CHARS} characters, the bound of "
                       "every policy", "plan.policy_document")
    if not EXECUTION_ID.fullmatch(plan.execution_id):
        raise _invalid("the plan needs an execution id of 1 to 128 letters, digits or . _ : - (it is how the "
                       "sandbox's ledger is reconciled with the broker's log)", "plan.execution_id")


def _invalid(message: str, field: str) -> RequestFieldError:
    return RequestFieldError(message, field=field, reason="PLAN_INVALID")
