"""``dsbroker``: serve the broker or a sandbox, query, make demo data, lint policies, read the log."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from broker.cli.audit import audit
from broker.cli.common import client_options, client_tls, reporting_errors
from broker.cli.workflow import add_policy_commands, catalog, request, review
from dsbroker.errors import DsbrokerError
from broker.settings import BrokerSettings
from dsbroker.settings import load_settings
from sandbox.settings import SandboxSettings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", is_flag=True, help="log more (servers log to stderr)")
def main(verbose: bool) -> None:
    """dsbroker: privacy-preserving data sharing, usable but not visible (可用不可见).

    Departments query a data owner's tables under grants the owner approved; the guard checks and
    rewrites each query, the owner's sandbox runs it, and only aggregates come back.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _serve(running, port_file: str | None) -> None:
    if port_file:
        Path(port_file).write_text(str(running.port))
    click.echo(f"serving on port {running.port}; stop with Ctrl-C or SIGTERM", err=True)
    running.wait_for_signal()


@main.command()
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="broker TOML file")
@click.option("--listen", help="HOST:PORT to serve on (port 0 picks a free port)")
@click.option("--policies", type=click.Path(file_okay=False), help="directory of policy YAML files")
@click.option("--sandbox", help="sandbox address HOST:PORT")
@click.option("--access-log", help="SQLite file of the access log")
@click.option("--port-file", type=click.Path(dir_okay=False), help="write the bound port here once serving")
@reporting_errors
def serve(config, listen, policies, sandbox, access_log, port_file) -> None:
    """Run the broker."""
    from broker.server import start_broker

    settings = load_settings(BrokerSettings, config, listen=listen, policies=policies, sandbox=sandbox,
                             access_log=access_log)
    _serve(start_broker(settings), port_file)


@main.group("sandbox")
def sandbox_group() -> None:
    """The data owner's side."""


@sandbox_group.command("serve")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="sandbox TOML file")
@click.option("--listen", help="HOST:PORT to serve on (port 0 picks a free port)")
@click.option("--data", type=click.Path(dir_okay=False), help="DuckDB data file (opened read-only)")
@click.option("--port-file", type=click.Path(dir_okay=False), help="write the bound port here once serving")
@reporting_errors
def sandbox_serve(config, listen, data, port_file) -> None:
    """Run a sandbox beside the owner's data."""
    from sandbox.server import start_sandbox

    _serve(start_sandbox(load_settings(SandboxSettings, config, listen=listen, data=data)), port_file)


@main.command()
@client_options
@click.option("--grant", required=True, help="grant (policy) id to query under")
@click.option("--sql", required=True, help="one SELECT statement; '-' reads it from standard input")
@click.option("--timeout", default=60.0, show_default=True, help="deadline in seconds (the query's time limit)")
@click.option("--explain", is_flag=True,
              help="show the SQL that would run and what each guard rule did, without running it (still logged)")
@click.option("--encrypted", is_flag=True,
              help="have the cells encrypted under your key and decrypt them here: the broker and the wire see "
                   "only ciphertexts (the grant must list results: encrypted)")
@click.option("--encryption-key", type=click.Path(dir_okay=False), envvar="DSBROKER_ENCRYPTION_KEY",
              help="your encryption key, made on first use; keep it secret (its public half is FILE.pub) "
                   "[default: $XDG_CONFIG_HOME or ~/.config, then dsbroker/encryption-key.bfv]")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@reporting_errors
def query(broker, token, ca, cert, key, plaintext, grant, sql, timeout, explain, encrypted, encryption_key,
          as_json) -> None:
    """Run one aggregate query under a grant and print the released cells."""
    from broker.cli.output import print_explanation, print_result
    from broker.client.sdk import BrokerClient

    if sql == "-":
        sql = sys.stdin.read()
    if encryption_key and not encrypted:
        raise click.UsageError("--encryption-key is for --encrypted queries")
    with BrokerClient(broker, token=token, tls=client_tls(ca, cert, key, plaintext), timeout=timeout) as client:
        if explain:
            print_explanation(client.explain(grant, sql, encrypted=encrypted), as_json=as_json)
        else:
            keys = _encryption_key(encryption_key) if encrypted else None
            print_result(client.query(grant, sql, encryption_key=keys), as_json=as_json)


