"""``dsbroker catalog|request|review`` and the broker-side ``policy`` commands: the 1+1+1 workflow from a terminal."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import click

from broker.cli.common import client_options, client_tls, reporting_errors
from broker.cli.i18n import _
from broker.cli.translated import TranslatedGroup
from dsbroker.errors import ConfigError

STATES = ("submitted", "reviewed", "active", "rejected", "withdrawn", "suspended", "revoked", "expired", "exhausted")
# What catalog draft read the columns from.
ENGINE_NAMES = {"duckdb": "DuckDB file", "postgres": "PostgreSQL database", "spark": "Spark session"}
REQUEST_KEYS = {"purpose", "dataset", "columns", "products", "example_queries", "result_modes", "valid_from",
                "valid_until", "queries_per_day", "queries_total"}


def _client(broker, token, ca, cert, key, plaintext):
    from broker.client.sdk import BrokerClient

    return BrokerClient(broker, token=token, tls=client_tls(ca, cert, key, plaintext))


# -- catalog -------------------------------------------------------------------------------------

@click.group(cls=TranslatedGroup)
def catalog() -> None:
    """The owners' catalog (数据目录): datasets and their columns, never values."""


@catalog.command("list")
@client_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@reporting_errors
def catalog_list(broker, token, ca, cert, key, plaintext, as_json) -> None:
    """List the datasets a department may ask for."""
    from broker.cli.output import print_datasets

    with _client(broker, token, ca, cert, key, plaintext) as client:
        print_datasets(client.datasets(), as_json=as_json)


@catalog.command("show")
@click.argument("dataset")
@client_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@reporting_errors
def catalog_show(dataset, broker, token, ca, cert, key, plaintext, as_json) -> None:
    """Describe DATASET (schema.table): columns, types, units, classification, requestable levels."""
    from broker.cli.output import print_dataset

    with _client(broker, token, ca, cert, key, plaintext) as client:
        print_dataset(client.dataset(dataset), as_json=as_json)


@catalog.command("draft")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), required=True,
              help="the sandbox's TOML file: its engine (a DuckDB data file, or postgres_dsn) and datasets")
@click.option("--dataset", "datasets", multiple=True, help="a served dataset to draft (repeatable; default: every one)")
@click.option("--out", type=click.Path(dir_okay=False), help="write the draft here (default: standard output)")
@click.option("--force", is_flag=True, help="overwrite --out if it exists")
@reporting_errors
def catalog_draft(config, datasets, out, force) -> None:
    """Draft the owner's catalog from the served tables' columns, read from the sandbox's engine (DuckDB or
    PostgreSQL, opened locked down as the sandbox opens it).

    Every title, description, entity, classification and levels is left as a TODO placeholder for the owner
    to fill in; the sandbox refuses a catalog while one is left. Then set catalog to the file.
    """
    from dsbroker.settings import load_settings
    from sandbox.catalog_draft import draft_catalog
    from sandbox.engine.configured import serving_engine
    from sandbox.settings import SandboxSettings

    settings = load_settings(SandboxSettings, config)
    unknown = sorted(set(datasets) - set(settings.datasets))
    if unknown:
        raise ConfigError(f"not datasets of {config}: {', '.join(unknown)}")
    if out and Path(out).exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    with serving_engine(settings, config) as engine:
        text = draft_catalog(datasets or settings.datasets, engine.columns,
                             source=f"{ENGINE_NAMES[settings.engine]} {engine.name}")
    if out:
        Path(out).write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}: replace every TODO, then set catalog = {json.dumps(out)} in {config}", err=True)
    else:
        click.echo(text, nl=False)


# -- requests ------------------------------------------------------------------------------------

@click.group(cls=TranslatedGroup)
def request() -> None:
    """Access requests: what a department asks of a dataset, and why."""


@request.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@client_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@reporting_errors
def request_submit(file, broker, token, ca, cert, key, plaintext, as_json) -> None:
    """Submit the access request described in FILE (YAML; see examples/request.yaml)."""
    from broker.cli.output import print_request

    with _client(broker, token, ca, cert, key, plaintext) as client:
        print_request(client.submit_request(read_request_file(file)), as_json=as_json)


