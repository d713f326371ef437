"""``dsbroker policy``: lint and sign policy files here; list, show, suspend, resume and revoke them at the broker."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from broker.cli.common import reporting_errors
from broker.cli.workflow import add_policy_commands
from dsbroker.errors import DsbrokerError

@click.group()
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
    """Check policy files; print FILE:LINE: problem for each, exit 1 if any.

    Warnings (FILE:LINE: warning: ...) name what serves but weakens a protection, such as the dominance
    rule turned off, with the owner's reason; they do not fail the check."""
    import contextlib

    from dsbroker.policy.model import load_policy
    from broker.cli.policy_lint import data_problems, policy_problems, policy_warnings, sandbox_checker
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
            warnings = policy_warnings(loaded)
            for line, warning in warnings:
                click.echo(f"{file}:{line}: warning: {warning}", err=True)
            if problems:
                bad += 1
                continue
            checked = ", approvals verify" if trusted else ""
            checked += ", matches the sandbox's data" if checker is not None else ""
            checked += f", {len(warnings)} warning{'s' if len(warnings) > 1 else ''}" if warnings else ""
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


add_policy_commands(policy)
