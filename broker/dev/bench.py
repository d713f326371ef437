"""Benchmarks: end-to-end cost against DuckDB run directly, in one process run.

Reported as ratios, never asserted: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb

from broker.dev.bench_encrypted import GROUPS, PARTITION_COUNTS, encrypted_bench
from broker.dev.bench_encrypted import report as encrypted_report
from broker.client.sdk import BrokerClient
from dsbroker.errors import DsbrokerError
from dsbroker.guard import guard
from dsbroker.guard.plan_cache import PlanCache
from broker.dev.keys import approve_for_development, init_keys
from broker.dev.launch import ServerProcess, development_servers, development_token
from broker.dev.stage_times import breakdown, metrics_options, read_timings
from dsbroker.policy.model import Dominance, Noise, parse_policy
from sandbox.demo.data import make_demo_data
from sandbox.disclosure.noise import noisy_answer
from sandbox.disclosure.release import release
from sandbox.settings import SandboxSettings

ROOT = Path(__file__).resolve().parents[2]
# The development sandbox's engine settings are its defaults; DuckDB run directly gets the same.
SANDBOX_DEFAULTS = SandboxSettings()
GRANT = "xuanwu-fgw-2026-007"
DOMINANCE_GRANT = "xuanwu-fgw-2026-007-dominance"
# The shipped grant's dominance rule (the default, written out), and what the bench grant says instead: (a) and
# (b) measure the threshold alone, as they always have; (c) and (d) measure the dominance rules on top.
SHIPPED_DOMINANCE = "dominance: {n: 2, k: 85}"
THRESHOLD_ONLY = ('dominance: off, dominance_off_reason: "the bench measures the threshold alone; the dominance '
                  'rules are measured on a grant of their own"')
GROUP_BY_SQL = ("SELECT street_code, industry_code, SUM(vat_paid) AS vat, SUM(cit_paid) AS cit, "
                "COUNT(DISTINCT taxpayer_id) AS taxpayers FROM tax.declarations GROUP BY street_code, industry_code")
# The baseline: the caller's query with only the row filter, no disclosure control, as one would run it.
PLAIN_SQL = GROUP_BY_SQL.replace(" GROUP BY", " WHERE district_code = '320102' GROUP BY")
SMALL_SQL = "SELECT COUNT(*) AS declarations FROM tax.declarations WHERE period = DATE '2025-06-01'"
# What analysts write, from the one-liner to a join with filters, HAVING and ORDER BY.
GUARD_SQL = (
    SMALL_SQL,
    GROUP_BY_SQL,
    "SELECT date_trunc('quarter', period) AS q, industry_section, AVG(revenue) AS r FROM tax.declarations "
    "WHERE period BETWEEN DATE '2024-01-01' AND DATE '2025-12-31' AND size_class IN ('small', 'micro') GROUP BY 1, 2",
    "SELECT s.street_name, i.section_name, SUM(d.vat_paid + d.cit_paid) / 100 AS tax_yuan, "
    "COUNT(DISTINCT d.taxpayer_id) AS n FROM tax.declarations d JOIN tax.streets s USING (street_code) "
    "LEFT JOIN tax.industries i ON d.industry_code = i.industry_code WHERE year(period) = 2025 "
    "GROUP BY 1, 2 HAVING tax_yuan > 1000000 ORDER BY tax_yuan DESC LIMIT 20",
)


def timed(function, runs: int) -> list[float]:
    """Seconds per call over ``runs`` calls, after one warm-up call."""
    function()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return samples


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _measure(client: BrokerClient, direct, policy, guarded, args):
    """Interleaved samples of the group-by (direct and end to end) and of the small query."""
    direct_samples, e2e_samples, end_to_end, dominance, _ = _measure_group_by(client, direct, policy, guarded, args)
    small = timed(lambda: client.query(GRANT, SMALL_SQL), args.small_runs)
    # What the sandbox's engine runs (the guard's SQL, which counts each cell's taxpayers), and the caller's SQL as
    # sent, which counts rows only: the difference is the threshold's own cost in the engine.
    small_guarded = guard(SMALL_SQL, policy, district="320102", department="xuanwu-fgw").sql
    small_direct = timed(lambda: direct.execute(small_guarded).fetchall(), args.small_runs)
    small_plain = timed(lambda: direct.execute(SMALL_SQL).fetchall(), args.small_runs)
    return direct_samples, e2e_samples, small, (small_direct, small_plain), end_to_end, dominance


def _measure_group_by(client: BrokerClient, direct, policy, guarded, args, *, guarded_direct: bool = False):
    """Interleaved samples of the group-by, directly (a) and end to end (b), then of the same with the dominance
    rules (d directly, c end to end), after checking that both ends release the same cells; with
    ``guarded_direct``, also of the guarded SQL run directly (e: what the sandbox's engine runs), interleaved
    with a and b."""
    end_to_end = client.query(GRANT, GROUP_BY_SQL, timeout=args.query_timeout)
    # The engine returns cells; the sandbox releases them (disclosure control, then the caller's outputs).
    cells = direct.execute(guarded.sql)
    direct_rows = [list(row) for row in release([d[0] for d in cells.description],
                                                [str(d[1]) for d in cells.description],
                                                cells.fetchall(), guarded).rows]
    assert sorted(map(repr, end_to_end.rows)) == sorted(map(repr, direct_rows)), "end-to-end and direct results differ"
    # Interleave the two so that load from other tenants hits both alike.
    direct_samples, e2e_samples, guarded_samples = [], [], []
    for _ in range(args.runs):
        direct_samples += timed(lambda: direct.execute(PLAIN_SQL).fetchall(), 1)
        if guarded_direct:
            guarded_samples += timed(lambda: direct.execute(guarded.sql).fetchall(), 1)
        e2e_samples += timed(lambda: client.query(GRANT, GROUP_BY_SQL, timeout=args.query_timeout), 1)
    dominance_sql = guard(GROUP_BY_SQL, dataclasses.replace(policy, dominance=Dominance(1, 85.0, 10.0)),
                          district="320102", department="xuanwu-fgw").sql
    dominance_samples, dominance_direct = [], []
    for _ in range(args.runs):
        dominance_direct += timed(lambda: direct.execute(dominance_sql).fetchall(), 1)
        dominance_samples += timed(lambda: client.query(DOMINANCE_GRANT, GROUP_BY_SQL, timeout=args.query_timeout), 1)
    return direct_samples, e2e_samples, end_to_end, (dominance_samples, dominance_direct), guarded_samples


def noise_samples(direct, policy, runs: int) -> list[float]:
    """Seconds per fresh noisy answer to the group-by: the noise mode's bounded query on DuckDB, then
    OpenDP's threshold and noise, in this process (end to end a repeat returns the stored answer)."""
    noisy = dataclasses.replace(policy, dominance=None, dominance_waiver=None, noise=Noise(  # no dominance rule
        epsilon=1.0, budget=1e9, bounds={"vat_paid": (0, 10**9), "cit_paid": (0, 10**9)}, rows_per_entity=24))
    guarded = guard(GROUP_BY_SQL, noisy, district="320102", department="xuanwu-fgw")

    def answer():
        result = direct.execute(guarded.sql)
        names = [d[0] for d in result.description]
        types = [str(d[1]) for d in result.description]
        return noisy_answer(guarded.noise, noisy.noise, noisy.min_entities, names, types, result.fetchall(),
                            max_rows=guarded.max_rows)

    return timed(answer, runs)


def guard_medians(policy, runs: int) -> tuple[float, float]:
    """Median seconds per query for the guard itself (each of GUARD_SQL in turn) and for a plan-cache hit."""
    def check(sql):
        return guard(sql, policy, district="320102", department="xuanwu-fgw")

    cache = PlanCache()
    for sql in GUARD_SQL:
        cache.get_or_build(policy, "320102", "xuanwu-fgw", sql, lambda sql=sql: check(sql))
    fresh, hits = [], []
    for _ in range(runs):
        for sql in GUARD_SQL:
            fresh += timed(lambda sql=sql: check(sql), 1)
            hits += timed(lambda sql=sql: cache.get_or_build(policy, "320102", "xuanwu-fgw", sql,
                                                             lambda: check(sql)), 1)
    return statistics.median(fresh), statistics.median(hits)


def guard_at_limits(policy) -> tuple[int, float]:
    """The slowest accepted query the guard's limits let through (as many SUMs as the node limit allows)
    and the seconds the guard takes on it: the most one caller can make the guard work per query."""
    from dsbroker.guard.parse import MAX_NODES

    outputs = MAX_NODES // 7 - 10  # SUM(vat_paid * n) AS a is 7 nodes
    sql = "SELECT street_code, " + ", ".join(f"SUM(vat_paid * {n}) AS a{n}" for n in range(outputs)) + \
        " FROM tax.declarations GROUP BY 1"
    return len(sql), min(timed(lambda: guard(sql, policy, district="320102", department="xuanwu-fgw"), 3))


class UnloggedAccessLog:
    """Takes records and keeps none: the benchmark's broker without its access log, to price the log.
    Only the benchmark builds it; ``dsbroker serve`` always writes the log."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def append(self, record, *, now=None, quota=None, synced=True) -> int:
        with self._lock:
            return next(self._seq)

    def records(self, **_ignored) -> list:
        return []

    def checkpoints(self) -> list:
        return []

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


def serve_unlogged(argv: list[str]) -> None:
    """``python -m broker.dev.bench serve-unlogged --config F --listen A --port-file P``: a broker without a log."""
    from broker.server import start_broker
    from broker.settings import BrokerSettings
    from dsbroker.settings import load_settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--port-file", required=True)
    options = parser.parse_args(argv)
    running = start_broker(load_settings(BrokerSettings, options.config, listen=options.listen),
                           access_log=UnloggedAccessLog())
    from dsbroker.garbage_collection import tune_for_serving

    tune_for_serving()  # as dsbroker serve does
    Path(options.port_file).write_text(str(running.port))
    running.wait_for_signal()


def throughput(target: str, tls, tokens: list[str], seconds: float, shed: list[int] | None = None) -> float:
    """Small queries per second over ``seconds`` with one client thread per token. Calls the servers shed
    (RESOURCE_EXHAUSTED past their ``max_concurrent_rpcs``) are not counted; with ``shed``, their number is
    appended to it (without, the first one fails the run)."""
    stop = threading.Event()
    counts = [0] * len(tokens)
    refused = [0] * len(tokens)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(tokens) + 1)

    def client(i: int) -> None:
        try:
            with BrokerClient(target, tls=tls, token=tokens[i]) as c:
                c.query(GRANT, SMALL_SQL)  # connect and warm up outside the window
                barrier.wait()
                while not stop.is_set():
                    try:
                        c.query(GRANT, SMALL_SQL)
                    except DsbrokerError as error:
                        if shed is None or error.code_name != "RESOURCE_EXHAUSTED":
                            raise
                        refused[i] += 1
                        continue
                    counts[i] += 1
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)
            barrier.abort()
            stop.set()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(tokens))]
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    started = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"a benchmark client failed: {errors[0]!r}")
    if shed is not None:
        shed.append(sum(refused))
    return sum(counts) / (time.perf_counter() - started)


def log_cost(data: Path, policies: Path, layout, scratch: Path, args, *,
             scaling: list[int] = ()) -> tuple[list[float], list[float], dict]:
    """Throughput of ``args.clients`` clients' small queries with the access log on and off, in alternating
    rounds; then, with the log on, the throughput at each client count in ``scaling`` (one round each)."""
    tokens = [development_token(layout, subject=f"bench-{i}", department="xuanwu-fgw", district="320102")
              for i in range(max([args.clients, *scaling]))]
    on, off = [], []
    state = scratch / "state-log"
    with development_servers(data=data, policies=policies, state=state, layout=layout, client="bench",
                             token_binding="none") as (_sandbox, broker, tls), \
            ServerProcess(["serve-unlogged", "--config", str(state / "broker.toml")], module="broker.dev.bench",
                          name="broker-unlogged", tls=tls, log_path=state / "broker-unlogged.log") as unlogged:
        cpu = {"on": [0.0, 0], "off": [0.0, 0]}
        for _ in range(args.log_rounds):
            for name, server, rates in (("on", broker, on), ("off", unlogged, off)):
                before = cpu_seconds(server.process.pid)
                rates.append(throughput(server.target, tls, tokens[:args.clients], args.log_seconds))
                cpu[name][0] += cpu_seconds(server.process.pid) - before
                cpu[name][1] += rates[-1] * args.log_seconds
        shed: list[int] = []
        by_clients = {clients: throughput(broker.target, tls, tokens[:clients], args.log_seconds, shed)
                      for clients in scaling}
        broker.stop()
    from broker.access_log.log import AccessLog
    from dsbroker.records.checkpoints import load_public_key
    from broker.audit.verify import verify_log

    log = AccessLog(state / "access-log.sqlite")
    report = verify_log(log.store, public_keys=[load_public_key(state / "access-log.pub")])
    log.close()
    return on, off, {"records": report.records, "checkpoints": report.checkpoints, "intact": report.intact,
                     "cpu_ms_on": cpu["on"][0] / cpu["on"][1] * 1000,
                     "cpu_ms_off": cpu["off"][0] / cpu["off"][1] * 1000, "scaling": by_clients,
                     "shed": dict(zip(scaling, shed, strict=True))}


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds process ``pid`` has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


QUICK = {"runs": 8, "small_runs": 100, "guard_runs": 40, "log_rounds": 2, "log_seconds": 1.0, "encrypted_runs": 5,
         "sizes": "50000"}
# Taxpayers for the two sizes the targets name: about 1.15M and 10.3M declaration rows.
SIZES = "50000,450000"
# Sizes by their declaration rows (about 23 a taxpayer), for --sizes: 100m is the scale target's.
NAMED_SIZES = {"1m": 50_000, "10m": 450_000, "100m": 4_370_000}
SCALING_CLIENTS = "1,4,16,64"


def main() -> None:
    if sys.argv[1:2] == ["serve-unlogged"]:
        serve_unlogged(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default=None,
                        help=f"taxpayers in each size of bench data, comma-separated, or a size by its rows: "
                             f"{', '.join(f'{name} ({n:,} taxpayers)' for name, n in NAMED_SIZES.items())} "
                             f"(default {SIZES}: about 1.15M and 10.3M declaration rows; each made once and cached)")
    parser.add_argument("--taxpayers", type=int, default=None, help="one size only (the same as --sizes N)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer runs and the small size only, for development (figures spread wider)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs of the group-by query")
    parser.add_argument("--small-runs", type=int, default=300, help="timed runs of the small query")
    parser.add_argument("--guard-runs", type=int, default=300, help="timed runs of each guard query")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients for the access log's cost")
    parser.add_argument("--scaling", default=SCALING_CLIENTS,
                        help=f"client counts of the throughput scaling row (default {SCALING_CLIENTS})")
    parser.add_argument("--log-rounds", type=int, default=8, help="alternating rounds with the log on and off")
    parser.add_argument("--log-seconds", type=float, default=2.0, help="seconds per round")
    parser.add_argument("--encrypted-runs", type=int, default=20, help="timed runs of each encrypted-mode query")
    parser.add_argument("--only", choices=("encrypted", "log", "audit", "group-by"),
                        help="run one part of the benchmark only (group-by: the group-by's rows a to d at each "
                             "size, with the servers' peak RSS, for sizes where the whole bench takes too long)")
    parser.add_argument("--audit", choices=("on", "off"), default="on",
                        help="--only group-by: the sandbox's released-cell auditor (on, as served; off prices it)")
    parser.add_argument("--query-timeout", type=float, default=600.0,
                        help="the group-by's deadline end to end, in seconds (the sandbox's max_execution_seconds "
                             "caps it)")
    parser.add_argument("--cache-dir", default=str(ROOT / ".cache" / "bench"))
    parser.add_argument("--engine", choices=("duckdb", "spark", "postgres"), default="duckdb",
                        help="spark or postgres: the end-to-end group-by on a sandbox with that engine, against the "
                             "same engine directly")
    parser.add_argument("--spark-cluster", action="store_true",
                        help="--engine spark: run both Spark sessions on a standalone cluster (a master and one "
                             "worker) the bench starts on 127.0.0.1, instead of local[2]")
    parser.add_argument("--postgres-dsn", default=os.environ.get("DSBROKER_BENCH_POSTGRES",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="--engine postgres: a superuser's connection to the server the data is copied to "
                             "(env DSBROKER_BENCH_POSTGRES)")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            if parser.get_default(name) == getattr(args, name):
                setattr(args, name, value)
    sizes = [args.taxpayers] if args.taxpayers else [taxpayers_of(n) for n in (args.sizes or SIZES).split(",")]
    scaling = [int(n) for n in args.scaling.split(",") if n]
    if args.only == "encrypted":
        with tempfile.TemporaryDirectory() as scratch:
            layout = init_keys(Path(scratch) / "keys", clients=("bench",))
            encrypted_report(encrypted_bench(ROOT, Path(scratch), layout, Path(args.cache_dir), args.encrypted_runs))
        return

    datas = [bench_data(Path(args.cache_dir), taxpayers) for taxpayers in sizes]
    if args.engine != "duckdb":
        other_engine_bench(args, datas)
        return
    if args.only == "audit":
        audit_report(datas[0])
        return
    if args.only == "log":
        with tempfile.TemporaryDirectory() as scratch:
            layout = init_keys(Path(scratch) / "keys", clients=("bench",))
            log_report(*log_cost(datas[0], signed_grant(layout, Path(scratch)), layout, Path(scratch), args,
                                 scaling=scaling), args)
        return
    by_size: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch_root:
        for index, data in enumerate(datas):
            scratch = Path(scratch_root) / f"size-{index}"
            scratch.mkdir()
            layout = init_keys(scratch / "keys", clients=("bench",))
            if args.only == "group-by":
                by_size.append(group_by_report(data, layout, scratch, args))
            else:
                by_size.append(size_report(data, layout, scratch, args, first=index == 0, scaling=scaling))
    summary(by_size)


def taxpayers_of(size: str) -> int:
    """A --sizes entry as taxpayers: a number of them, or a size named by its rows (NAMED_SIZES)."""
    if size.strip().lower() in NAMED_SIZES:
        return NAMED_SIZES[size.strip().lower()]
    try:
        return int(size)
    except ValueError:
        raise SystemExit(f"--sizes: {size!r} is neither a number of taxpayers nor one of "
                         f"{', '.join(NAMED_SIZES)}") from None


def other_engine_bench(args, datas: list[Path]) -> None:
    """``--engine spark`` or ``postgres``: the end-to-end group-by on a sandbox with that engine, per size."""
    common = dict(runs=args.runs, grant_text=bench_grant_text(), grant=GRANT, group_by_sql=GROUP_BY_SQL,
                  plain_sql=PLAIN_SQL, signed_grant=signed_grant)
    for data in datas:
        if args.engine == "postgres":
            from broker.dev.bench_postgres import postgres_bench

            postgres_bench(data, admin_dsn=args.postgres_dsn, **common)
        else:
            from broker.dev.bench_spark import spark_bench

            spark_bench(data, cluster=args.spark_cluster, **common)


def bench_data(cache: Path, taxpayers: int) -> Path:
    """The bench's DuckDB file for ``taxpayers`` (about 23 declarations each), made once under ``cache``."""
    data = cache / f"bench-{taxpayers}.duckdb"
    if not data.exists():
        cache.mkdir(parents=True, exist_ok=True)
        make_demo_data(data, taxpayers=taxpayers, progress=print)
    return data


def direct_connection(data: Path):
    """DuckDB on ``data`` as the sandbox runs it: read-only, the sandbox's default threads and memory limit."""
    direct = duckdb.connect(str(data), read_only=True)
    direct.execute(f"SET threads = {SANDBOX_DEFAULTS.threads}")  # so both sides get the same engine
    direct.execute(f"SET memory_limit = '{SANDBOX_DEFAULTS.memory_limit}'")
    return direct


def group_by_report(data: Path, layout, scratch: Path, args) -> dict:
    """``--only group-by``: the group-by's rows (a) to (d) on one size of data, with the guarded SQL run directly
    (e), the time the size took and the servers' peak RSS; returns the summary's figures. Medians, and the
    fastest run of each, which the other tenants of a shared machine slow least."""
    started = time.perf_counter()
    direct = direct_connection(data)
    rows = direct.execute("SELECT count(*) FROM tax.declarations").fetchone()[0]
    auditor = "on" if args.audit == "on" else "off (--audit off)"
    print(f"\ndata: {data} ({rows:,} declaration rows; the sandbox's memory_limit {SANDBOX_DEFAULTS.memory_limit}, "
          f"threads {SANDBOX_DEFAULTS.threads}, as DuckDB's run directly; the released-cell auditor {auditor})")
    policy = parse_policy(bench_grant_text(), source=f"{GRANT}.yaml")
    guarded = guard(GROUP_BY_SQL, policy, district="320102", department="xuanwu-fgw")
    policies = signed_grant(layout, scratch)
    write_dominance_grant(layout, policies)
    with development_servers(data=data, policies=policies, state=scratch / "state", layout=layout, client="bench",
                             sandbox_options={"audit_released_cells": args.audit == "on"}) as (sandbox, broker, tls), \
            BrokerClient(broker.target, tls=tls, token=development_token(
                layout, subject="bench", department="xuanwu-fgw", district="320102")) as client:
        samples = _measure_group_by(client, direct, policy, guarded, args, guarded_direct=True)
        peak_mb = {"broker": peak_rss_mb(broker.process.pid), "sandbox": peak_rss_mb(sandbox.process.pid)}
    direct.close()
    direct_samples, e2e_samples, end_to_end, (dominance_samples, dominance_direct), guarded_samples = samples
    print(f"group-by street, industry with SUM and COUNT(DISTINCT) ({len(end_to_end.rows)} cells released, "
          f"{args.runs} runs each, a, e and b interleaved, then d and c):")
    rows_shown = (("(a) plain aggregate, DuckDB directly", direct_samples),
                  ("(e) the guarded SQL, DuckDB directly", guarded_samples),
                  ("(b) SDK -> broker -> sandbox (mTLS)", e2e_samples),
                  ("(d) with the dominance rules, directly", dominance_direct),
                  ("(c) the same end to end", dominance_samples))
    for label, samples_of in rows_shown:
        print(f"  {label:<39}median {statistics.median(samples_of) * 1000:6.0f} ms   fastest "
              f"{min(samples_of) * 1000:6.0f} ms   runs: " + ", ".join(f"{t * 1000:.0f}" for t in samples_of))
    a, b, e = (statistics.median(x) for x in (direct_samples, e2e_samples, guarded_samples))
    c, d = statistics.median(dominance_samples), statistics.median(dominance_direct)
    fastest = {name: min(x) for name, x in (("a", direct_samples), ("b", e2e_samples), ("c", dominance_samples),
                                            ("d", dominance_direct), ("e", guarded_samples))}
    print("  ratios of the medians (of the fastest)  " + ", ".join(
        f"{name} {top / bottom:.2f} ({fastest[name[0]] / fastest[name[2]]:.2f})"
        for name, top, bottom in (("b/a", b, a), ("e/a", e, a), ("b/e", b, e), ("c/a", c, a), ("d/a", d, a))))
    print("  peak RSS " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in peak_mb.items())
          + f"; this size took {time.perf_counter() - started:.0f} s")
    return {"rows": rows, "b/a": b / a, "c/a": c / a, "d/a": d / a, "peak_mb": peak_mb}