@request.command("list")
@client_options
@click.option("--state", type=click.Choice(STATES), help="only requests in this state")
@click.option("--page-size", default=50, show_default=True, help="requests per page")
@click.option("--page-token", default="", help="the token printed under the previous page")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@reporting_errors
def request_list(broker, token, ca, cert, key, plaintext, state, page_size, page_token, as_json) -> None:
    """List the requests you may see, newest first."""
    _list_requests(_client(broker, token, ca, cert, key, plaintext), state, page_size, page_token, as_json)


@request.command("show")
@click.argument("name")
@client_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@reporting_errors
def request_show(name, broker, token, ca, cert, key, plaintext, as_json) -> None:
    """Show one request (NAME: req-… or accessRequests/req-…), with its drafted policy."""
    from broker.cli.output import print_request

    with _client(broker, token, ca, cert, key, plaintext) as client:
        print_request(client.get_request(name), as_json=as_json, full=True)


@request.command("withdraw")
@click.argument("name")
@client_options
@click.option("--reason", default="", help="why (optional)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@reporting_errors
def request_withdraw(name, broker, token, ca, cert, key, plaintext, reason, as_json) -> None:
    """Withdraw a request that is not yet active."""
    from broker.cli.output import print_request

    with _client(broker, token, ca, cert, key, plaintext) as client:
        print_request(client.withdraw_request(name, reason=reason), as_json=as_json)


# -- review --------------------------------------------------------------------------------------

@click.group(cls=TranslatedGroup)
def review() -> None:
    """Review access requests: the district reviewer first, then the owner, who signs the policy."""


@review.command("list")
@client_options
@click.option("--state", type=click.Choice(STATES), help="requests in this state (default: submitted and reviewed)")
@click.option("--page-size", default=50, show_default=True, help="requests per page")
@click.option("--page-token", default="", help="the token printed under the previous page")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@reporting_errors
def review_list(broker, token, ca, cert, key, plaintext, state, page_size, page_token, as_json) -> None:
    """List requests awaiting review (those you may see)."""
    client = _client(broker, token, ca, cert, key, plaintext)
    if state:
        _list_requests(client, state, page_size, page_token, as_json)
        return
    from broker.cli.output import print_requests

    with client:
        pending = []
        for wanted in ("submitted", "reviewed"):
            page, _ = client.list_requests(state=_state_value(wanted), page_size=page_size)
            pending += page
        print_requests(sorted(pending, key=lambda r: r.create_time.ToDatetime()), "", as_json=as_json)


@review.command("show")
@click.argument("name")
@client_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@reporting_errors
def review_show(name, broker, token, ca, cert, key, plaintext, as_json) -> None:
    """Show everything a reviewer needs: purpose, columns, the draft policy, and what the guard makes
    of each example query (a dry run: nothing is executed)."""
    from broker.cli.output import print_request

    with _client(broker, token, ca, cert, key, plaintext) as client:
        print_request(client.get_request(name), as_json=as_json, full=True)


@review.command("approve")
@click.argument("name")
@client_options
@click.option("--signing-key", envvar="DSBROKER_SIGNING_KEY", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="your Ed25519 private key (PEM); it never leaves this machine [env DSBROKER_SIGNING_KEY]")
@click.option("--key-id", envvar="DSBROKER_SIGNING_KEY_ID", required=True,
              help="the id of that key in the owner's trust file [env DSBROKER_SIGNING_KEY_ID]")
@click.option("--by", "signer", envvar="DSBROKER_SIGNER",
              help="your organisation as the trust file names it (default: the department in your token) "
                   "[env DSBROKER_SIGNER]")
@click.option("--drop-column", "drop_columns", multiple=True, help="owner: leave this column out (repeatable)")
@click.option("--min-entities", type=int, help="owner: raise the threshold of distinct entities per cell")
@click.option("--valid-until", type=click.DateTime(formats=["%Y-%m-%d"]), help="owner: end validity earlier")
@click.option("--queries-per-day", type=int, help="owner: lower the daily quota")
@click.option("--queries-total", type=int, help="owner: lower (or set) the total quota")
@click.option("--comment", default="", help="a remark for the record")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@reporting_errors
def review_approve(name, broker, token, ca, cert, key, plaintext, signing_key, key_id, signer, drop_columns,
                   min_entities, valid_until, queries_per_day, queries_total, comment, as_json) -> None:
    """Approve NAME at its current stage: sign its drafted policy (the owner may narrow it first) here,
    with your own key, and send only the signature."""
    from broker.client.approving import Narrowing, sign_approval
    from broker.cli.output import print_request
    from dsbroker.private_files import load_private_key

    narrowing = Narrowing(drop_columns=tuple(drop_columns), min_entities=min_entities,
                          valid_until=valid_until.date() if valid_until else None, queries_per_day=queries_per_day,
                          queries_total=queries_total)
    with _client(broker, token, ca, cert, key, plaintext) as client:
        current = client.get_request(name)
        stages, done = list(current.approval_stages), len(current.approvals)
        if done >= len(stages):
            raise ConfigError(_("{name} has every approval it needs").format(name=current.name))
        role = stages[done]
        if narrowing != Narrowing() and role != "owner":
            raise ConfigError(_("only the owner narrows a request; the reviewer signs the draft as it is"))
        try:
            document = sign_approval(current, load_private_key(signing_key), key_id=key_id, role=role,
                                     by=signer or _token_department(token), narrowing=narrowing)
        except ValueError as error:
            raise ConfigError(f"cannot narrow: {error}") from None
        print_request(client.approve_request(name, document, comment=comment), as_json=as_json)


@review.command("reject")
@click.argument("name")
@client_options
@click.option("--reason", required=True, help="why the request is rejected (required)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@reporting_errors
def review_reject(name, broker, token, ca, cert, key, plaintext, reason, as_json) -> None:
    """Reject NAME with a reason."""
    from broker.cli.output import print_request

    with _client(broker, token, ca, cert, key, plaintext) as client:
        print_request(client.reject_request(name, reason=reason), as_json=as_json)


# -- policies at the broker ----------------------------------------------------------------------

def add_policy_commands(policy: click.Group) -> None:
    """Add list, show, suspend, resume and (signed) revoke to the ``policy`` group."""

    @policy.command("list")
    @client_options
    @click.option("--page-size", default=50, show_default=True, help="policies per page")
    @click.option("--page-token", default="", help="the token printed under the previous page")
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    @reporting_errors
    def policy_list(broker, token, ca, cert, key, plaintext, page_size, page_token, as_json) -> None:
        """List the policies the broker serves (those you may see) and where each stands."""
        from broker.cli.output import print_policies

        with _client(broker, token, ca, cert, key, plaintext) as client:
            print_policies(*client.list_policies(page_size=page_size, page_token=page_token), as_json=as_json)

    @policy.command("show")
    @click.argument("name")
    @client_options
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    @reporting_errors
    def policy_show(name, broker, token, ca, cert, key, plaintext, as_json) -> None:
        """Show one policy and its signed document."""
        from broker.cli.output import print_policy

        with _client(broker, token, ca, cert, key, plaintext) as client:
            print_policy(client.get_policy(name), as_json=as_json)

    for action, needs_reason, summary in (("suspend", True, "Suspend a policy at the broker: queries are refused "
                                                            "until it is resumed."),
                                          ("resume", False, "Resume a suspended policy.")):
        _add_change(policy, action, needs_reason, summary)

    @policy.command("revoke")
    @click.argument("name")
    @client_options
    @click.option("--reason", required=True, help="why (required; it is part of what you sign)")
    @click.option("--signing-key", envvar="DSBROKER_SIGNING_KEY", required=True,
                  type=click.Path(exists=True, dir_okay=False),
                  help="your Ed25519 private key (PEM); it never leaves this machine [env DSBROKER_SIGNING_KEY]")
    @click.option("--key-id", envvar="DSBROKER_SIGNING_KEY_ID", required=True,
                  help="the id of that key in the owner's trust file [env DSBROKER_SIGNING_KEY_ID]")
    @click.option("--by", "signer", envvar="DSBROKER_SIGNER",
                  help="your organisation as the trust file names it (default: the department in your token) "
                       "[env DSBROKER_SIGNER]")
    @click.option("--through-version", type=click.IntRange(min=1),
                  help="revoke versions up to and including this one only (default: every version, for good)")
    @click.option("--out", type=click.Path(dir_okay=False),
                  help="also write the signed statement to this file (written before it is sent), to hand to a "
                       "sandbox's statements directory directly")
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    @reporting_errors
    def policy_revoke(name, broker, token, ca, cert, key, plaintext, reason, signing_key, key_id, signer,
                      through_version, out, as_json) -> None:
        """Revoke a policy (owner role): sign a revocation here with your key, and send it. The broker keeps it
        and hands it to every sandbox, which refuses the policy from then on, whatever the broker does later."""
        from broker.cli.output import print_policy
        from dsbroker.private_files import load_private_key
        from dsbroker.policy.statements import sign_revocation

        policy_id = name.removeprefix("policies/")
        statement = sign_revocation(load_private_key(signing_key), key_id=key_id, by=signer or _token_department(token),
                                    policy_id=policy_id, reason=reason, through_version=through_version)
        if out:
            Path(out).write_text(statement + "\n", encoding="utf-8")
            click.echo(_("{out}: revocation of {policy} signed by {by} ({key_id})").format(
                out=out, policy=policy_id, by=signer or _token_department(token), key_id=key_id), err=True)
        with _client(broker, token, ca, cert, key, plaintext) as client:
            answer = client.revoke_policy(policy_id, statement)
        print_policy(answer.policy, as_json=as_json)
        if not as_json:
            click.echo(_("sandboxes that kept the revocation: {names}").format(
                names=", ".join(answer.sandboxes_notified) or _("none")))


def _add_change(policy: click.Group, action: str, needs_reason: bool, summary: str) -> None:
    @policy.command(action, help=f"{summary} (owner role)")
    @click.argument("name")
    @client_options
    @click.option("--reason", **({"required": True} if needs_reason else {"default": ""}),
                  help="why" + (" (required)" if needs_reason else ""))
    @click.option("--json", "as_json", is_flag=True, help="print JSON")
    @reporting_errors
    def change(name, broker, token, ca, cert, key, plaintext, reason, as_json) -> None:
        from broker.cli.output import print_policy

        with _client(broker, token, ca, cert, key, plaintext) as client:
            print_policy(client.change_policy(name, action, reason=reason), as_json=as_json)


# -- helpers -------------------------------------------------------------------------------------

def read_request_file(path: str):
    """An AccessRequest message from a request YAML file; ConfigError naming the file and key when wrong."""
    import yaml

    from broker.v1 import access_request_service_pb2 as pb

    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read the request ({error.__class__.__name__})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: a request is a mapping of keys to values")
    unknown = set(document) - REQUEST_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} "
                          f"(allowed: {', '.join(sorted(REQUEST_KEYS))})")
    uses = {"group": pb.COLUMN_USE_GROUP, "filter": pb.COLUMN_USE_FILTER, "measure": pb.COLUMN_USE_MEASURE}
    columns = []
    for index, entry in enumerate(document.get("columns") or []):
        if not isinstance(entry, dict) or set(entry) - {"column", "use", "reason"}:
            raise ConfigError(f"{path}: columns[{index}] must be {{column, use, reason}}")
        if entry.get("use") not in uses:
            raise ConfigError(f"{path}: columns[{index}].use must be one of {', '.join(uses)}")
        columns.append(pb.RequestedColumn(column=str(entry.get("column", "")), use=uses[entry["use"]],
                                          reason=str(entry.get("reason", ""))))

    def date(key: str) -> str:
        value = document.get(key, "")
        return value.isoformat() if isinstance(value, dt.date) else str(value)
    try:
        return pb.AccessRequest(
            purpose=str(document.get("purpose", "")), dataset=str(document.get("dataset", "")), columns=columns,
            example_queries=[str(q) for q in document.get("example_queries") or []],
            products=[str(p) for p in document.get("products") or []],
            result_modes=[str(m) for m in document.get("result_modes") or ["aggregate"]],
            valid_from=date("valid_from"), valid_until=date("valid_until"),
            queries_per_day=int(document.get("queries_per_day") or 0),
            queries_total=int(document.get("queries_total") or 0))
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: queries_per_day and queries_total must be whole numbers") from None


def _list_requests(client, state, page_size, page_token, as_json) -> None:
    from broker.cli.output import print_requests

    with client:
        page, token = client.list_requests(state=_state_value(state) if state else 0, page_size=page_size,
                                           page_token=page_token)
        print_requests(page, token, as_json=as_json)


def _state_value(state: str) -> int:
    from broker.v1 import access_request_service_pb2 as pb

    return pb.AccessRequestState.Value(f"ACCESS_REQUEST_STATE_{state.upper()}")


def _token_department(token: str | None) -> str:
    """The department claim of the caller's own token (read, not verified: the broker verifies)."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["department"]
    except (AttributeError, IndexError, KeyError, ValueError):
        raise ConfigError(_("pass --by (your organisation as the trust file names it)")) from None