def _encryption_key(path: str | None):
    """The requester's encryption key at ``path`` (or the default place), made and announced if new."""
    from broker.client.encryption_key import DEFAULT_PATH, EncryptionKey

    key, made = EncryptionKey.load_or_create(path or DEFAULT_PATH)
    if made:
        click.echo(f"made a new encryption key {path or DEFAULT_PATH} (key id {key.key_id}); keep it secret: only it "
                   "decrypts your encrypted results", err=True)
    return key


@main.group()
def data() -> None:
    """Demo data."""


@data.command("make")
@click.option("--out", default=".cache/demo/demo-tax.duckdb", show_default=True, type=click.Path(dir_okay=False))
@click.option("--taxpayers", default=20_000, show_default=True, help="number of taxpayers")
@click.option("--months", default=24, show_default=True, help="months of declarations")
@click.option("--seed", default=20261121, show_default=True, help="random seed")
def data_make(out, taxpayers, months, seed) -> None:
    """Write a DuckDB file of synthetic (realistic, not real) tax records."""
    from sandbox.demo.data import make_demo_data

    counts = make_demo_data(out, taxpayers=taxpayers, months=months, seed=seed,
                            progress=lambda message: click.echo(message, err=True))
    click.echo(json.dumps(counts))


@main.group()
def policy() -> None:
    """Policies (grants): lint and sign files; list, show, suspend, resume and revoke them at the broker."""


@policy.command("lint")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--trust", type=click.Path(exists=True, dir_okay=False),
              help="also verify each file's approvals against this trust file (as the sandbox will)")
@click.option("--sandbox-config", type=click.Path(exists=True, dir_okay=False),
              help="also check the dataset, columns and lookups against the data of the sandbox configured "
                   "in this TOML file (its data and datasets), as the sandbox will")
def policy_lint(files, trust, sandbox_config) -> None:
    """Check policy files; print FILE:LINE: problem for each, exit 1 if any."""
    import contextlib

    from dsbroker.policy.model import load_policy
    from broker.cli.policy_lint import data_problems, policy_problems, sandbox_checker
    from dsbroker.policy.signing import Trust, verify_policy

    with contextlib.ExitStack() as stack:
        try:
            trusted = Trust.load(trust) if trust else None
            checker = stack.enter_context(sandbox_checker(sandbox_config)) if sandbox_config else None
        except DsbrokerError as error:
            click.echo(str(error), err=True)
            sys.exit(2)
        bad = 0
        for file in files:
            try:
                loaded = load_policy(file)
                if trusted is not None:
                    verify_policy(loaded.document, trusted, source=file)
                problems = policy_problems(loaded) + (data_problems(loaded, checker) if checker is not None else [])
            except DsbrokerError as error:
                bad += 1
                click.echo(str(error) if error.message.startswith(file) else f"{file}: {error.message}", err=True)
                continue
            for line, problem in problems:
                click.echo(f"{file}:{line}: {problem}", err=True)
            if problems:
                bad += 1
                continue
            checked = ", approvals verify" if trusted else ""
            checked += ", matches the sandbox's data" if checker is not None else ""
            click.echo(f"{file}: ok ({loaded.id} v{loaded.version}{checked})")
    sys.exit(1 if bad else 0)


@policy.command("sign")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="your Ed25519 private key (PEM)")
@click.option("--key-id", required=True, help="the id of that key in the owner's trust file")
@click.option("--role", required=True, type=click.Choice(["reviewer", "owner"]), help="the role you sign in")
@click.option("--by", "signer", required=True, help="who signs, e.g. city-tax")
@click.option("--out", type=click.Path(dir_okay=False), help="write here instead of replacing FILE")
@reporting_errors
def policy_sign(file, key_path, key_id, role, signer, out) -> None:
    """Approve a policy: append your Ed25519 signature over its body to its approvals."""
    from dsbroker.private_files import load_private_key
    from dsbroker.policy.signing import sign_policy

    text = Path(file).read_text(encoding="utf-8")
    signed = sign_policy(text, load_private_key(key_path), key_id=key_id, role=role, by=signer)
    Path(out or file).write_text(signed, encoding="utf-8")
    click.echo(f"{out or file}: signed as {role} by {signer} ({key_id})")


@main.group()
def keys() -> None:
    """Development keys: certificate authorities, certificates, the identity provider's key."""


