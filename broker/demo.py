"""The embedded walk-through: the owner's sandbox and the broker as real processes, and a department's queries."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax

from broker.access_log import AccessLog
from broker.cli.output import print_result
from broker.client import BrokerClient
from broker.errors import DsbrokerError
from broker.keys import DEV_AUDIENCE, DEV_ISSUER, IDP_KEY_ID, KeyLayout, approve_for_development, init_keys
from broker.launch import development_servers, development_token
from broker.tls import ClientTls
from broker.tokens import issue_token
from sandbox.demo_data import make_demo_data

POLICIES = Path(__file__).resolve().parent.parent / "policies"
GRANT = "xuanwu-fgw-2026-007"
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
RAW_SQL = "SELECT taxpayer_id, vat_paid FROM tax.declarations WHERE street_code = '320102005'"

console = Console()


def run_demo(cache_dir: Path, *, taxpayers: int = 20_000) -> int:
    """Run the walk-through; returns the exit code (0 when every step behaved as it should)."""
    started = time.perf_counter()
    cache_dir.mkdir(parents=True, exist_ok=True)
    data = cache_dir / f"tax-{taxpayers}.duckdb"
    state = cache_dir / "state"
    state.mkdir(exist_ok=True)
    access_log = state / f"access-log-{int(time.time())}.sqlite"

    _step("1. The city tax bureau (the owner) has its taxpayer records; they stay on its side.")
    if data.exists():
        console.print(f"reusing demo data {data}")
    else:
        make_demo_data(data, taxpayers=taxpayers, progress=console.print)

    _step("2. Keys: a platform CA and an owner CA for mutual TLS, and an identity provider that signs tokens.")
    layout = KeyLayout(cache_dir / "keys")
    if layout.trust.exists() and layout.client_cert(ANALYST).exists():
        console.print(f"reusing development keys in {layout.root}")
    else:
        init_keys(layout.root, clients=(ANALYST,), force=True)
        console.print(f"made development keys in {layout.root} (dsbroker keys init)")

    _step(f"3. The district tax bureau reviews grant {GRANT} and the city tax bureau, the owner, signs it.")
    policies = state / "policies"
    policies.mkdir(exist_ok=True)
    for path in POLICIES.glob("*.yaml"):
        (policies / path.name).write_text(approve_for_development(layout, path.read_text(encoding="utf-8")),
                                          encoding="utf-8")
    console.print(f"{policies / (GRANT + '.yaml')} now ends with the two Ed25519 approvals; the sandbox runs "
                  f"nothing whose approvals do not verify against {layout.trust}")

    _step("4. The owner starts its sandbox beside the data; the exchange platform starts the broker.")
    with development_servers(data=data, policies=policies, state=state, layout=layout, client=ANALYST,
                             access_log=access_log) as (sandbox, broker, tls):
        console.print(f"sandbox on {sandbox.target}, broker on {broker.target}: mutual TLS on both hops, and "
                      "tokens bound to the caller's certificate")
        token = development_token(layout, subject=ANALYST, department="xuanwu-fgw", district="320102")
        answered, refused = _department_queries(broker.target, token, tls)

        _step("7. Someone without the identity provider's key signs a token of their own:")
        forged = issue_token(ed25519.Ed25519PrivateKey.generate(), key_id=IDP_KEY_ID, issuer=DEV_ISSUER,
                             audience=DEV_AUDIENCE, subject=ANALYST, department="xuanwu-fgw", district="320102",
                             roles=("requester",), ttl=dt.timedelta(hours=1))
        forged_refused = _refused(broker.target, forged, tls, AGGREGATE_SQL)

    _step("8. The access log so far (what the auditors see):")
    log = AccessLog(access_log)
    for record in log.records():
        console.print(f"#{record.seq} {record.at[:19]} {record.event:<15} {record.department:<11} "
                      f"{record.decision:<8} {record.reason or '-':<22} rows={record.detail.get('rows', '-')}")
    problems = log.verify()
    log.close()
    console.print("hash chain intact" if not problems else f"[red]{problems}[/red]")
    ok = answered and refused and forged_refused and not problems
    console.print(Panel(f"demo {'finished' if ok else 'FAILED'} in {time.perf_counter() - started:.1f}s",
                        style="green" if ok else "red"))
    return 0 if ok else 1


def _department_queries(target: str, token: str, tls: ClientTls) -> tuple[bool, bool]:
    with BrokerClient(target, token=token, tls=tls) as client:
        _step(f"5. Xuanwu's Development and Reform Commission asks, under grant {GRANT}, for 2025 tax by "
              "street in manufacturing, IT and research:")
        console.print(Syntax(AGGREGATE_SQL, "sql", theme="ansi_dark", background_color="default"))
        result = client.query(GRANT, AGGREGATE_SQL)
        console.print("The guard bound the query to the caller's district and added the threshold:", style="dim")
        console.print(Syntax(result.rewritten_sql, "sql", theme="ansi_dark", word_wrap=True, background_color="default"))
        print_result(result, as_json=False)
        answered = bool(result.rows)

    _step("6. The same department tries to read one street's taxpayers row by row:")
    console.print(Syntax(RAW_SQL, "sql", theme="ansi_dark", background_color="default"))
    return answered, _refused(target, token, tls, RAW_SQL)


def _refused(target: str, token: str, tls: ClientTls, sql: str) -> bool:
    """Whether the broker refuses ``sql``; prints the refusal as a caller sees it."""
    with BrokerClient(target, token=token, tls=tls) as client:
        try:
            client.query(GRANT, sql)
        except DsbrokerError as error:
            where = ", ".join(f"{k}={v}" for k, v in error.metadata.items())
            console.print(f"refused: {error.code.name} {error.reason}: {error.message}" + (f" [{where}]" if where else ""))
            return True
    console.print("[red]the query was answered: this must not happen[/red]")
    return False


def _step(text: str) -> None:
    console.rule(style="dim")
    console.print(text, style="bold")