def write_dominance_grant(layout, policies: Path) -> None:
    """The bench's grant with the dominance rules, signed into ``policies``: what disclosure control adds."""
    text = (ROOT / "policies" / f"{GRANT}.yaml").read_text(encoding="utf-8")
    dominant = text.replace(f"id: {GRANT}", f"id: {DOMINANCE_GRANT}").replace(
        SHIPPED_DOMINANCE, "dominance: {n: 1, k: 85}, p_percent: 10")
    (policies / f"{DOMINANCE_GRANT}.yaml").write_text(approve_for_development(layout, dominant))


def size_report(data: Path, layout, scratch: Path, args, *, first: bool, scaling: list[int]) -> dict:
    """Every figure on one size of data, printed as it comes; returns the summary's figures. The parts whose
    data is their own (the access log's throughput, encryption, the auditor) run on the ``first`` size only."""
    direct = direct_connection(data)
    rows = direct.execute("SELECT count(*) FROM tax.declarations").fetchone()[0]
    print(f"\ndata: {data} ({rows:,} declaration rows)")
    figures: dict = {"rows": rows}

    policy = parse_policy(bench_grant_text(), source=f"{GRANT}.yaml")
    guarded = guard(GROUP_BY_SQL, policy, district="320102", department="xuanwu-fgw")
    guard_fresh, guard_hit = guard_medians(policy, args.guard_runs)
    limit_bytes, limit_seconds = guard_at_limits(policy)
    noise = noise_samples(direct, policy, args.runs)

    policies = signed_grant(layout, scratch)
    write_dominance_grant(layout, policies)
    metrics = metrics_options()
    with development_servers(data=data, policies=policies, state=scratch / "state", layout=layout,
                             client="bench", sandbox_options=metrics["sandbox"],
                             broker_options=metrics["broker"]) as (sandbox, broker, tls), \
            BrokerClient(broker.target, tls=tls, token=development_token(
                layout, subject="bench", department="xuanwu-fgw", district="320102")) as client:
        samples = _measure(client, direct, policy, guarded, args)
        processes = {"broker": broker.process.pid, "sandbox": sandbox.process.pid}
        before = {name: cpu_seconds(pid) for name, pid in processes.items()}
        timings = {side: read_timings(metrics[side]["metrics_listen"]) for side in metrics}
        per_query = timed(lambda: client.query(GRANT, SMALL_SQL), args.small_runs)
        cpu_ms = {name: (cpu_seconds(pid) - before[name]) / (len(per_query) + 1) * 1000
                  for name, pid in processes.items()}
        small_stages = breakdown(timings, {side: read_timings(metrics[side]["metrics_listen"]) for side in metrics},
                                 len(per_query) + 1)
        timings = {side: read_timings(metrics[side]["metrics_listen"]) for side in metrics}
        group_by = timed(lambda: client.query(GRANT, GROUP_BY_SQL, timeout=args.query_timeout), args.runs)
        group_by_stages = breakdown(timings, {side: read_timings(metrics[side]["metrics_listen"])
                                              for side in metrics}, len(group_by) + 1)
        peak_mb = {name: peak_rss_mb(pid) for name, pid in processes.items()}
    direct.close()
    (direct_samples, e2e_samples, small, (small_direct, small_plain), end_to_end,
     (dominance_samples, dominance_direct)) = samples

    a, b = statistics.median(direct_samples), statistics.median(e2e_samples)
    print(f"group-by street, industry with SUM and COUNT(DISTINCT) ({len(end_to_end.rows)} cells released):")
    print(f"  (a) plain aggregate, DuckDB directly   median {a * 1000:8.2f} ms   "
          "(the caller's SQL and row filter only)")
    print(f"  (b) SDK -> broker -> sandbox (mTLS)    median {b * 1000:8.2f} ms")
    print(f"  ratio b/a                              {b / a:8.2f}")
    c, d = statistics.median(dominance_samples), statistics.median(dominance_direct)
    print("with the dominance rules ((1, 85) and p% = 10), which aggregate per cell and taxpayer first:")
    print(f"  (d) rewritten query, DuckDB directly   median {d * 1000:8.2f} ms")
    print(f"  (c) SDK -> broker -> sandbox (mTLS)    median {c * 1000:8.2f} ms")
    print(f"  ratio d/a (disclosure control alone)   {d / a:8.2f}")
    print(f"  ratio c/a (all of it, end to end)      {c / a:8.2f}")
    n = statistics.median(noise)
    print("with noise (OpenDP: bounded contributions, a noisy threshold, discrete Laplace on each measure):")
    print(f"  (n) bounded query + noise, in process  median {n * 1000:8.2f} ms")
    print(f"  ratio n/a (disclosure control alone)   {n / a:8.2f}   (a repeat is a stored answer)")
    small_p50 = percentile(small, 50)
    print(f"small query end to end ({args.small_runs} runs): p50 {small_p50 * 1000:.2f} ms, "
          f"p99 {percentile(small, 99) * 1000:.2f} ms (DuckDB directly: the guarded SQL p50 "
          f"{percentile(small_direct, 50) * 1000:.2f} ms, the caller's SQL as sent "
          f"{percentile(small_plain, 50) * 1000:.2f} ms)")
    print("  CPU per small query                    " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in cpu_ms.items())
          + "   peak RSS " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in peak_mb.items()))
    print(f"  where the time goes (means of {small_stages.queries} calls, from the servers' stage metrics):")
    print("\n".join(small_stages.lines(statistics.mean(per_query) * 1000)))
    print(f"the group-by end to end, where the time goes (means of {group_by_stages.queries} calls):")
    print("\n".join(group_by_stages.lines(statistics.mean(group_by) * 1000)))
    print(f"guard over {len(GUARD_SQL)} typical queries ({args.guard_runs} runs each):")
    print(f"  without the plan cache                 median {guard_fresh * 1000:8.3f} ms   (target < 1.5)")
    print(f"  plan-cache hit                         median {guard_hit * 1000:8.3f} ms   (target < 0.1)")
    # The broker and the sandbox each guard a query (the sandbox checks again), so a new query pays twice.
    print(f"  share of end-to-end, new query         {2 * guard_fresh / small_p50 * 100:7.1f}% of the small query, "
          f"{2 * guard_fresh / b * 100:.1f}% of the group-by")
    print(f"  share of end-to-end, repeated query    {2 * guard_hit / small_p50 * 100:7.2f}% of the small query")
    print(f"  the largest query its limits accept    {limit_seconds * 1000:8.1f} ms   ({limit_bytes:,} bytes; "
          "linear in the size of the query)")
    figures.update({"b/a": b / a, "c/a": c / a, "d/a": d / a, "n/a": n / a, "small_p50_ms": small_p50 * 1000,
                    "small_direct_ms": percentile(small_direct, 50) * 1000,
                    "small_plain_ms": percentile(small_plain, 50) * 1000, "cpu_ms": cpu_ms, "peak_mb": peak_mb})
    if first:
        logged, unlogged, log_figures = log_cost(data, policies, layout, scratch, args, scaling=scaling)
        log_report(logged, unlogged, log_figures, args)
        encrypted = encrypted_bench(ROOT, scratch, layout, Path(args.cache_dir), args.encrypted_runs)
        encrypted_report(encrypted)
        audit = audit_report(data)
        medians = encrypted["medians"]
        on, off = statistics.median(logged), statistics.median(unlogged)
        figures.update({"throughput": on, "log_cost": 1 - on / off, "scaling": log_figures["scaling"],
                        "secure_sum_added_ms": (medians[f"partitions-{max(PARTITION_COUNTS)}"]
                                                - medians[f"encrypted-{GROUPS}"]) * 1000,
                        "audit_median_ms": statistics.median(audit) * 1000,
                        "audit_p99_ms": percentile(audit, 99) * 1000})
    return figures