@keys.command("init")
@click.option("--dir", "directory", default="keys", show_default=True, type=click.Path(file_okay=False),
              help="where to write the keys")
@click.option("--host", "hosts", multiple=True, help="extra host name or IP for the server certificates (repeatable)")
@click.option("--client", "clients", multiple=True, help="issue a client certificate with this name (repeatable)")
@click.option("--force", is_flag=True, help="replace existing keys")
@reporting_errors
def keys_init(directory, hosts, clients, force) -> None:
    """Create a development platform CA and owner CA, the broker's and sandbox's certificates, client
    certificates, and an identity provider signing key with its JWKS. Private keys are mode 0600.
    For development and tests; production uses the organisations' own CAs and identity provider."""
    from broker.dev.keys import broker_settings, init_keys, sandbox_settings, to_toml

    layout = init_keys(directory, hosts=tuple(hosts), clients=tuple(clients), force=force)
    click.echo(f"keys written to {layout.root}/")
    click.echo(f"\n# broker TOML (add policies, access_log, sandbox):\n{to_toml(broker_settings(layout))}")
    click.echo(f"# sandbox TOML (add data, and datasets: the tables it serves):\n{to_toml(sandbox_settings(layout))}")
    click.echo(f"# issue a token: dsbroker token issue --keys {layout.root} --sub ... --department ... "
               "--district ... --role requester")


@keys.command("client")
@click.argument("name")
@click.option("--dir", "directory", default="keys", show_default=True, type=click.Path(file_okay=False))
@reporting_errors
def keys_client(name, directory) -> None:
    """Issue a client certificate NAME (its CN) from the development platform CA."""
    from broker.dev.keys import KeyLayout, issue_client_certificate

    cert, key = issue_client_certificate(KeyLayout(directory), name)
    click.echo(f"{cert}\n{key}")


@main.group()
def token() -> None:
    """Caller tokens."""


@token.command("issue")
@click.option("--keys", "directory", default="keys", show_default=True, type=click.Path(file_okay=False),
              help="keys directory made by 'dsbroker keys init' (its identity provider key signs)")
@click.option("--sub", required=True, help="the caller (a person or a system)")
@click.option("--department", required=True, help="department id, e.g. xuanwu-fgw")
@click.option("--district", required=True, help="district code, e.g. 320102")
@click.option("--role", "roles", multiple=True, required=True,
              type=click.Choice(["requester", "reviewer", "owner", "auditor"]), help="a role (repeatable)")
@click.option("--ttl", default="8h", show_default=True, help="lifetime: 90s, 15m, 8h, 7d")
@click.option("--bind-cert", type=click.Path(exists=True, dir_okay=False),
              help="bind the token to this client certificate (RFC 8705 cnf x5t#S256)")
@reporting_errors
def token_issue(directory, sub, department, district, roles, ttl, bind_cert) -> None:
    """Print a JWT signed by the development identity provider."""
    from cryptography import x509

    from broker.dev.keys import DEV_AUDIENCE, DEV_ISSUER, IDP_KEY_ID, KeyLayout, load_private_key
    from dsbroker.identity.tls import thumbprint
    from dsbroker.identity.tokens import issue_token, parse_duration

    layout = KeyLayout(directory)
    thumb = thumbprint(x509.load_pem_x509_certificate(Path(bind_cert).read_bytes())) if bind_cert else None
    click.echo(issue_token(load_private_key(layout.idp_key), key_id=IDP_KEY_ID, issuer=DEV_ISSUER,
                           audience=DEV_AUDIENCE, subject=sub, department=department, district=district,
                           roles=roles, ttl=parse_duration(ttl), certificate_thumbprint=thumb))


@main.command()
@click.option("--cache-dir", default=".cache/demo", show_default=True, type=click.Path(file_okay=False),
              help="where the demo data and state live")
@click.option("--taxpayers", default=20_000, show_default=True, help="taxpayers in the demo data")
def demo(cache_dir, taxpayers) -> None:
    """Walk the flow: data, sandbox, broker, an answered query, a refused one, the access log."""
    from broker.dev.demo import run_demo

    sys.exit(run_demo(Path(cache_dir), taxpayers=taxpayers))


main.add_command(catalog)
main.add_command(request)
main.add_command(review)
main.add_command(audit)
add_policy_commands(policy)

if __name__ == "__main__":
    main()
