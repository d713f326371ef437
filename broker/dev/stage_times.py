"""Where a query's time goes: the broker's and the sandbox's own stage timings, read from their metrics.

The bench starts both servers with a metrics endpoint (:func:`metrics_options`), reads every histogram's sum and
count before and after a timed loop (:func:`read_timings`), and prints the mean per call of each stage
(:func:`breakdown`), with what lies between them (the two gRPC hops with their TLS, interceptors and the
messages' encoding) as the difference of the nested figures.
"""

from __future__ import annotations

import socket
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

RPCS = {"broker": "/broker.v1.QueryService/RunQuery", "sandbox": "/sandbox.v1.SandboxService/ExecutePlan"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 free just now (for a metrics endpoint the bench alone reads)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def metrics_options() -> dict[str, dict[str, str]]:
    """Settings that give a broker and a sandbox each a metrics endpoint: ``{"broker": {...}, "sandbox": {...}}``."""
    return {side: {"metrics_listen": f"127.0.0.1:{free_port()}"} for side in ("broker", "sandbox")}


Timings = dict[tuple[str, str], tuple[float, float]]  # (metric, label value) -> (seconds summed, observations)


def read_timings(listen: str) -> Timings:
    """Every duration histogram's sum and count at the metrics endpoint ``listen`` (host:port), by its label."""
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[tuple[str, str], list[float]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.endswith("_duration_seconds"):
            continue
        for sample in family.samples:
            kind = sample.name.rsplit("_", 1)[-1]
            if kind not in ("sum", "count"):
                continue
            label = sample.labels.get("stage") or sample.labels.get("method", "")
            found.setdefault((family.name, label), [0.0, 0.0])[0 if kind == "sum" else 1] = sample.value
    return {key: (seconds, count) for key, (seconds, count) in found.items()}


@dataclass(frozen=True)
class Breakdown:
    """Mean milliseconds per query of each stage, on each side, over a timed loop of ``queries`` calls."""

    queries: int
    broker: dict[str, float]
    sandbox: dict[str, float]

    def lines(self, end_to_end_ms: float) -> list[str]:
        """The breakdown as printed lines (:meth:`rows`)."""
        return [f"  {label:<56}{ms:8.2f} ms" for label, ms in self.rows(end_to_end_ms)]

    def rows(self, end_to_end_ms: float) -> list[tuple[str, float]]:
        """(what, mean ms per query), nested as the call is, by indent: the caller's, the broker's, the sandbox's;
        ``end_to_end_ms`` is the caller's own mean."""
        broker, sandbox = self.broker, self.sandbox
        served = broker.get("rpc", 0.0)
        called = broker.get("sandbox_call", 0.0)
        ran = sandbox.get("rpc", 0.0)
        decision = broker.get("decision_record", 0.0)
        result = broker.get("result_record", 0.0)
        audited = sandbox.get("auditor", 0.0)
        checked = sandbox.get("recheck", 0.0)
        engine = sandbox.get("engine", 0.0)
        disclosure = sandbox.get("disclosure", 0.0)
        return [
            ("end to end, as the caller times it", end_to_end_ms),
            ("  the caller's hop (SDK, gRPC, TLS, messages)", end_to_end_ms - served),
            ("  the broker's handler", served),
            ("    guard (plan cache)", broker.get("guard", 0.0)),
            ("    DECISION record, durable (before the sandbox)", decision),
            ("    RESULT record (committed, flushed with the next)", result),
            ("    the sandbox call", called),
            ("      the broker-to-sandbox hop", called - ran),
            ("      the sandbox's handler", ran),
            ("        recheck (policy, token, plan)", checked),
            ("        engine", engine),
            ("        disclosure control", disclosure),
            ("          of which the released-cell auditor", audited),
            ("        the rest (execution ledger, encoding)", ran - checked - engine - disclosure),
            ("    the rest (grant, plan, interceptors, request log)", served - broker.get("guard", 0.0) - decision
             - called - result),
        ]


def breakdown(before: dict[str, Timings], after: dict[str, Timings], queries: int) -> Breakdown:
    """Mean milliseconds per query of each stage between two readings of both sides (``{"broker": ..., "sandbox":
    ...}``). A stage observed twice per query (the auditor's audit and record, the access log's two commits)
    counts both: the means are per query, not per observation."""
    sides = {}
    for side in ("broker", "sandbox"):
        means = {}
        for key, (seconds, _count) in after[side].items():
            spent = seconds - before[side].get(key, (0.0, 0.0))[0]
            name = "rpc" if key[1] == RPCS[side] else key[1]
            if key[1] in RPCS.values() and name != "rpc":
                continue
            means[name] = spent / queries * 1000
        sides[side] = means
    return Breakdown(queries, sides["broker"], sides["sandbox"])
