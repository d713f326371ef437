"""Both servers as real processes: the CLI answers as a table and as JSON, errors exit non-zero, SIGTERM is graceful."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.dev.launch import development_servers
from dsbroker.identity.tls import ClientTls, PeerCertificate, open_channel, thumbprint
from dsbroker.identity.tokens import JwksKeys, JwtAuthenticator
from tests.conftest import ANALYST, GRANT, POLICIES, dev_keys, signed_policies, token_for


@pytest.fixture(scope="module")
def servers(demo_db, tmp_path_factory):
    state = tmp_path_factory.mktemp("proc")
    with development_servers(data=demo_db, policies=signed_policies(), state=state, layout=dev_keys(),
                             client=ANALYST) as (sandbox, broker, _tls):
        yield sandbox, broker, state / "access-log.sqlite"
        assert broker.stop() == 0 and sandbox.stop() == 0, "servers must exit cleanly on SIGTERM"


def client_env(target: str) -> dict[str, str]:
    keys = dev_keys()
    return {**os.environ, "DSBROKER_BROKER": target, "DSBROKER_TOKEN": token_for(),
            "DSBROKER_CA": str(keys.platform_ca), "DSBROKER_CERT": str(keys.client_cert(ANALYST)),
            "DSBROKER_KEY": str(keys.client_key(ANALYST))}


def cli(broker, *args):
    return subprocess.run([sys.executable, "-m", "broker.cli.main", *args], capture_output=True, text=True,
                          env=client_env(broker.target))


def test_query_prints_json(servers):
    _, broker, _ = servers
    run = cli(broker, "query", "--grant", GRANT, "--json",
              "--sql", "SELECT street_code, COUNT(DISTINCT taxpayer_id) AS n FROM tax.declarations GROUP BY 1")
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert body["columns"] == ["street_code", "n"] and len(body["rows"]) == 7
    assert all(n >= 10 for _, n in body["rows"])


def test_query_prints_a_table(servers):
    _, broker, _ = servers
    run = cli(broker, "query", "--grant", GRANT, "--sql", "SELECT COUNT(*) AS declarations FROM tax.declarations")
    assert run.returncode == 0 and "declarations" in run.stdout and "access record" in " ".join(run.stdout.split())


def test_refusal_is_one_line_and_exits_non_zero(servers):
    _, broker, _ = servers
    run = cli(broker, "query", "--grant", GRANT, "--sql", "SELECT * FROM tax.declarations")
    assert run.returncode == 3 and "Traceback" not in run.stderr
    assert run.stderr.strip().count("\n") == 0 and "RAW_ROWS" in run.stderr
    run = cli(broker, "query", "--grant", GRANT, "--json", "--sql", "SELECT vat_paid FROM tax.declarations")
    assert json.loads(run.stdout)["error"] == {"code": "INVALID_ARGUMENT", "reason": "RAW_ROWS", "message": json.loads(
        run.stdout)["error"]["message"], "metadata": {"rule": "reject_raw_rows", "table": "tax.declarations"}}


def test_unreachable_broker_is_one_clear_line():
    run = subprocess.run([sys.executable, "-m", "broker.cli.main", "query", "--timeout",
                          "2", "--grant", GRANT, "--sql", "SELECT COUNT(*) FROM tax.declarations"],
                         capture_output=True, text=True, env=client_env("127.0.0.1:1"))
    assert run.returncode == 5 and run.stderr.startswith("error: UNAVAILABLE") and "Traceback" not in run.stderr


def test_audit_commands_read_and_verify_the_log(servers):
    _, broker, log = servers
    cli(broker, "query", "--grant", GRANT, "--sql", "SELECT COUNT(*) AS c FROM tax.declarations")
    listed = cli(broker, "audit", "list", "--log", str(log), "--json")
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert records and {"query.decision", "query.result"} <= {r["event"] for r in records}
    verified = cli(broker, "audit", "verify", "--log", str(log), "--pinned-key", str(log.with_suffix(".pub")))
    assert verified.returncode == 0 and "intact" in verified.stdout
    unpinned = cli(broker, "audit", "verify", "--log", str(log))
    assert unpinned.returncode == 8 and "NOT verified" in unpinned.stdout


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "broker.cli.main", *args], capture_output=True, text=True,
                          env=env or dict(os.environ))


def test_keys_init_writes_private_keys_for_the_owner_only_and_never_overwrites(tmp_path):
    keys = tmp_path / "keys"
    made = run_cli("keys", "init", "--dir", str(keys), "--client", "li", "--host", "broker.internal")
    assert made.returncode == 0, made.stderr
    assert 'jwks = "' in made.stdout and 'tls_client_ca = "' in made.stdout
    private = sorted(p.relative_to(keys).as_posix() for p in keys.rglob("*.key"))
    assert private == ["broker-to-sandbox.key", "broker.key", "clients/li.key", "idp/signing.key", "owner-ca.key",
                       "platform-ca.key", "sandbox.key", "signing/city-tax.key", "signing/xuanwu-tax.key"]
    assert all((keys / p).stat().st_mode & 0o077 == 0 for p in private)
    again = run_cli("keys", "init", "--dir", str(keys))
    assert again.returncode == 2 and "--force" in again.stderr and again.stderr.count("\n") == 1
    added = run_cli("keys", "client", "auditor-wang", "--dir", str(keys))
    assert added.returncode == 0 and (keys / "clients" / "auditor-wang.pem").exists()


def test_token_issue_prints_a_token_the_broker_accepts(tmp_path):
    keys = tmp_path / "keys"
    assert run_cli("keys", "init", "--dir", str(keys), "--client", "li").returncode == 0
    issued = run_cli("token", "issue", "--keys", str(keys), "--sub", "li", "--department", "xuanwu-fgw",
                     "--district", "320102", "--role", "requester", "--role", "auditor", "--ttl", "15m",
                     "--bind-cert", str(keys / "clients" / "li.pem"))
    assert issued.returncode == 0, issued.stderr
    verifier = JwtAuthenticator(JwksKeys(str(keys / "idp" / "jwks.json"), algorithms=("EdDSA",)),
                                issuer="dsbroker-dev-idp", audience="dsbroker")
    cert = PeerCertificate("li", thumbprint(x509.load_pem_x509_certificate((keys / "clients" / "li.pem").read_bytes())))
    principal = verifier.authenticate(issued.stdout.strip(), certificate=cert)
    assert principal.roles == {"requester", "auditor"} and principal.district == "320102"
    bad = run_cli("token", "issue", "--keys", str(keys), "--sub", "li", "--department", "d", "--district", "1",
                  "--role", "requester", "--ttl", "forever")
    assert bad.returncode == 2 and "duration" in bad.stderr and "Traceback" not in bad.stderr


def test_the_cli_needs_a_ca_or_an_explicit_plaintext(servers):
    _, broker, _ = servers
    env = {k: v for k, v in client_env(broker.target).items()
           if k not in ("DSBROKER_CA", "DSBROKER_CERT", "DSBROKER_KEY")}
    run = run_cli("query", "--grant", GRANT, "--sql", "SELECT COUNT(*) FROM tax.declarations", env=env)
    assert run.returncode == 2 and "--ca" in run.stderr
    run = run_cli("query", "--plaintext", "--timeout", "3", "--grant", GRANT, "--sql",
                  "SELECT COUNT(*) FROM tax.declarations", env=env)
    assert run.returncode == 5 and "UNAVAILABLE" in run.stderr and "Traceback" not in run.stderr


def test_a_refused_handshake_is_in_the_brokers_log(servers):
    _, broker, _ = servers
    keys = dev_keys()
    with open_channel(broker.target, tls=ClientTls(str(keys.platform_ca)), options=[]) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    deadline = time.monotonic() + 5
    while "PEER_DID_NOT_RETURN_A_CERTIFICATE" not in broker.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the refused handshake is not in the broker's log"
        time.sleep(0.05)


def test_policy_sign_then_lint_against_the_trust_file(tmp_path):
    keys = dev_keys()
    policy = tmp_path / "grant.yaml"
    policy.write_text((POLICIES / f"{GRANT}.yaml").read_text())
    unsigned = run_cli("policy", "lint", "--trust", str(keys.trust), str(policy))
    assert unsigned.returncode == 7 and "no approvals" in unsigned.stderr
    for name, role in (("xuanwu-tax", "reviewer"), ("city-tax", "owner")):
        signed = run_cli("policy", "sign", str(policy), "--key", str(keys.signer_key(name)), "--key-id", f"{name}-1",
                         "--role", role, "--by", name)
        assert signed.returncode == 0, signed.stderr
    assert run_cli("policy", "lint", "--trust", str(keys.trust), str(policy)).returncode == 0
    policy.write_text(policy.read_text().replace("min_entities: 10", "min_entities: 3"))
    tampered = run_cli("policy", "lint", "--trust", str(keys.trust), str(policy))
    assert tampered.returncode == 7 and "does not verify" in tampered.stderr and str(policy) in tampered.stderr


def test_the_state_the_servers_write_is_private(servers):
    # Configurations, server logs, the access log and its key, the sandbox's ledger: readable by their owner only.
    _, _, log_path = servers
    state = log_path.parent
    written = {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir() if p.is_file()}
    assert {"broker.toml", "sandbox.toml", "broker.log", "sandbox.log", "access-log.sqlite", "access-log.key",
            "sandbox-executions.sqlite", "broker-state.sqlite"} <= set(written)
    assert {name: oct(m) for name, m in written.items() if m != 0o600} == {}