def peak_rss_mb(pid: int) -> float:
    """The peak resident set of process ``pid`` so far, in MB (Linux /proc: VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# The table: (what, key in a size's figures, target, whether the figure must be at most the target,
# format). Rows whose data is their own are measured on the first size only.
TARGETS = (
    ("end to end / plain aggregate run directly", "b/a", 1.05, "{:.2f}"),
    ("the same with the dominance rules", "c/a", 1.15, "{:.2f}"),
    ("the dominance rules' disclosure control alone", "d/a", None, "{:.2f}"),
    ("noise mode's disclosure control alone", "n/a", 1.2, "{:.2f}"),
    ("small query p50, end to end (ms)", "small_p50_ms", 3.0, "{:.2f}"),
    ("  the same query's guarded SQL, DuckDB directly (ms)", "small_direct_ms", None, "{:.2f}"),
    ("  the caller's SQL as sent, DuckDB directly (ms)", "small_plain_ms", None, "{:.2f}"),
    ("--clients clients (16) of the small query, log on (q/s)", "throughput", -1000.0, "{:.0f}"),
    ("cost of the access log under those clients", "log_cost", 0.05, "{:.1%}"),
    (f"secure sum over {max(PARTITION_COUNTS)} partitions, added to one sandbox (ms)", "secure_sum_added_ms", 60.0,
     "{:.0f}"),
    ("released-cell auditor, added per query, median (ms)", "audit_median_ms", 10.0, "{:.1f}"),
    ("released-cell auditor, added per query, p99 (ms)", "audit_p99_ms", 50.0, "{:.1f}"),
)


def summary(by_size: list[dict]) -> None:
    """The issue's table: each row at each size, against its target (a negative target: at least that much)."""
    heads = [f"{figures['rows'] / 1e6:.2f}M rows" for figures in by_size]
    print("\nsummary (one run; these machines are shared, so compare ratios within a run):")
    print(f"  {'measure':<66}" + "".join(f"{head:>14}" for head in heads) + f"{'target':>10}  met")
    for label, key, target, shape in TARGETS:
        values = [figures.get(key) for figures in by_size]
        measured = [v for v in values if v is not None]
        if not measured:  # a part this run left out (--only group-by)
            continue
        cells = "".join(f"{shape.format(v) if v is not None else '':>14}" for v in values)
        if target is None:
            print(f"  {label:<66}{cells}")
            continue
        # The target names the large size where it names a size at all: judge on the last size measured.
        met = (measured[-1] >= -target) if target < 0 else (measured[-1] <= target)
        bound = f">= {shape.format(-target)}" if target < 0 else f"<= {shape.format(target)}"
        print(f"  {label:<66}{cells}{bound:>10}  {'yes' if met else 'NO'}")
    scaling = by_size[0].get("scaling")
    if scaling:
        print("  small query throughput by clients, log on (q/s)                   "
              + ", ".join(f"{clients}: {rate:.0f}" for clients, rate in scaling.items()))
    for figures in by_size:
        cpu = figures.get("cpu_ms")
        print(f"  at {figures['rows'] / 1e6:.2f}M rows, "
              + ("CPU per small query: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in cpu.items()) + "; "
                 if cpu else "")
              + "peak RSS " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in figures["peak_mb"].items()))


