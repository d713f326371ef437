"""The bench on PostgreSQL (``scripts/bench --engine postgres``): the end-to-end group-by through the broker and a
sandbox with engine = "postgres", as a ratio to the same SQL run on the same server directly.

The bench's data is copied once into a database of its own on the server ``--postgres-dsn`` names (a superuser's,
as ``dsbroker data make --into`` needs: ``dsbroker_bench_<rows>``, with the sandbox's read-only role made for it)
and analysed, with the planner statistics an owner gives the sandbox's plans
(:mod:`sandbox.engine.postgres_statistics`); a database whose declarations hold as many rows as the DuckDB file is
reused (and given those statistics if it lacks them). Both sides connect
as that role, so the server's settings for it (``temp_file_limit``) hold for both, and the direct session gets
the sandbox's ``work_mem`` (its other session settings, a statement timeout and read only, cost nothing).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import psycopg
import sqlglot

from broker.client.sdk import BrokerClient
from broker.dev.demo import CATALOG
from broker.dev.keys import init_keys
from broker.dev.launch import development_servers, development_token
from dsbroker.guard import guard
from dsbroker.policy.model import parse_policy
from sandbox.demo.data import DEMO_DATASETS
from sandbox.demo.postgres import give_planner_statistics, load_into_postgres
from sandbox.engine.postgres_lockdown import WORK_MEM

ROLE = "dsbroker_bench_sandbox"


def postgres_bench(data: Path, *, runs: int, admin_dsn: str, grant_text: str, grant: str, group_by_sql: str,
                   plain_sql: str, signed_grant) -> dict:
    """Interleaved medians of the plain SQL on PostgreSQL directly (a), the guarded SQL directly (d) and the query
    end to end (b); prints them and returns the figures."""
    database = loaded_once(data, admin_dsn)
    dsn = f"{_server(admin_dsn)} dbname={database} user={ROLE}"
    policy = parse_policy(grant_text, source=f"{grant}.yaml")
    guarded = guard(group_by_sql, policy, district="320102", department="xuanwu-fgw", engine_dialect="postgres").sql
    plain = sqlglot.transpile(plain_sql, read="duckdb", write="postgres")[0]
    with psycopg.connect(dsn, autocommit=True) as direct:
        direct.execute(f"SET work_mem = '{WORK_MEM}'")  # what the sandbox's sessions get: the same engine both sides
        rows = direct.execute("SELECT COUNT(*) FROM tax.declarations").fetchone()[0]
        print(f"\ndata on PostgreSQL ({direct.info.server_version}): {rows:,} declaration rows in {database}")
        with tempfile.TemporaryDirectory() as scratch_dir:
            scratch = Path(scratch_dir)
            layout = init_keys(scratch / "keys", clients=("bench",))
            policies = signed_grant(layout, scratch)
            settings = {"engine": "postgres", "postgres_dsn": dsn, "catalog": str(CATALOG)}
            with development_servers(data=settings, policies=policies, state=scratch / "state", layout=layout,
                                     client="bench") as (_sandbox, broker, tls), \
                    BrokerClient(broker.target, tls=tls, token=development_token(
                        layout, subject="bench", department="xuanwu-fgw", district="320102")) as client:
                released = client.query(grant, group_by_sql, timeout=600)
                direct.execute(plain).fetchall()  # warm the server's cache for both sides alike
                a_samples, d_samples, b_samples = [], [], []
                for _ in range(runs):  # interleaved, so that load from other tenants hits all three alike
                    a_samples.append(_seconds(lambda: direct.execute(plain).fetchall()))
                    d_samples.append(_seconds(lambda: direct.execute(guarded).fetchall()))
                    b_samples.append(_seconds(lambda: client.query(grant, group_by_sql, timeout=600)))
    a, d, b = (statistics.median(samples) for samples in (a_samples, d_samples, b_samples))
    print(f"group-by street, industry with SUM and COUNT(DISTINCT) ({len(released.rows)} cells released, {runs} runs):")
    print(f"  (a) plain aggregate, PostgreSQL directly   median {a * 1000:8.1f} ms")
    print(f"  (d) guarded SQL, PostgreSQL directly       median {d * 1000:8.1f} ms   (per cell and taxpayer first)")
    print(f"  (b) SDK -> broker -> sandbox (mTLS)        median {b * 1000:8.1f} ms")
    print(f"  ratio b/a                                  {b / a:8.2f}   (target <= 1.15 at 10M rows)")
    print(f"  ratio d/a (the plan alone)                 {d / a:8.2f}")
    print(f"  ratio b/d (gRPC, checks, release)          {b / d:8.2f}")
    return {"rows": rows, "b/a": b / a, "d/a": d / a, "a_ms": a * 1000, "b_ms": b * 1000, "d_ms": d * 1000}


def loaded_once(data: Path, admin_dsn: str) -> str:
    """The database holding the bench's data ``data`` (a DuckDB file), copied and analysed the first time."""
    with duckdb.connect(str(data), read_only=True) as local:
        rows = local.execute("SELECT COUNT(*) FROM tax.declarations").fetchone()[0]
    database = f"dsbroker_bench_{rows}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone() is None:
            admin.execute(f"CREATE DATABASE {database}")
    with psycopg.connect(f"{_server(admin_dsn)} dbname={database} user={_user(admin_dsn)}", autocommit=True) as owner:
        held = owner.execute("SELECT to_regclass('tax.declarations') IS NOT NULL").fetchone()[0] and \
            owner.execute("SELECT COUNT(*) FROM tax.declarations").fetchone()[0] == rows
        if not held:
            started = time.perf_counter()
            print(f"copying {rows:,} declarations into PostgreSQL database {database} (once) ...")
            load_into_postgres(str(data), owner, served=DEMO_DATASETS, role=ROLE, replace=True)
            owner.execute("ANALYZE")
            print(f"  copied and analysed in {time.perf_counter() - started:.0f} s")
        for statement in give_planner_statistics(str(data), owner, served=DEMO_DATASETS):
            print(f"  made the planner statistics the sandbox's plans need: {statement}")
    return database


def _server(dsn: str) -> str:
    """The host and port of ``dsn`` as libpq keywords."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return f"host={info.get('host', '127.0.0.1')} port={info.get('port', 5432)}"


def _user(dsn: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(dsn).get("user", "postgres"))


def _seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started
