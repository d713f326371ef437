"""The encrypted mode's benchmark: what encryption adds per query, and what a secure sum costs per partition.

Its data is made for it: every partition holds the same 4096 streets with 10 taxpayers each, so a query
releases exactly 1, 100 or 4096 groups (by the industry section it filters on) and every partition
passes the threshold in every group. Latencies are end to end through the SDK (decryption included),
medians of interleaved runs.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import duckdb

from broker.client.sdk import BrokerClient
from broker.client.encryption_key import EncryptionKey
from broker.dev.keys import approve_for_development
from broker.dev.launch import development_servers, development_token
from broker.v1 import query_service_pb2 as query_pb

GROUPS = 4096
TAXPAYERS_PER_GROUP = 10
PARTITION_COUNTS = (2, 4, 8)
# The industry sections that select 1, 100 and all 4096 streets.
SECTIONS = {1: "('A')", 100: "('A', 'B')", GROUPS: "('A', 'B', 'C')"}
SQL = ("SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations WHERE industry_section IN {sections} "
       "GROUP BY street_code")


def make_groups_data(path: Path, partition: int) -> Path:
    """A data file of ``GROUPS`` streets in Xuanwu, ``TAXPAYERS_PER_GROUP`` taxpayers each (ids unique per
    partition)."""
    if path.exists():
        return path
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    with duckdb.connect(str(partial)) as connection:
        connection.execute("CREATE SCHEMA tax")
        connection.execute(f"""
            CREATE TABLE tax.declarations AS
            SELECT 'p{partition}-' || i AS taxpayer_id, DATE '2025-06-01' AS period, '320102' AS district_code,
                   lpad(CAST(i // {TAXPAYERS_PER_GROUP} AS VARCHAR), 5, '0') AS street_code, '64' AS industry_code,
                   CASE WHEN i // {TAXPAYERS_PER_GROUP} < 1 THEN 'A' WHEN i // {TAXPAYERS_PER_GROUP} < 100 THEN 'B'
                        ELSE 'C' END AS industry_section,
                   '173' AS registration_type, 'small' AS size_class,
                   CAST(hash(i, {partition}) % 100000000 AS BIGINT) AS revenue,
                   CAST(hash(i, {partition}, 1) % 10000000 AS BIGINT) AS vat_paid,
                   CAST(0 AS BIGINT) AS cit_paid, CAST(0 AS BIGINT) AS iit_withheld, 1 AS employees
            FROM range({GROUPS * TAXPAYERS_PER_GROUP}) AS t(i)""")
    partial.replace(path)
    return path


def _grant(text: str, grant: str, results: str, partitions: tuple[str, ...] = ()) -> str:
    text = text.replace("id: xuanwu-fgw-2026-007", f"id: {grant}")
    text = text.replace("results: [aggregate]", f"results: {results}")
    # Encrypted results are not served under a dominance rule (the sandbox cannot withhold one encrypted cell).
    text = text.replace("dominance: {n: 2, k: 85}", 'dominance: off, dominance_off_reason: "a benchmark of '
                                                    'encrypted results, which the dominance rule cannot apply to"')
    return text + (f"partitions: [{', '.join(partitions)}]\n" if partitions else "")


def encrypted_bench(root: Path, scratch: Path, layout, cache: Path, runs: int) -> dict:
    """Median seconds per query: plaintext and encrypted by groups, and secure sums by partitions."""
    names = [f"part-{i}" for i in range(max(PARTITION_COUNTS))]
    files = {name: make_groups_data(cache / f"groups-{name}.duckdb", i) for i, name in enumerate(names)}
    policies = scratch / "policies-encrypted"
    policies.mkdir()
    shipped = (root / "policies" / "xuanwu-fgw-2026-007.yaml").read_text(encoding="utf-8")
    # The shipped grant's lookup tables are not in this data; no query here joins them.
    grants = {1: "bench-encrypted"}
    (policies / "bench-encrypted.yaml").write_text(approve_for_development(
        layout, _grant(shipped, grants[1], "[aggregate, encrypted]")))
    for count in PARTITION_COUNTS:
        grants[count] = f"bench-partitions-{count}"
        (policies / f"{grants[count]}.yaml").write_text(approve_for_development(
            layout, _grant(shipped, grants[count], "[encrypted]", tuple(names[:count]))))
    key = EncryptionKey.generate()
    direct = duckdb.connect(str(files[names[0]]), read_only=True)
    direct.execute("SET threads = 2")
    samples: dict[str, list[float]] = {}

    def sample(name: str, function) -> None:
        started = time.perf_counter()
        function()
        samples.setdefault(name, []).append(time.perf_counter() - started)

    token = development_token(layout, subject="bench", department="xuanwu-fgw", district="320102")
    with development_servers(data=files[names[0]], policies=policies, state=scratch / "state-encrypted", layout=layout,
                             client="bench", partitions=files,
                             datasets=("tax.declarations",)) as (_sandbox, broker, tls), \
            BrokerClient(broker.target, tls=tls, token=token) as client:
        for groups, sections in SECTIONS.items():  # warm up, and check the answers agree
            sql = SQL.format(sections=sections)
            plain = client.query(grants[1], sql)
            encrypted = client.query(grants[1], sql, encryption_key=key)
            assert len(plain.rows) == groups and sorted(plain.rows) == sorted(encrypted.rows)
        full = SQL.format(sections=SECTIONS[GROUPS])
        for count in PARTITION_COUNTS:
            summed = client.query(grants[count], full, encryption_key=key)
            assert len(summed.rows) == GROUPS and summed.encryption["partitions"] == count
        for _ in range(runs):
            for groups, sections in SECTIONS.items():
                sql = SQL.format(sections=sections)
                sample(f"direct-{groups}", lambda sql=sql: direct.execute(sql.replace(
                    "WHERE", "WHERE district_code = '320102' AND")).fetchall())
                sample(f"plain-{groups}", lambda sql=sql: client.query(grants[1], sql))
                sample(f"encrypted-{groups}", lambda sql=sql: client.query(grants[1], sql, encryption_key=key))
            for count in PARTITION_COUNTS:
                sample(f"partitions-{count}", lambda count=count: client.query(grants[count], full, encryption_key=key))
        # The size of the answer as it travels (the SDK hands back only the decrypted cells).
        response_bytes = len(client._queries.RunQuery(
            query_pb.RunQueryRequest(policy=f"policies/{grants[1]}", sql=full,
                                     encryption=client.encryption_for(grants[1], full, key)),
            metadata=(("authorization", f"Bearer {token}"),), timeout=60).SerializeToString())
    direct.close()
    return {"medians": {name: statistics.median(values) for name, values in samples.items()},
            "context_bytes": len(key.public_context), "response_bytes": response_bytes}


def report(result: dict) -> None:
    """Print the encrypted mode's figures."""
    m = result["medians"]
    print("encrypted results (BFV N=8192, one ciphertext per measure; "
          f"public key {result['context_bytes'] / 1e6:.2f} MB "
          f"per query, answer with 4096 groups {result['response_bytes'] / 1e6:.2f} MB):")
    for groups in SECTIONS:
        added = m[f"encrypted-{groups}"] - m[f"plain-{groups}"]
        print(f"  {groups:>4} group(s): DuckDB directly {m[f'direct-{groups}'] * 1000:6.2f} ms, plaintext end to end "
              f"{m[f'plain-{groups}'] * 1000:6.2f} ms, encrypted {m[f'encrypted-{groups}'] * 1000:6.2f} ms: "
              f"+{added * 1000:5.2f} ms" + ("   (target < 15 ms)" if groups == GROUPS else ""))
    one = m[f"encrypted-{GROUPS}"]
    print(f"  secure sum of {GROUPS} groups:  1 sandbox {one * 1000:6.2f} ms" + "".join(
        f", {count} partitions {m[f'partitions-{count}'] * 1000:6.2f} ms" for count in PARTITION_COUNTS))
    per = [(m[f"partitions-{count}"] - one) / (count - 1) * 1000 for count in PARTITION_COUNTS]
    print("  added per further partition           " + ", ".join(f"{p:.2f} ms" for p in per)
          + "   (roughly linear when these agree)")
