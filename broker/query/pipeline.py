"""One query, end to end on the broker: grant, guard, DECISION record, sandbox, RESULT record.

The DECISION record is durable before the sandbox is called; if it cannot be
written the query is refused. Every path, allowed or refused, leaves a record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from broker.access_log.log import AccessLog, AccessRecord, Quota
from broker.permissions import require_role
from dsbroker.identity.auth import Principal
from dsbroker.errors import DsbrokerError, QuotaError, clipped
from dsbroker.guard import GuardedQuery, GuardStep, guard
from dsbroker.guard.plan_cache import PlanCache
from dsbroker.observability.call_facts import logged_grant, note_call
from dsbroker.observability.metrics import ServerMetrics, outcome_of
from dsbroker.policy.model import Policy
from dsbroker.policy.product_binding import product_detail, query_of
from broker.workflow.policy_registry import POLICIES, PolicyRegistry, grant_id_of
from broker.query.sandbox_client import SandboxClient
from broker.query.secure_sum import SecureSum
from dsbroker.identity.tls import PeerCertificate
from dsbroker.records.executions import plan_digest
from dsbroker.v1 import product_pb2, results_pb2
from sandbox.v1 import sandbox_service_pb2 as sandbox_pb


# The grant as the access record names it: a valid id whole, anything else cut (the refusal says why).
GRANT_ID_BYTES = 80


@dataclass(frozen=True)
class QueryOutcome:
    """What the pipeline hands back to the servicer."""

    response: sandbox_pb.ExecutePlanResponse
    guarded: GuardedQuery
    policy: Policy
    access_record: int


@dataclass(frozen=True)
class Explanation:
    """What the guard makes of a query, without running it."""

    guarded: GuardedQuery
    steps: tuple[GuardStep, ...]
    policy: Policy
    access_record: int


class QueryPipeline:
    """Orchestrates one query; owns no policy decisions itself (the guard and grants do)."""

    def __init__(self, policies: PolicyRegistry, sandbox: SandboxClient, access_log: AccessLog, *,
                 owner_timezone: dt.tzinfo, clock: Callable[[], dt.datetime] | None = None,
                 partitions: SecureSum | None = None,
                 column_types: Callable[[], dict[str, dict[str, str]] | None] = lambda: None,
                 engine_dialect: Callable[[str], str] = lambda dataset: "duckdb",
                 monotonic: Callable[[], float] = time.monotonic, metrics: ServerMetrics | None = None) -> None:
        """``clock`` gives the current time (default: the wall clock; tests fix it); validity and daily
        quotas use the owner's day. ``partitions`` reaches the sandboxes that policies with partitions name.
        ``column_types`` gives the engine's column types from the owner's catalog, or None when they are not
        to be had (the sandbox then checks what needs them); ``engine_dialect`` gives the SQL dialect of the
        engine serving a dataset, which the guard writes the plan in; ``monotonic`` times the guard against the
        caller's deadline. ``metrics`` counts queries by decision and times the guard and the sandbox call
        (the server's; by default a registry of the pipeline's own)."""
        self.policies = policies
        self.metrics = metrics or ServerMetrics("broker")
        self.sandbox = sandbox
        self.partitions = partitions or SecureSum({})
        self.access_log = access_log
        self.owner_timezone = owner_timezone
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.column_types = column_types
        self.engine_dialect = engine_dialect
        self.monotonic = monotonic
        self.plans = PlanCache()

    def run(self, principal: Principal, grant: str, unverified_sql: str, *, request_id: str,
            client: str, timeout_s: float, token: str, certificate: PeerCertificate | None = None,
            encryption: results_pb2.Encryption | None = None,
            product: product_pb2.ProductCall | None = None) -> QueryOutcome:
        """Run one query for ``principal`` under the grant named ``grant`` (``policies/{id}``); raises
        DsbrokerError when refused.

        ``token`` is the caller's bearer token and ``certificate`` the client certificate of its call; the
        plan carries both so the sandbox can check who asks (and a certificate-bound token's binding).
        It carries the owner's statements the broker holds for the policy too, so a sandbox that missed
        one learns it with the next plan.
        With ``encryption`` (the requester's public key) the cells come back encrypted under it; with
        partitions, added up across them here without being decrypted.
        With ``product`` (and no SQL) the query is the grant's product with its parameters bound, guarded and run
        as any query; the plan names the product, so that the sandbox binds it again from the signed policy.
        """
        # The body's request id, which the sandbox gets too; the grant only where the text can name one.
        note_call(grant=logged_grant(grant.removeprefix(f"{POLICIES}/")), request_id=request_id)
        try:
            outcome = self._run(principal, grant, unverified_sql, request_id=request_id, client=client,
                                timeout_s=timeout_s, token=token, certificate=certificate, encryption=encryption,
                                product=product)
        except BaseException as error:
            self._settle(*outcome_of(error))
            raise
        self._settle("released")
        return outcome

    def _run(self, principal: Principal, grant: str, unverified_sql: str, *, request_id: str,
             client: str, timeout_s: float, token: str, certificate: PeerCertificate | None,
             encryption: results_pb2.Encryption | None,
             product: product_pb2.ProductCall | None) -> QueryOutcome:
        encrypted = encryption is not None
        called = product_detail(product) if product is not None else {}
        base = dict(subject=principal.subject, department=principal.department, token_id=principal.token_id,
                    client=client, request_id=request_id, grant_id=_recorded_id(grant), sql=unverified_sql)
        now = self.clock()
        deadline = self.monotonic() + timeout_s
        today = now.astimezone(self.owner_timezone).date()
        try:
            require_role("requester", principal)
            policy = self.policies.grant_for(grant_id_of(grant), principal, now)
            base.update(policy_version=policy.version, policy_sha256=policy.sha256)
            # The grant's signed template, parameters bound on its parse tree; SQL of the caller's own where the
            # grant answers it.
            unverified_sql = base["sql"] = query_of(policy, product, unverified_sql)
            dialect = self.engine_dialect(policy.dataset)
            with self.metrics.timed("guard"):
                guarded = self.plans.get_or_build(
                    policy, principal.district, principal.department, unverified_sql,
                    lambda: guard(unverified_sql, policy, district=principal.district,
                                  department=principal.department, engine_dialect=dialect, encrypted=encrypted,
                                  column_types=self.column_types(), deadline=deadline, clock=self.monotonic),
                    encrypted=encrypted, dialect=dialect)
        except Exception as error:  # refusals and bugs alike leave a record
            self.access_log.append(AccessRecord(event="query.decision", decision="deny", reason=_reason(error),
                                                detail={**called, **getattr(error, "metadata", {})}, **base), now=now)
            raise
        base["rewritten_sql"] = guarded.sql
        limited = policy.queries_per_day is not None or policy.queries_total is not None
        quota = Quota(policy.id, policy.queries_per_day, policy.queries_total,
                      day_start=dt.datetime.combine(today, dt.time(0), self.owner_timezone)) if limited else None
        plan = sandbox_pb.Plan(dataset=policy.dataset, sql=guarded.sql, policy_id=policy.id,
                               policy_version=policy.version, max_rows=guarded.max_rows,
                               policy_document=policy.document, original_sql=unverified_sql, caller_token=token,
                               execution_id=str(uuid.uuid4()), encryption=encryption,
                               caller_certificate=certificate.der if certificate else b"",
                               policy_statements=self.policies.statements_for(policy.id), product=product)
        execution = {"execution_id": plan.execution_id, "plan_sha256": plan_digest(plan), **called}
        if encrypted:
            execution.update(encrypted=True, partitions=list(policy.partitions))
        try:
            with self.metrics.timed("decision_record"):  # durable before the sandbox is called: on the query's path
                seq = self.access_log.append(AccessRecord(event="query.decision", decision="allow",
                                                          detail=execution, **base), now=now, quota=quota)
        except QuotaError as error:
            if error.metadata.get("quota") == "queries_total":
                self.policies.exhausted(policy.id)
            raise
        started = time.perf_counter()
        try:
            if policy.partitions:
                response = self.partitions.execute(plan, policy.partitions, max_groups=guarded.max_rows,
                                                   timeout_s=timeout_s, request_id=request_id)
            else:
                response = self.sandbox.execute(plan, timeout_s=timeout_s, request_id=request_id)
        except Exception as error:
            self.metrics.stage("sandbox_call", time.perf_counter() - started)
            self.access_log.append(AccessRecord(event="query.result", decision="error", reason=_reason(error),
                                                detail={"decision_seq": seq, **execution,
                                                        "duration_ms": _since(started),
                                                        **getattr(error, "metadata", {})}, **base), synced=False)
            raise
        self.metrics.stage("sandbox_call", time.perf_counter() - started)
        released = response.encrypted if response.HasField("encrypted") else response.table
        digest = hashlib.sha256(released.SerializeToString(deterministic=True)).hexdigest()
        with self.metrics.timed("result_record"):
            self._record_release(response, base, execution, seq, started, digest)
        return QueryOutcome(response, guarded, policy, seq)

    def _record_release(self, response: sandbox_pb.ExecutePlanResponse, base: dict, execution: dict, seq: int,
                        started: float, digest: str) -> None:
        """The RESULT record of a released answer: committed before the caller has it, flushed with the next."""
        self.access_log.append(AccessRecord(
            event="query.result", decision="released", detail={
                "decision_seq": seq, **execution, "sandbox_id": response.sandbox_id,
                "duration_ms": _since(started), **_cells(response),
                "truncated": response.truncated, "engine_micros": response.engine_micros,
                "cells_withheld": response.cells_withheld,
                "threshold_cells_withheld": response.threshold_cells_withheld,
                "secondary_cells_withheld": response.secondary_cells_withheld,
                "audit_cells_withheld": response.audit_cells_withheld,
                "result_sha256": digest, **_noise_detail(response)}, **base), synced=False)

    def explain(self, principal: Principal, grant: str, unverified_sql: str, *, request_id: str,
                client: str, encrypted: bool = False, product: product_pb2.ProductCall | None = None) -> Explanation:
        """What ``run`` would do with the query, without running it; refused exactly as ``run`` refuses.

        Recorded in the access log as ``query.explain`` (allowed or refused), with the rewritten SQL;
        it is not a query, so it does not count against the grant's quotas. The plan cache is not
        used: the steps are traced afresh.
        """
        note_call(grant=logged_grant(grant.removeprefix(f"{POLICIES}/")), request_id=request_id)
        try:
            explanation = self._explain(principal, grant, unverified_sql, request_id=request_id, client=client,
                                        encrypted=encrypted, product=product)
        except BaseException as error:  # an explain is no query: noted for its log line, not counted
            note_call(decision=outcome_of(error)[0])
            raise
        note_call(decision="explained")
        return explanation

    def _settle(self, decision: str, reason: str = "") -> None:
        """Count the query's decision and note it (and why) for its log line."""
        self.metrics.query(decision, reason)
        note_call(decision=decision)

    def _explain(self, principal: Principal, grant: str, unverified_sql: str, *, request_id: str,
                 client: str, encrypted: bool, product: product_pb2.ProductCall | None) -> Explanation:
        base = dict(subject=principal.subject, department=principal.department, token_id=principal.token_id,
                    client=client, request_id=request_id, grant_id=_recorded_id(grant), sql=unverified_sql)
        called = product_detail(product) if product is not None else {}
        now = self.clock()
        steps: list[GuardStep] = []
        try:
            require_role("requester", principal)
            policy = self.policies.grant_for(grant_id_of(grant), principal, now)
            base.update(policy_version=policy.version, policy_sha256=policy.sha256)
            unverified_sql = base["sql"] = query_of(policy, product, unverified_sql)  # as run() binds it
            guarded = guard(unverified_sql, policy, district=principal.district, department=principal.department,
                            engine_dialect=self.engine_dialect(policy.dataset), steps=steps, encrypted=encrypted,
                            column_types=self.column_types())
        except Exception as error:
            self.access_log.append(AccessRecord(event="query.explain", decision="deny", reason=_reason(error),
                                                detail={**called, **getattr(error, "metadata", {})}, **base), now=now)
            raise
        seq = self.access_log.append(AccessRecord(event="query.explain", decision="allow", rewritten_sql=guarded.sql,
                                                  detail=called, **base), now=now)
        return Explanation(guarded, tuple(steps), policy, seq)


def _recorded_id(grant: str) -> str:
    """The grant's id as the access record holds it: the id in ``policies/{id}``, any other name whole; cut to
    GRANT_ID_BYTES (the refusal says why such a name is none)."""
    return clipped(grant.removeprefix(f"{POLICIES}/"), GRANT_ID_BYTES)


def _noise_detail(response: sandbox_pb.ExecutePlanResponse) -> dict:
    """What a noisy answer cost, for the RESULT record (the noise itself is not recorded)."""
    if not response.HasField("noise"):
        return {}
    noise = response.noise
    return {"epsilon_spent": noise.epsilon_spent, "epsilon_total_spent": noise.epsilon_total_spent,
            "dataset_epsilon_spent": noise.dataset_epsilon_spent,
            "repeated_answer": noise.repeated_answer, "noise_threshold": noise.threshold}


def _cells(response: sandbox_pb.ExecutePlanResponse) -> dict:
    """Rows and cells released, for the RESULT record; encrypted cells count as released, with the key named."""
    if response.HasField("encrypted"):
        encrypted = response.encrypted
        rows = encrypted.groups.row_count
        return {"rows": rows, "cells_released": rows * (len(encrypted.groups.columns) + len(encrypted.columns)),
                "key_id": encrypted.key_id}
    table = response.table
    return {"rows": table.row_count, "cells_released": table.row_count * len(table.columns) - _withheld(response)}


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _withheld(response: sandbox_pb.ExecutePlanResponse) -> int:
    return (response.cells_withheld + response.threshold_cells_withheld + response.secondary_cells_withheld
            + response.audit_cells_withheld)


def _reason(error: Exception) -> str:
    return error.reason if isinstance(error, DsbrokerError) else "INTERNAL"
