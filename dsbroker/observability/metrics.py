"""Prometheus metrics of one server (broker or sandbox), in a registry of its own.

A registry per server instance: tests start several servers in one process, and each must count its
own calls. Every label is bounded by construction, never by the caller's input:

- ``method``: a method the server registered (an unknown method never reaches an interceptor);
- ``code``: a ``grpc.StatusCode`` name;
- ``decision``: :data:`DECISIONS`; ``stage``: :data:`STAGES`; ``rule``: :data:`WITHHOLDING_RULES`;
- ``reason``: a name of :data:`dsbroker.errors.REASONS`, anything else ``UNREGISTERED`` (a sandbox's
  status may carry a reason this version does not declare).

No label ever holds SQL, a value, a taxpayer id, a grant or a department: those have no bound, and a
department's rate of refusals is for the access log's auditors, not the operator's dashboard.

Observing costs a lock-protected addition (prometheus-client's own, held for no I/O) per metric: a
few microseconds a query.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram

from dsbroker.errors import REASONS, DsbrokerError

DECISIONS = ("released", "denied", "error")
STAGES = ("guard", "decision_record", "sandbox_call", "result_record", "recheck", "engine", "disclosure", "auditor",
          "access_log_commit")
WITHHOLDING_RULES = ("min_entities", "dominance", "secondary", "audit")
UNREGISTERED = "UNREGISTERED"
# Codes that say the server (or one it depends on) failed, not that the caller was refused.
FAILURE_CODES = frozenset({"INTERNAL", "UNAVAILABLE", "UNKNOWN", "DATA_LOSS", "DEADLINE_EXCEEDED"})
# Seconds, from a cached plan (tens of microseconds) to a query at its deadline (minutes).
LATENCY_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def bounded_reason(reason: str) -> str:
    """``reason`` when it is a declared reason, else :data:`UNREGISTERED` (a label's values stay bounded)."""
    return reason if reason in REASONS else UNREGISTERED


def outcome_of(error: BaseException) -> tuple[str, str]:
    """The (decision, reason) a failed query is counted under: ``denied`` when the caller was refused,
    ``error`` when the server or one it depends on failed."""
    if not isinstance(error, DsbrokerError):
        return "error", "INTERNAL"
    return ("error" if error.code_name in FAILURE_CODES else "denied"), bounded_reason(error.reason)


class ServerMetrics:
    """The metrics of one server; ``server`` (``broker`` or ``sandbox``) prefixes each metric's name."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.registry = CollectorRegistry(auto_describe=True)
        prefix = f"dsbroker_{server}"
        self.rpcs = Counter(f"{prefix}_rpcs", "RPCs answered, by method and status code", ("method", "code"),
                            registry=self.registry)
        self.rpc_seconds = Histogram(f"{prefix}_rpc_duration_seconds", "time to answer an RPC, by method",
                                     ("method",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queries = Counter(f"{prefix}_queries", "queries run (RunQuery, ExecutePlan) by decision (released, "
                               "denied, error) and reason (a declared reason; empty when released)",
                               ("decision", "reason"),
                               registry=self.registry)
        self.stage_seconds = Histogram(f"{prefix}_stage_duration_seconds", "time a query spends in each stage",
                                       ("stage",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.exhausted = Counter(f"{prefix}_exhausted_refusals", "calls refused because a quota, a privacy budget "
                                 "or a limit is spent (RESOURCE_EXHAUSTED), by reason", ("reason",),
                                 registry=self.registry)
        # Each side exposes only what it has: disclosure control is the sandbox's, the access log the broker's.
        self.withheld = Counter(f"{prefix}_cells_withheld", "cells withheld by disclosure control, by the rule "
                                "that withheld them (audit: the released-cell auditor)", ("rule",),
                                registry=self.registry if server == "sandbox" else None)
        self.batch_records = Histogram(f"{prefix}_access_log_batch_records", "records per access-log commit "
                                       "(group commit)", buckets=BATCH_BUCKETS,
                                       registry=self.registry if server == "broker" else None)

    def rpc(self, method: str, code: str, seconds: float, reason: str = "") -> None:
        """One RPC answered with ``code`` (and ``reason``, counted when a quota or budget was spent)."""
        self.rpcs.labels(method, code).inc()
        self.rpc_seconds.labels(method).observe(seconds)
        if code == "RESOURCE_EXHAUSTED":
            self.exhausted.labels(bounded_reason(reason) if reason else code).inc()

    def query(self, decision: str, reason: str = "") -> None:
        """One query settled with ``decision`` (one of :data:`DECISIONS`)."""
        self.queries.labels(decision, bounded_reason(reason) if reason else "").inc()

    def stage(self, stage: str, seconds: float) -> None:
        """``seconds`` spent in ``stage`` (one of :data:`STAGES`)."""
        self.stage_seconds.labels(stage).observe(seconds)

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Observe the time the block takes in ``stage``, whether it succeeds or raises."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds.labels(stage).observe(time.perf_counter() - started)

    def cells_withheld(self, counts: dict[str, int]) -> None:
        """Cells withheld by rule (``counts`` keyed by :data:`WITHHOLDING_RULES`; zero counts are not added)."""
        for rule in WITHHOLDING_RULES:
            if counts.get(rule):
                self.withheld.labels(rule).inc(counts[rule])

    def access_log_batch(self, records: int, seconds: float) -> None:
        """One group commit of ``records`` records that took ``seconds``."""
        self.batch_records.observe(records)
        self.stage_seconds.labels("access_log_commit").observe(seconds)
