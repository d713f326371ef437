"""The embedded walk-through: the owner's sandbox and the broker as real processes, and a department's queries."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax

from broker.client.approving import Narrowing, sign_approval
from broker.cli.output import print_dataset, print_explanation, print_policy, print_request, print_result
from broker.cli.query import money_of
from broker.client.sdk import BrokerClient
from dsbroker.errors import DsbrokerError
from broker.client.encryption_key import EncryptionKey
from dsbroker.guard import guard
from broker.dev.keys import (DEV_AUDIENCE, DEV_ISSUER, DEV_SIGNERS, IDP_KEY_ID, KeyLayout, approve_for_development,
                         init_keys, load_private_key, signer_key_id)
from broker.dev.launch import DataSource, development_servers, development_token
from dsbroker.policy.model import parse_policy
from dsbroker.policy.statements import sign_revocation
from dsbroker.rpc.status import error_from_rpc_error
from dsbroker.identity.tls import ClientTls, open_channel
from dsbroker.identity.tokens import issue_token
from broker.v1 import access_request_service_pb2 as pb
from sandbox.v1 import sandbox_service_pb2 as sandbox_pb
from sandbox.v1 import sandbox_service_pb2_grpc as sandbox_grpc
from sandbox.demo.data import DEMO_DATASETS, make_demo_data, split_demo_data, write_demo_catalog
from sandbox.engine.configured import DEFAULT_SPARK_MASTER

ACTORS = {
    # client certificate (= token subject): (department, district, role, signing key or None)
    "analyst-li": ("xuanwu-fgw", "320102", "requester", None),
    "reviewer-wang": ("xuanwu-tax", "320102", "reviewer", "xuanwu-tax"),
    "owner-chen": ("city-tax", "320100", "owner", "city-tax"),
    "auditor-zhao": ("city-audit", "320100", "auditor", None),
}
ANALYST = "analyst-li"
AGGREGATE_SQL = """\
SELECT street_code, industry_section,
       COUNT(DISTINCT taxpayer_id) AS taxpayers,
       SUM(vat_paid + cit_paid) / 100 AS tax_yuan
FROM tax.declarations
WHERE period BETWEEN DATE '2025-01-01' AND DATE '2025-12-31'
  AND industry_section IN ('C', 'I', 'M')
GROUP BY street_code, industry_section
ORDER BY tax_yuan DESC
LIMIT 12"""
TOTALS_SQL = """\
SELECT street_code, industry_section, SUM(vat_paid) / 100 AS vat_yuan
FROM tax.declarations
WHERE industry_section IN ('C', 'D', 'F')
  AND street_code IN ('320102001', '320102002', '320102003')
GROUP BY ROLLUP (street_code, industry_section)
ORDER BY street_code, industry_section"""
# A CUBE's margins by street and by section are not a tree of totals: the released-cell auditor protects them.
CUBE_SQL = TOTALS_SQL.replace("ROLLUP (street_code", "CUBE (street_code")
# Two levels: a protected aggregate, then each street's share of the district computed on its released cells.
SHARE_SQL = """\
WITH streets AS (
  SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations
  WHERE period BETWEEN DATE '2025-01-01' AND DATE '2025-12-31'
  GROUP BY street_code)
SELECT street_code, ROUND(vat / 1000000, 1) AS vat_wan,
       ROUND(100.0 * vat / SUM(vat) OVER (), 1) AS pct_of_district,
       RANK() OVER (ORDER BY vat DESC) AS place
FROM streets
ORDER BY street_code"""
RAW_SQL = "SELECT taxpayer_id, vat_paid FROM tax.declarations WHERE street_code = '320102005'"
ENCRYPTED_SQL = """\
SELECT street_code, industry_section,
       COUNT(DISTINCT taxpayer_id) AS taxpayers,
       SUM(vat_paid) AS vat_fen,
       AVG(cit_paid) AS mean_cit_fen
FROM tax.declarations
WHERE period BETWEEN DATE '2025-01-01' AND DATE '2025-12-31'
  AND industry_section IN ('C', 'I', 'M')
  AND street_code IN ('320102001', '320102002', '320102003')
GROUP BY street_code, industry_section"""
SECURE_SUM_SQL = """\
SELECT industry_section, size_class,
       COUNT(DISTINCT taxpayer_id) AS taxpayers,
       SUM(vat_paid) AS vat_fen
