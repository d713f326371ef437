"""The bench on Spark (``scripts/bench --engine spark``): the end-to-end group-by through the broker and a
sandbox with engine = "spark", as a ratio to the same SQL run on a Spark session directly.

Both sides run ``local[2]`` with two shuffle partitions and the same memory (the sandbox's session in its own
process, the direct one in this one), on the bench's data as Parquet (made once from the DuckDB file, beside
it in the cache). What the guarded plan costs is reported apart: the rewritten query run directly, and the
shuffles (Exchange nodes) in each physical plan, which is what grows when the same plan runs on a cluster.

With ``cluster`` (``--spark-cluster``) both sessions run on a standalone cluster this bench starts on
127.0.0.1 instead (a master and one worker, :func:`broker.dev.spark_servers.standalone_cluster`): the same
plans, on executors of their own, each application held to two cores (``spark.cores.max``) as ``local[2]``
is, and Spark's default shuffle partitions (a cluster's sessions get no ``spark.sql.shuffle.partitions`` from
the sandbox). Either way Spark's event log is written (``spark-defaults.conf`` in ``SPARK_CONF_DIR``, which
both processes read), and where the direct session's time goes, stage by stage, is printed from it
(:mod:`broker.dev.spark_stages`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Iterator

from broker.client.sdk import BrokerClient
from broker.dev.keys import init_keys
from broker.dev.demo import CATALOG
from broker.dev.launch import development_servers, development_token
from broker.dev.spark_servers import standalone_cluster
from broker.dev.spark_stages import breakdown, event_log_of
from dsbroker.guard import guard
from dsbroker.policy.model import parse_policy
from sandbox.demo.data import DEMO_DATASETS
from sandbox.demo.parquet import export_parquet
from sandbox.engine.spark_lockdown import session_settings
from sandbox.engine.interface import EngineLimits

MASTER = "local[2]"
LIMITS = EngineLimits(memory_limit="2GB", threads=2)


def spark_bench(data: Path, *, runs: int, grant_text: str, grant: str, group_by_sql: str, plain_sql: str,
                signed_grant, cluster: bool = False) -> dict:
    """Interleaved medians of the plain SQL on Spark directly (a), the guarded SQL directly (d) and the query
    end to end (b), on ``local[2]`` or (``cluster``) a standalone cluster on this machine; prints them, the
    plans' shuffles and the direct runs' stages, and returns the figures."""
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        with _spark_defaults(scratch / "conf", scratch / "events", cluster=cluster), \
                (standalone_cluster(scratch / "cluster", cores=4, memory="6g") if cluster
                 else contextlib.nullcontext(MASTER)) as master:
            return _bench(data, scratch, master, runs=runs, grant_text=grant_text, grant=grant,
                          group_by_sql=group_by_sql, plain_sql=plain_sql, signed_grant=signed_grant)


def _bench(data: Path, scratch: Path, master: str, *, runs: int, grant_text: str, grant: str, group_by_sql: str,
           plain_sql: str, signed_grant) -> dict:
    from pyspark.sql import SparkSession

    tables = export_parquet_once(data)
    policy = parse_policy(grant_text, source=f"{grant}.yaml")
    guarded = guard(group_by_sql, policy, district="320102", department="xuanwu-fgw", engine_dialect="spark").sql
    builder = SparkSession.builder.master(master).appName("dsbroker-bench-direct")
    for key, value in session_settings(LIMITS, master).items():
        builder = builder.config(key, value)
    started = time.perf_counter()
    direct = builder.getOrCreate()
    context = direct.sparkContext
    context.setLogLevel("FATAL")
    for table, path in tables.items():
        schema, _name = table.split(".")
        direct.sql(f"CREATE DATABASE IF NOT EXISTS `{schema}`")
        direct.catalog.createTable(table, path=path, source="parquet")
    rows = direct.sql("SELECT COUNT(*) FROM tax.declarations").collect()[0][0]
    where = Path(tables['tax.declarations']).parent
    print(f"\ndata on Spark ({master}): {rows:,} declaration rows as Parquet in {where}; the direct session started "
          f"in {time.perf_counter() - started:.1f} s")
    shuffles = {name: _exchanges(direct, sql) for name, sql in (("plain", plain_sql), ("guarded", guarded))}
    layout = init_keys(scratch / "keys", clients=("bench",))
    policies = signed_grant(layout, scratch)
    settings = {"engine": "spark", "spark_master": master, "spark_tables": tables, "catalog": str(CATALOG),
                "memory_limit": LIMITS.memory_limit, "threads": LIMITS.threads}
    started = time.perf_counter()
    with development_servers(data=settings, policies=policies, state=scratch / "state", layout=layout,
                             client="bench") as (_sandbox, broker, tls), \
            BrokerClient(broker.target, tls=tls, token=development_token(
                layout, subject="bench", department="xuanwu-fgw", district="320102")) as client:
        print(f"  the sandbox and broker started in {time.perf_counter() - started:.1f} s (the Spark session "
              "most of it)")
        released = client.query(grant, group_by_sql, timeout=600)
        context.setJobDescription("warm-up")
        direct.sql(plain_sql).collect()  # warm both sides alike
        plain, rewritten, end_to_end = [], [], []
        for _ in range(runs):  # interleaved, so that load from other tenants hits all three alike
            context.setJobDescription("plain")
            plain.append(_seconds(lambda: direct.sql(plain_sql).collect()))
            context.setJobDescription("guarded")
            rewritten.append(_seconds(lambda: direct.sql(guarded).collect()))
            end_to_end.append(_seconds(lambda: client.query(grant, group_by_sql, timeout=600)))
    application = context.applicationId
    direct.stop()
    a, d, b = (statistics.median(samples) for samples in (plain, rewritten, end_to_end))
    # The released table's digest: the same on local[2] and on a cluster, since the plan is the same.
    digest = hashlib.sha256(repr(sorted(map(repr, released.rows))).encode()).hexdigest()[:16]
    print(f"group-by street, industry with SUM and COUNT(DISTINCT) ({len(released.rows)} cells released, digest "
          f"{digest}; {runs} runs, {master}):")
    print(f"  (a) plain aggregate, Spark directly    median {a * 1000:8.1f} ms   ({shuffles['plain']} shuffles)")
    print(f"  (d) guarded SQL, Spark directly        median {d * 1000:8.1f} ms   ({shuffles['guarded']} shuffles: "
          "per cell and taxpayer first, then per cell)")
    print(f"  (b) SDK -> broker -> sandbox (mTLS)    median {b * 1000:8.1f} ms")
    print(f"  ratio b/a                              {b / a:8.2f}   (target <= 1.10 at 10M rows)")
    print(f"  ratio d/a (the plan alone)             {d / a:8.2f}")
    print(f"  ratio b/d (gRPC, checks, release)      {b / d:8.2f}")
    event_log = event_log_of(scratch / "events", application)
    print("where the direct runs' time goes (Spark's event log, medians; a stage's wall time includes waiting "
          "for cores):")
    for description in ("plain", "guarded"):
        for line in breakdown(event_log, description, skip=0):
            print(line)
    return {"rows": rows, "master": master, "digest": digest, "b/a": b / a, "d/a": d / a, "a_ms": a * 1000,
            "b_ms": b * 1000, "d_ms": d * 1000, "shuffles": shuffles}


@contextlib.contextmanager
def _spark_defaults(conf: Path, events: Path, *, cluster: bool) -> Iterator[None]:
    """``SPARK_CONF_DIR`` with a ``spark-defaults.conf`` that writes the event log to ``events`` (and, on the
    cluster, holds each application to two cores), and Spark bound to loopback, for this process's session and
    the sandbox's (which inherits the environment); the environment as it was after."""
    conf.mkdir(parents=True)
    events.mkdir(parents=True)
    defaults = {"spark.eventLog.enabled": "true", "spark.eventLog.dir": events.as_uri(),
                "spark.eventLog.compress": "false", "spark.eventLog.rolling.enabled": "false",
                "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    if cluster:
        defaults["spark.cores.max"] = "2"
    (conf / "spark-defaults.conf").write_text("".join(f"{key} {value}\n" for key, value in defaults.items()),
                                              encoding="utf-8")
    saved = {name: os.environ.get(name) for name in ("SPARK_CONF_DIR", "SPARK_LOCAL_IP")}
    os.environ.update({"SPARK_CONF_DIR": str(conf), "SPARK_LOCAL_IP": "127.0.0.1"})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def export_parquet_once(data: Path) -> dict[str, str]:
    """The served tables of the DuckDB file ``data`` as Parquet beside it (``<data>.parquet/``), written once."""
    directory = data.with_name(f"{data.name}.parquet")
    expected = {table: str((directory / f"{table}.parquet").resolve()) for table in DEMO_DATASETS}
    if all(Path(path).exists() for path in expected.values()):
        return expected
    return export_parquet(data, directory, served=DEMO_DATASETS)


def _exchanges(session, sql: str) -> int:
    """The shuffles in ``sql``'s physical plan (before adaptive execution changes it)."""
    return str(session.sql(sql)._jdf.queryExecution().executedPlan().toString()).count("Exchange hashpartitioning")


def _seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started