def audit_report(data: Path) -> list[float]:
    """The released-cell auditor's row: its added time per query as the ledger grows (broker.dev.bench_audit);
    returns the seconds of each audit."""
    from broker.dev.bench_audit import audit_figures
    from dsbroker.garbage_collection import tune_for_serving

    tune_for_serving()  # as the sandbox's process does
    figures = audit_figures(data)
    times = figures.seconds
    print(f"released-cell auditor, {len(times)} queries of a district's monthly tables ({figures.cells:,} cells "
          f"released, {figures.withheld} withheld by it):")
    print(f"  added per query                        median {statistics.median(times) * 1000:8.1f} ms   "
          f"(target < 10)")
    print(f"  added per query                        p99    {percentile(times, 99) * 1000:8.1f} ms   (target < 50)")
    print(f"  the last query, with every cell before {times[-1] * 1000:8.1f} ms")
    return times


def bench_grant_text() -> str:
    """The shipped grant with its dominance rule off (:data:`THRESHOLD_ONLY`)."""
    text = (ROOT / "policies" / f"{GRANT}.yaml").read_text(encoding="utf-8")
    if SHIPPED_DOMINANCE not in text:
        raise SystemExit(f"the shipped grant no longer holds {SHIPPED_DOMINANCE!r}; update the bench")
    return text.replace(SHIPPED_DOMINANCE, THRESHOLD_ONLY)