FROM tax.declarations
WHERE period BETWEEN DATE '2025-01-01' AND DATE '2025-12-31'
  AND industry_section IN ('C', 'I')
GROUP BY industry_section, size_class"""
PARTITIONS = ("xuanwu-office-east", "xuanwu-office-west")
# --engine postgres: the server the demo makes its databases on (a role that may create databases and roles),
# the databases' prefix (each run makes them afresh), and the role its sandboxes connect as.
DEMO_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEMO_DATABASE = "dsbroker_demo"
DEMO_ROLE = "dsbroker_demo_sandbox"
# --engine spark: each sandbox's Spark session (driver and executor memory): three run at once on one machine.
SPARK_MEMORY = "1GB"
CATALOG = Path(__file__).resolve().parents[2] / "sandbox" / "demo" / "catalog.yaml"
# The shipped grant, with the owner's three data products (its ``products:``): served beside the others, signed
# for the run, for the walk-through's product step.
PRODUCTS_GRANT = "xuanwu-fgw-2026-007"
PRODUCTS_POLICY = Path(__file__).resolve().parents[2] / "policies" / f"{PRODUCTS_GRANT}.yaml"
PRODUCT_CALL = ("enterprise-counts-by-size", {"period": "2025-06-01"})
PARTITIONED_GRANT = "xuanwu-fgw-2026-011"
PARTITIONED_POLICY = f"""\
# The owner's standing grant over the two Xuanwu tax offices' partitions of the declarations: the
# broker adds their encrypted cells, and only the commission decrypts the sums.
id: {PARTITIONED_GRANT}
version: 1
grantee: {{department: xuanwu-fgw, district: "320102"}}
purpose: "district VAT by industry and size, summed over both tax offices without either showing its own"
dataset: tax.declarations
columns:
  taxpayer_id: entity
  industry_section: group
  size_class: group
  period: filter
  vat_paid: measure
