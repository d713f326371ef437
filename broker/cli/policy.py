"""``dsbroker policy``: lint and sign policy files here; list, show, suspend, resume and revoke them at the broker."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from broker.cli.common import reporting_errors
from broker.cli.i18n import _
from broker.cli.translated import TranslatedGroup
from broker.cli.workflow import add_policy_commands
from dsbroker.errors import DsbrokerError

@click.group(cls=TranslatedGroup)
def policy() -> None:
    """Policies (grants): lint and sign files; list, show, suspend, resume and revoke them at the broker."""


@policy.command("lint")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--trust", type=click.Path(exists=True, dir_okay=False),
              help="also verify each file's approvals against this trust file (as the sandbox will)")
@click.option("--sandbox-config", type=click.Path(exists=True, dir_okay=False),
              help="also check the dataset, columns and lookups against the data of the sandbox configured "
                   "in this TOML file (its data and datasets), as the sandbox will")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object: each file's problems and warnings")
def policy_lint(files, trust, sandbox_config, as_json) -> None:
    """Check policy files; print FILE:LINE: problem for each, exit 7 if any.

    Warnings (FILE:LINE: warning: ...) name what serves but weakens a protection, such as the dominance
    rule turned off, with the owner's reason; they do not fail the check."""
    import contextlib

    from broker.cli.exit_codes import ExitCode
    from broker.cli.policy_lint import lint_file, sandbox_checker
    from dsbroker.policy.signing import Trust

    with contextlib.ExitStack() as stack:
        try:
            trusted = Trust.load(trust) if trust else None
            checker = stack.enter_context(sandbox_checker(sandbox_config)) if sandbox_config else None
        except DsbrokerError as error:
            if as_json:
                click.echo(json.dumps({"error": {"code": error.code_name, "reason": error.reason,
                                                 "message": error.message}}, ensure_ascii=False))
            else:
                click.echo(str(error), err=True)
            sys.exit(ExitCode.USAGE)  # the --trust or --sandbox-config given cannot be used
        reports = [lint_file(file, trusted, checker) for file in files]
    status = ExitCode.CHECK_FAILED if any(not r.ok for r in reports) else ExitCode.OK
    if as_json:
        click.echo(json.dumps({"ok": status == ExitCode.OK, "exit_code": int(status),
                               "files": [r.as_json() for r in reports]}, ensure_ascii=False))
        sys.exit(status)
    for report in reports:
        for line, to_stderr in report.lines():
            click.echo(line, err=to_stderr)
    sys.exit(status)


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
    click.echo(_("{file}: signed as {role} by {by} ({key_id})").format(file=out or file, role=role, by=signer,
                                                                        key_id=key_id))


add_policy_commands(policy)