def signed_grant(layout, scratch: Path) -> Path:
    """A policies directory under ``scratch`` holding the bench's grant, signed with ``layout``'s keys."""
    policies = scratch / "policies"
    policies.mkdir()
    (policies / f"{GRANT}.yaml").write_text(approve_for_development(layout, bench_grant_text()))
    return policies


def log_report(logged: list[float], unlogged: list[float], figures: dict, args) -> None:
    """Print the access log's cost under concurrent clients."""
    on, off = statistics.median(logged), statistics.median(unlogged)
    print(f"access log, {args.clients} concurrent clients of the small query ({args.log_rounds} alternating rounds of "
          f"{args.log_seconds:g} s):")
    print(f"  log off (broker without its log)       median {off:8.1f} queries/s   rounds: "
          + ", ".join(f"{q:.0f}" for q in unlogged))
    print(f"  log on (decision + result, group commit) median {on:6.1f} queries/s   rounds: "
          + ", ".join(f"{q:.0f}" for q in logged))
    print(f"  cost of the log                        {(1 - on / off) * 100:7.1f}%   (target < 5%)")
    print(f"  broker CPU per query                   {figures['cpu_ms_on']:.2f} ms with the log, "
          f"{figures['cpu_ms_off']:.2f} ms without")
    if figures["scaling"]:
        print("  throughput by clients, log on          " + ", ".join(
            f"{clients}: {rate:.0f} q/s" + (f" ({figures['shed'][clients]} shed)" if figures["shed"][clients] else "")
            for clients, rate in figures["scaling"].items()))
        print("  (shed: calls past a server's max_concurrent_rpcs, answered RESOURCE_EXHAUSTED at once)")
    print(f"  the log afterwards: {figures['records']:,} records, {figures['checkpoints']} signed checkpoints, "
          f"{'verifies' if figures['intact'] else 'DOES NOT VERIFY'}")


if __name__ == "__main__":
    main()