aggregates: [COUNT, SUM]
row_filter: "district_code = :district"
# The sandboxes cannot withhold a dominated cell of an encrypted result, so the owner turns the dominance
# rule off, in writing: policy lint and review show put the reason before whoever signs.
disclosure: {{min_entities: 10, dominance: off, dominance_off_reason: "district-wide cells of industry section and size
  class only, summed over both offices under encryption, to which the dominance rule cannot apply"}}
results: [encrypted]
partitions: [{", ".join(PARTITIONS)}]
"""

console = Console()


def run_demo(cache_dir: Path, *, taxpayers: int = 20_000, engine: str = "duckdb",
             postgres_dsn: str = DEMO_POSTGRES) -> int:
    """Run the walk-through; returns the exit code (0 when every step behaved as it should). With ``engine``
    ``"postgres"`` the sandboxes serve the demo data from databases made for it on the PostgreSQL server
    ``postgres_dsn`` names (as a role that may create databases and roles), in place of DuckDB files; with
    ``"spark"`` each sandbox's tables are written as Parquet under ``cache_dir``, which the sandbox reads in place
    in a Spark session of its own on this machine."""
    started = time.perf_counter()
    cache_dir.mkdir(parents=True, exist_ok=True)
    data = cache_dir / f"tax-{taxpayers}.duckdb"
    state = cache_dir / "state" / time.strftime("%Y%m%d-%H%M%S")
    state.mkdir(parents=True, exist_ok=True)
    access_log = state / "access-log.sqlite"
    checks: dict[str, bool] = {}

    _step("1. The city tax bureau (the owner) has its taxpayer records, and a catalog describing them; "
          "both stay on its side.")
    if data.exists():
        console.print(f"reusing demo data {data}")
    else:
        make_demo_data(data, taxpayers=taxpayers, progress=console.print)
    console.print(f"catalog: {write_demo_catalog(data)} (metadata only, never a value)")

    _step("2. Keys: a platform CA and an owner CA for mutual TLS, an identity provider that signs tokens, and "
          "the reviewer's and owner's own signing keys.")
    layout = KeyLayout(cache_dir / "keys")
    if layout.trust.exists() and all(layout.client_cert(name).exists() for name in ACTORS):
        console.print(f"reusing development keys in {layout.root}")
    else:
        init_keys(layout.root, clients=tuple(ACTORS), force=True)
        console.print(f"made development keys in {layout.root} (dsbroker keys init)")

    split = split_demo_data(data, list(PARTITIONS), cache_dir / f"partitions-{taxpayers}")
    sources: dict[str, DataSource] = {"sandbox": data, **dict(zip(PARTITIONS, split, strict=True))}
    if engine == "postgres":
        _step("2b. The owner's data is in PostgreSQL instead: each sandbox's share is copied into a database of its "
              "own (dsbroker data make --into), and the sandboxes serve them in place, through a read-only role "
              "whose lockdown each verifies at start.")
        sources = {name: _in_postgres(path, postgres_dsn, name) for name, path in sources.items()}
    elif engine == "spark":
        _step("2b. The owner's tables are Parquet files in its data lake instead: each sandbox's share is written as "
              "Parquet (dsbroker data make --parquet), and each sandbox reads its files in place, in a Spark "
              "session of its own that it locks down and verifies at start (no other table, no file by its path).")
        sources = {name: _in_spark(path, cache_dir / f"parquet-{taxpayers}" / name, name)
                   for name, path in sources.items()}
    partitions = {name: sources[name] for name in PARTITIONS}
    policies = state / "policies"
    policies.mkdir()
    (policies / f"{PARTITIONED_GRANT}.yaml").write_text(approve_for_development(layout, PARTITIONED_POLICY))
    (policies / f"{PRODUCTS_GRANT}.yaml").write_text(approve_for_development(
        layout, PRODUCTS_POLICY.read_text(encoding="utf-8")))

    _step("3. The owner starts its sandbox beside the data, and the district's two tax offices one each beside "
          "their own share of the declarations (partitions of one table); the exchange platform starts the "
          f"broker, whose grants are the owner's standing one over the partitions ({PARTITIONED_GRANT}, "
          f"encrypted results only) and {PRODUCTS_GRANT}, which holds the owner's data products.")
    with development_servers(data=sources["sandbox"], policies=policies, state=state, layout=layout, client=ANALYST,
                             access_log=access_log, partitions=partitions,
                             token_binding="thumbprint") as (sandbox, broker, _tls):
        console.print(f"sandbox on {sandbox.target}, partitions {', '.join(PARTITIONS)}, broker on {broker.target}: "
                      "mutual TLS on both hops, and tokens bound to the caller's certificate (RFC 8705), which "
                      "the sandboxes check too")
        clients = {name: _actor_client(layout, broker.target, name) for name in ACTORS}
        try:
            checks.update(_workflow(layout, clients, broker.target, sandbox.target,
                                    engine_dialect=engine))
            checks.update(_products(clients["analyst-li"]))
            checks.update(_products_only_request(layout, clients))
            _step("14. The city audit office reads the access log over gRPC (dsbroker audit list); its own "
                  "reads are recorded too:")
            records, _ = clients["auditor-zhao"].list_access_records(page_size=1000)
            for record in records:
                console.print(f"#{record.seq:<3} {record.at[11:19]} {record.event:<16} {record.department:<11} "
                              f"{record.decision:<8} {record.reason or '-'}", no_wrap=True, overflow="ellipsis")
            checks["auditor reads the log"] = any(r.event == "query.result" for r in records)
        finally:
            for client in clients.values():
                client.close()

    _step("15. The broker has stopped and signed a last checkpoint, which each sandbox witnessed. The auditors "
          "verify the log (every record sealed, every checkpoint signed) against the broker's key they pinned, "
          "and reconcile it with the sandboxes' own ledgers of what they executed and which checkpoints they "
          "countersigned:")
    checks["audit verify passes"] = _cli("audit", "verify", "--log", str(access_log), "--pinned-key",
                                         str(access_log.with_suffix(".pub")))
    ledgers = [state / f"{name}-executions.sqlite" for name in ("sandbox", *PARTITIONS)]
    checks["log reconciles with the sandboxes"] = _cli(
        "audit", "reconcile", "--log", str(access_log),
        *(arg for ledger in ledgers for arg in ("--ledger", str(ledger))),
        *(arg for ledger in ledgers for arg in ("--witness-key", str(ledger.with_name(ledger.name + ".witness.pub")))))
    failed = [name for name, ok in checks.items() if not ok]
    ok = bool(checks) and not failed
    console.print(Panel(f"demo {'finished' if ok else 'FAILED: ' + ', '.join(failed)} in "
                        f"{time.perf_counter() - started:.1f}s", style="green" if ok else "red"))
    return 0 if ok else 1


def _workflow(layout: KeyLayout, clients: dict[str, BrokerClient], target: str,
              sandbox_target: str, *, engine_dialect: str) -> dict[str, bool]:
    requester, reviewer, owner = clients["analyst-li"], clients["reviewer-wang"], clients["owner-chen"]
    checks = {}
    _step("4. Xuanwu's Development and Reform Commission browses the catalog (dsbroker catalog show):")
    print_dataset(requester.dataset("tax.declarations"), as_json=False)

    _step("5. It submits a data request: purpose, columns and their use, example queries, validity, volume "
          "(dsbroker request submit):")
    today = dt.date.today()
    submitted = requester.submit_request(pb.AccessRequest(
        purpose="2025 tax of manufacturing, IT and research by street, for the district economic report",
        dataset="tax.declarations",
        columns=[pb.RequestedColumn(column="street_code", use=pb.COLUMN_USE_GROUP, reason="one row per street"),
                 pb.RequestedColumn(column="period", use=pb.COLUMN_USE_FILTER, reason="the year 2025"),
                 pb.RequestedColumn(column="industry_section", use=pb.COLUMN_USE_GROUP, reason="key industries"),
                 pb.RequestedColumn(column="industry_code", use=pb.COLUMN_USE_GROUP, reason="detail if needed"),
                 pb.RequestedColumn(column="vat_paid", use=pb.COLUMN_USE_MEASURE, reason="VAT revenue"),
                 pb.RequestedColumn(column="cit_paid", use=pb.COLUMN_USE_MEASURE, reason="income tax revenue")],
        example_queries=[AGGREGATE_SQL.replace("\n", " "), RAW_SQL], result_modes=["aggregate", "encrypted"],
        valid_from=today.isoformat(), valid_until=(today + dt.timedelta(days=180)).isoformat(), queries_per_day=200))
    print_request(submitted, as_json=False)
    name = submitted.name

    _step("6. The Xuanwu tax bureau reviews it, with the guard's dry run of each example (dsbroker review show):")
    print_request(reviewer.get_request(name), as_json=False, full=True)
    _step("7. It approves: its own key signs the drafted policy on its own machine (dsbroker review approve):")
    reviewed = reviewer.approve_request(name, _sign(layout, reviewer.get_request(name), "xuanwu-tax"),
                                        comment="purpose fits the district report")
    print_request(reviewed, as_json=False)

    _step("8. The city tax bureau, the owner, narrows it (no industry detail, at least 12 taxpayers a cell, "
          "100 queries a day) and signs; the policy is in force:")
    active = owner.approve_request(name, _sign(layout, owner.get_request(name), "city-tax", Narrowing(
        drop_columns=("industry_code",), min_entities=12, queries_per_day=100)))
    print_request(active, as_json=False)
    grant = active.policy.removeprefix("policies/")
    checks["activated"] = bool(grant)

    _step(f"9. The commission asks, under grant {grant}, for 2025 tax by street in manufacturing, IT and research:")
    console.print(Syntax(AGGREGATE_SQL, "sql", theme="ansi_dark", background_color="default"))
    console.print("First it asks what the guard would make of it, without running it (dsbroker query --explain): "
                  "bound to its district and held to the owner's threshold.", style="bold")
    explanation = requester.explain(grant, AGGREGATE_SQL)
    print_explanation(explanation, as_json=False)
    result = requester.query(grant, AGGREGATE_SQL)
    console.print("Then it runs it:", style="bold")
    print_result(result, money=money_of(requester, AGGREGATE_SQL))
    checks["explained as run"] = explanation.rewritten_sql == result.rewritten_sql
    checks["aggregate answered"] = bool(result.rows)
    console.print("With totals by street and for the district, small cells are withheld (x), and so is one more "
                  "cell wherever a total would give a withheld one away by subtraction:", style="bold")
    console.print(Syntax(TOTALS_SQL, "sql", theme="ansi_dark", background_color="default"))
    totals = requester.query(grant, TOTALS_SQL)
    print_result(totals, money=money_of(requester, TOTALS_SQL))
    secondary = next(r for r in totals.disclosure_rules if r["rule"] == "secondary_suppression")
    checks["totals protected"] = bool(totals.withheld) and secondary["cells_withheld"] > 0
    console.print("With CUBE the sections get their totals too, across the streets: each cell is then in two totals, "
                  "which secondary suppression's tree does not cover; the released-cell auditor solves the table, "
                  "with every cell released before, and withholds what would give a small cell away (rule audit):",
                  style="bold")
    console.print(Syntax(CUBE_SQL, "sql", theme="ansi_dark", background_color="default"))
    cube = requester.query(grant, CUBE_SQL)
    print_result(cube, money=money_of(requester, CUBE_SQL))
    checks["cube audited"] = bool(cube.withheld) and any(r["rule"] == "audit" for r in cube.disclosure_rules)
    checks["differencing withheld"] = _differencing(requester, grant)
    checks["share of the district"] = _share_of_district(requester, grant)
    console.print("It tries to read one street's taxpayers row by row:", style="bold")
    console.print(Syntax(RAW_SQL, "sql", theme="ansi_dark", background_color="default"))
    checks["raw rows refused"] = _refused(requester, grant, RAW_SQL)

    checks.update(_encrypted(requester, grant))

    _step("12. Someone without the identity provider's key signs a token of their own:")
    forged = issue_token(ed25519.Ed25519PrivateKey.generate(), key_id=IDP_KEY_ID, issuer=DEV_ISSUER,
                         audience=DEV_AUDIENCE, subject=ANALYST, department="xuanwu-fgw", district="320102",
                         roles=("requester",), ttl=dt.timedelta(hours=1))
    with BrokerClient(target, token=forged, tls=_tls(layout, ANALYST)) as forger:
        checks["forged token refused"] = _refused(forger, grant, AGGREGATE_SQL)

    _step("13. The report is published; the owner revokes the grant (dsbroker policy revoke): it signs the "
          "revocation with its own key, and the broker passes it to every sandbox, which keeps it for good. The "
          "next query is refused:")
    document = owner.get_policy(grant).document
    statement = sign_revocation(load_private_key(layout.signer_key("city-tax")), key_id=signer_key_id("city-tax"),
                                by="city-tax", policy_id=grant, reason="the district report is published")
    console.print(statement, soft_wrap=True, highlight=False)
    answer = owner.revoke_policy(grant, statement)
    print_policy(answer.policy, as_json=False)
    console.print(f"sandboxes that kept the revocation: {', '.join(answer.sandboxes_notified)}")
    checks["revocation reached every sandbox"] = len(answer.sandboxes_notified) == 1 + len(PARTITIONS)
    checks["revoked grant refused"] = _refused(requester, grant, AGGREGATE_SQL)
    console.print("A broker turned hostile sends the grant's plan to the owner's sandbox anyway, with the "
                  "commission's token and certificate it has seen:", style="bold")
    checks["sandbox refuses the revoked grant"] = _hostile_replay(layout, sandbox_target, document,
                                                                  requester.token, engine_dialect=engine_dialect)
    return checks


def _hostile_replay(layout: KeyLayout, sandbox_target: str, document: str, token: str, *, engine_dialect: str) -> bool:
    """Send the owner's sandbox, as the broker could, an honest plan under a revoked grant; whether it refuses."""
    policy = parse_policy(document)
    department, district, _role, _signer = ACTORS[ANALYST]
    guarded = guard(AGGREGATE_SQL, policy, district=district, department=department, engine_dialect=engine_dialect)
    certificate = x509.load_pem_x509_certificate(layout.client_cert(ANALYST).read_bytes())
    plan = sandbox_pb.Plan(dataset=policy.dataset, sql=guarded.sql, policy_id=policy.id, policy_version=policy.version,
                           max_rows=guarded.max_rows, policy_document=document, original_sql=AGGREGATE_SQL,
                           caller_token=token, execution_id=str(uuid.uuid4()),
                           caller_certificate=certificate.public_bytes(serialization.Encoding.DER))
    tls = ClientTls(str(layout.owner_ca), str(layout.broker_to_sandbox_cert), str(layout.broker_to_sandbox_key))
    with open_channel(sandbox_target, tls=tls, options=[]) as channel:
        try:
            sandbox_grpc.SandboxServiceStub(channel).ExecutePlan(sandbox_pb.ExecutePlanRequest(plan=plan), timeout=30)
        except grpc.RpcError as rpc_error:
            error = error_from_rpc_error(rpc_error)
            console.print(f"the sandbox refuses: {error.code.name} {error.reason}: {error.message}")
            return error.reason == "POLICY_REVOKED"
    console.print("[red]the sandbox ran a plan under a revoked grant: this must not happen[/red]")
    return False


def _differencing(requester: BrokerClient, grant: str) -> bool:
    """A differencing attempt: a street's 2024 total over sections C, D and F, then the same street without D
    (a section of few firms there). The second less the first would be D's few firms: the released-cell
    auditor withholds it. Tried street by street until one street's total is released (an earlier answer
    may have made it a difference itself)."""
    period = "period BETWEEN DATE '2024-01-01' AND DATE '2024-12-01'"
    for number in range(1, 8):
        street = f"32010200{number}"
        whole = (f"SELECT SUM(vat_paid) / 100 AS vat_yuan FROM tax.declarations\n"
                 f"WHERE street_code = '{street}' AND {period} AND industry_section IN ('C', 'D', 'F')")
        first = requester.query(grant, whole)
        if not first.rows or first.rows[0][0] is None:
            continue
        part = whole.replace("IN ('C', 'D', 'F')", "IN ('C', 'F')")
        answer = requester.query(grant, part)
        audited = next(r["cells_withheld"] for r in answer.disclosure_rules if r["rule"] == "audit")
        if not audited:
            continue  # D is not small in this street: the difference is a total of many firms
        console.print(f"It tries to get section D of street {street} by subtraction: first the street's 2024 "
                      "total over sections C, D and F,", style="bold")
        console.print(Syntax(whole, "sql", theme="ansi_dark", background_color="default"))
        print_result(first, money=money_of(requester, whole))
        console.print("then the same without D:", style="bold")
        console.print(Syntax(part, "sql", theme="ansi_dark", background_color="default"))
        print_result(answer, money=money_of(requester, part))
        console.print("The sandbox's released-cell auditor keeps every cell released of the dataset, to any "
                      "department: this answer less the first would be section D's few taxpayers, so it is "
                      "withheld (rule audit).", style="bold")
        return answer.rows[0][0] is None
    console.print("[red]no street's total to try differencing on: the demo data changed[/red]")
    return False


def _encrypted(requester: BrokerClient, grant: str) -> dict[str, bool]:
    key = EncryptionKey.generate()
    _step(f"10. The commission asks for cells only it can read (dsbroker query --encrypted): its key stays on its "
          f"machine (key id {key.key_id[:19]}…), the query carries the public half, and the owner's sandbox "
          "encrypts one ciphertext per measure; the broker and the wire carry only ciphertexts:")
    console.print(Syntax(ENCRYPTED_SQL, "sql", theme="ansi_dark", background_color="default"))
    encrypted = requester.query(grant, ENCRYPTED_SQL, encryption_key=key)
    print_result(encrypted, money=money_of(requester, ENCRYPTED_SQL))
    plain = requester.query(grant, ENCRYPTED_SQL)
    released = [row for r, row in enumerate(plain.rows) if not any((r, c) in plain.withheld for c in range(len(row)))]
    same = sorted(map(repr, released)) == sorted(map(repr, encrypted.rows))
    console.print("Decrypted, the cells equal the plaintext answer exactly" if same else
                  "[red]the decrypted cells differ from the plaintext answer[/red]", style="bold")

    _step(f"11. Under the standing grant {PARTITIONED_GRANT}, one query runs in both tax offices' sandboxes; each "
          "encrypts its cells over the same groups, the broker adds the ciphertexts, and only the commission "
          "decrypts the district's sums. Nobody sees an office's own cells:")
    console.print(Syntax(SECURE_SUM_SQL, "sql", theme="ansi_dark", background_color="default"))
    summed = requester.query(PARTITIONED_GRANT, SECURE_SUM_SQL, encryption_key=key)
    print_result(summed, money=money_of(requester, SECURE_SUM_SQL))
    return {"encrypted equals plaintext": same and bool(encrypted.rows),
            "secure sum over two partitions": bool(summed.rows) and summed.encryption["partitions"] == 2}


def _in_postgres(source: Path, admin_dsn: str, name: str) -> dict[str, object]:
    """Copy the DuckDB file ``source`` into a database of its own (made afresh) on the server of ``admin_dsn``, with
    the demo's sandbox role; the sandbox settings that serve it."""
    import psycopg
    from psycopg import conninfo

    from sandbox.demo.postgres import load_into_postgres
    from sandbox.engine.configured import described

    database = f"{DEMO_DATABASE}_{name.replace('-', '_')}"
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {database}")
    target = conninfo.make_conninfo(admin_dsn, dbname=database)
    with psycopg.connect(target, autocommit=True, connect_timeout=10) as owner:
        counts = load_into_postgres(str(source), owner, served=DEMO_DATASETS, role=DEMO_ROLE)
    sandbox_dsn = conninfo.make_conninfo(target, user=DEMO_ROLE, password=None)
    console.print(f"{name}: {counts['tax.declarations']:,} declarations copied into {described(target)}; the sandbox "
                  f"connects as {DEMO_ROLE}, which may read {', '.join(DEMO_DATASETS)} and nothing else")
    return {"engine": "postgres", "postgres_dsn": sandbox_dsn, "catalog": str(CATALOG)}


def _in_spark(source: Path, directory: Path, name: str) -> dict[str, object]:
    """Write the served tables of the DuckDB file ``source`` as Parquet into ``directory``; the sandbox settings
    that serve them on a local Spark session of the sandbox's own."""
    from sandbox.demo.parquet import export_parquet

    tables = export_parquet(source, directory, served=DEMO_DATASETS)
    console.print(f"{name}: {len(tables)} tables as Parquet in {directory}, read in place by its own Spark "
                  f"session on {DEFAULT_SPARK_MASTER}")
    return {"engine": "spark", "spark_tables": tables, "catalog": str(CATALOG), "memory_limit": SPARK_MEMORY}


def _sign(layout: KeyLayout, request, signer: str, narrowing: Narrowing = Narrowing()) -> str:
    role = dict(DEV_SIGNERS)[signer]
    return sign_approval(request, load_private_key(layout.signer_key(signer)), key_id=signer_key_id(signer),
                         role=role, by=signer, narrowing=narrowing)


def _tls(layout: KeyLayout, name: str) -> ClientTls:
    return ClientTls(str(layout.platform_ca), str(layout.client_cert(name)), str(layout.client_key(name)))


def _actor_client(layout: KeyLayout, target: str, name: str) -> BrokerClient:
    department, district, role, _signer = ACTORS[name]
    token = development_token(layout, subject=name, department=department, district=district, roles=(role,),
                              certificate=layout.client_cert(name))
    return BrokerClient(target, token=token, tls=_tls(layout, name))


def _refused(client: BrokerClient, grant: str, sql: str) -> bool:
    """Whether the broker refuses ``sql``; prints the refusal as a caller sees it."""
    try:
        client.query(grant, sql)
    except DsbrokerError as error:
        where = ", ".join(f"{k}={v}" for k, v in error.metadata.items())
        console.print(f"refused: {error.code.name} {error.reason}: {error.message}" + (f" [{where}]" if where else ""))
        return True
    console.print("[red]the query was answered: this must not happen[/red]")
    return False


def _cli(*args: str) -> bool:
    """Run ``dsbroker ARGS`` as the auditor would, print what it says, and return whether it succeeded."""
    console.print("$ dsbroker " + " ".join(args), style="dim", soft_wrap=True)
    run = subprocess.run([sys.executable, "-m", "broker.cli.main", *args], capture_output=True, text=True)
    for line in (run.stderr + run.stdout).splitlines():
        console.print(line, soft_wrap=True, highlight=False)
    return run.returncode == 0


def _products(requester: BrokerClient) -> dict[str, bool]:
    """The commission runs one of the owner's data products by name, and a call out of its bounds is refused."""
    name, values = PRODUCT_CALL
    _step(f"13b. Under {PRODUCTS_GRANT} the city tax bureau publishes data products: standing queries it designed "
          "and signed, which the commission runs by name with parameters instead of writing SQL "
          "(dsbroker product list / show / run):")
    for product in requester.products(PRODUCTS_GRANT).values():
        console.print(f"{product.name}  v{product.version}  {product.title['zh']} / {product.title['en']}")
    console.print("$ dsbroker product run " + name + f" --grant {PRODUCTS_GRANT} "
                  + " ".join(f"--param {k}={v}" for k, v in values.items()), style="dim", soft_wrap=True)
    result = requester.run_product(PRODUCTS_GRANT, name, values)
    print_result(result)  # counts: no money
    console.print("The sandbox bound the parameters into the template of the policy the owner signed, and guarded "
                  "the query under the grant like any other. A month outside the product's range is refused, "
                  "the parameter named:", style="bold")
    try:
        requester.run_product(PRODUCTS_GRANT, name, {**values, "period": "2030-12-01"})
    except DsbrokerError as error:
        console.print(f"refused: {error.code.name} {error.reason}: {error.message} "
                      f"[parameter={error.metadata.get('parameter')}]")
        refused = error.reason == "PRODUCT_PARAMETER_OUT_OF_RANGE"
    else:
        console.print("[red]the product ran out of its bounds: this must not happen[/red]")
        refused = False
    return {"product answered": bool(result.rows), "product bounds held": refused}


def _share_of_district(requester: BrokerClient, grant: str) -> bool:
    """A two-level query: the outer part runs in the sandbox on the released cells alone."""
    console.print("A report needs more than one level: each street's share of the district and its rank, computed "
                  "in the sandbox on the released cells alone (a share that reads a withheld cell is withheld too):",
                  style="bold")
    console.print(Syntax(SHARE_SQL, "sql", theme="ansi_dark", background_color="default"))
    result = requester.query(grant, SHARE_SQL)
    print_result(result, money=money_of(requester, SHARE_SQL))
    shares = [row[2] for row in result.rows]
    return bool(shares) and (bool(result.withheld) or abs(sum(float(s) for s in shares) - 100) < 1)


def _products_only_request(layout: KeyLayout, clients: dict[str, BrokerClient]) -> dict[str, bool]:
    """The commission asks for a product instead of columns: the draft holds the product as the catalog offers it,
    the approvers sign it, and the grant answers that product only."""
    requester, reviewer, owner = clients["analyst-li"], clients["reviewer-wang"], clients["owner-chen"]
    name, values = PRODUCT_CALL
    _step(f"13c. The commission asks for the product {name} instead of columns (products: \\[{name}] in its request "
          "file): the draft holds the product, query text included, as the catalog offers it, and answers only "
          "products (queries: products); the reviewer and the owner sign it as any draft:")
    today = dt.date.today()
    submitted = requester.submit_request(pb.AccessRequest(
        purpose="enterprises by size class each month, for the district's business census", dataset="tax.declarations",
        products=[name], valid_from=today.isoformat(), valid_until=(today + dt.timedelta(days=90)).isoformat(),
        queries_per_day=20))
    draft = submitted.draft_policy
    console.print("\n".join(line for line in draft.splitlines()
                            if line.startswith(("columns:", "  ", "queries:", "products:"))), soft_wrap=True)
    reviewer.approve_request(submitted.name, _sign(layout, reviewer.get_request(submitted.name), "xuanwu-tax"))
    active = owner.approve_request(submitted.name, _sign(layout, owner.get_request(submitted.name), "city-tax"))
    grant = active.policy.removeprefix("policies/")
    answered = bool(requester.run_product(grant, name, values).rows)
    console.print(f"the product answers under {grant}; SQL of the commission's own is refused:", style="bold")
    try:
        requester.query(grant, "SELECT size_class, COUNT(DISTINCT taxpayer_id) FROM tax.declarations GROUP BY 1")
    except DsbrokerError as error:
        console.print(f"refused: {error.code.name} {error.reason}: {error.message}")
        refused = error.reason == "AD_HOC_QUERY_NOT_GRANTED"
    else:
        console.print("[red]a products-only grant answered SQL: this must not happen[/red]")
        refused = False
    return {"products-only grant answered its product": answered, "products-only grant refused SQL": refused}


def _step(text: str) -> None:
    console.rule(style="dim")
    console.print(text, style="bold")
