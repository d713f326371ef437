"""The bench on Spark (``scripts/bench --engine spark``): the end-to-end group-by through the broker and a
sandbox with engine = "spark", as a ratio to the same SQL run on a Spark session directly.

Both sides run ``local[2]`` with two shuffle partitions and the same memory (the sandbox's session in its own
process, the direct one in this one), on the bench's data as Parquet (made once from the DuckDB file, beside
it in the cache). What the guarded plan costs is reported apart: the rewritten query run directly, and the
shuffles (Exchange nodes) in each physical plan, which is what grows when the same plan runs on a cluster.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from broker.client.sdk import BrokerClient
from broker.dev.keys import init_keys
from broker.dev.demo import CATALOG
from broker.dev.launch import development_servers, development_token
from dsbroker.guard import guard
from dsbroker.policy.model import parse_policy
from sandbox.demo.data import DEMO_DATASETS
from sandbox.demo.parquet import export_parquet
from sandbox.engine.spark_lockdown import session_settings
from sandbox.engine.interface import EngineLimits

MASTER = "local[2]"
LIMITS = EngineLimits(memory_limit="2GB", threads=2)


def spark_bench(data: Path, *, runs: int, grant_text: str, grant: str, group_by_sql: str, plain_sql: str,
                signed_grant) -> dict:
    """Interleaved medians of the plain SQL on Spark directly (a), the guarded SQL directly (d) and the query
    end to end (b); prints them and the plans' shuffles, and returns the figures."""
    from pyspark.sql import SparkSession

    tables = export_parquet_once(data)
    policy = parse_policy(grant_text, source=f"{grant}.yaml")
    guarded = guard(group_by_sql, policy, district="320102", department="xuanwu-fgw", engine_dialect="spark").sql
    builder = SparkSession.builder.master(MASTER).appName("dsbroker-bench-direct")
    for key, value in session_settings(LIMITS, MASTER).items():
        builder = builder.config(key, value)
    direct = builder.getOrCreate()
    direct.sparkContext.setLogLevel("FATAL")
    for table, path in tables.items():
        schema, _name = table.split(".")
        direct.sql(f"CREATE DATABASE IF NOT EXISTS `{schema}`")
        direct.catalog.createTable(table, path=path, source="parquet")
    rows = direct.sql("SELECT COUNT(*) FROM tax.declarations").collect()[0][0]
    where = Path(tables['tax.declarations']).parent
    print(f"\ndata on Spark ({MASTER}): {rows:,} declaration rows as Parquet in {where}")
    shuffles = {name: _exchanges(direct, sql) for name, sql in (("plain", plain_sql), ("guarded", guarded))}
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        layout = init_keys(scratch / "keys", clients=("bench",))
        policies = signed_grant(layout, scratch)
        settings = {"engine": "spark", "spark_master": MASTER, "spark_tables": tables, "catalog": str(CATALOG),
                    "memory_limit": LIMITS.memory_limit, "threads": LIMITS.threads}
        started = time.perf_counter()
        with development_servers(data=settings, policies=policies, state=scratch / "state", layout=layout,
                                 client="bench") as (_sandbox, broker, tls), \
                BrokerClient(broker.target, tls=tls, token=development_token(
                    layout, subject="bench", department="xuanwu-fgw", district="320102")) as client:
            print(f"  the sandbox and broker started in {time.perf_counter() - started:.1f} s (the Spark session "
                  "most of it)")
            released = client.query(grant, group_by_sql, timeout=600)
            direct.sql(plain_sql).collect()  # warm both sides alike
            plain, rewritten, end_to_end = [], [], []
            for _ in range(runs):  # interleaved, so that load from other tenants hits all three alike
                plain.append(_seconds(lambda: direct.sql(plain_sql).collect()))
                rewritten.append(_seconds(lambda: direct.sql(guarded).collect()))
                end_to_end.append(_seconds(lambda: client.query(grant, group_by_sql, timeout=600)))
    direct.stop()
    a, d, b = (statistics.median(samples) for samples in (plain, rewritten, end_to_end))
    print(f"group-by street, industry with SUM and COUNT(DISTINCT) ({len(released.rows)} cells released, {runs} runs):")
    print(f"  (a) plain aggregate, Spark directly    median {a * 1000:8.1f} ms   ({shuffles['plain']} shuffles)")
    print(f"  (d) guarded SQL, Spark directly        median {d * 1000:8.1f} ms   ({shuffles['guarded']} shuffles: "
          "per cell and taxpayer first, then per cell)")
    print(f"  (b) SDK -> broker -> sandbox (mTLS)    median {b * 1000:8.1f} ms")
    print(f"  ratio b/a                              {b / a:8.2f}   (target <= 1.10 at 10M rows)")
    print(f"  ratio d/a (the plan alone)             {d / a:8.2f}")
    print(f"  ratio b/d (gRPC, checks, release)      {b / d:8.2f}")
    return {"rows": rows, "b/a": b / a, "d/a": d / a, "a_ms": a * 1000, "b_ms": b * 1000, "d_ms": d * 1000,
            "shuffles": shuffles}


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
