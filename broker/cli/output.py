"""How the CLI prints results and errors: a readable table, or JSON with --json."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from broker.client.sdk import QueryResult
from dsbroker.errors import DsbrokerError

console = Console()


def print_result(result: QueryResult, *, as_json: bool) -> None:
    """Print a query result as a table (with what disclosure control did), or as JSON."""
    if as_json:
        click.echo(json.dumps(result.as_json(), ensure_ascii=False))
        return
    table = Table(show_lines=False, header_style="bold")
    for name in result.columns:
        table.add_column(name, justify="left")
    left_out = (result.encryption or {}).get("partitions_withheld") or []
    if any(left_out):
        table.add_column("partitions left out", justify="right", style="dim")
    for r, row in enumerate(result.rows):
        cells = ["x" if (r, c) in result.withheld else "(all)" if (r, c) in result.rolled_up else _cell(v)
                 for c, v in enumerate(row)]
        table.add_row(*cells, *([str(left_out[r]) if left_out[r] else ""] if any(left_out) else []))
    console.print(table)
    notes = [f"{len(result.rows)} row(s)"] + [r["description"] for r in result.disclosure_rules]
    if result.encryption:
        partitions = result.encryption["partitions"]
        notes.append(f"decrypted here with key {result.encryption['key_id'][:19]}…"
                     + (f", the sum of {partitions} partitions" if partitions > 1 else ""))
    if result.withheld:
        notes.append("x: withheld by disclosure control")
    if result.truncated:
        notes.append("truncated at the grant's cap on groups")
    notes.append(f"access record #{result.access_record}")
    console.print("; ".join(notes), style="dim")


def print_explanation(explanation, *, as_json: bool) -> None:
    """What the guard makes of a query: the SQL that would run, each rule's part, the disclosure rules."""
    if as_json:
        click.echo(json.dumps(_json(explanation), ensure_ascii=False))
        return
    from broker.v1 import query_service_pb2 as pb

    console.print("SQL the sandbox would run:", style="bold")
    click.echo(explanation.rewritten_sql)  # unwrapped, to copy
    if explanation.release_plan:
        console.print("computed from the cells it releases, after disclosure control:", style="bold")
        click.echo(explanation.release_plan)
    table = Table(header_style="bold", title="guard rules, in order")
    for name in ("rule", "did", "what it is for"):
        table.add_column(name)
    for step in explanation.steps:
        table.add_row(step.rule, pb.GuardStep.Action.Name(step.action).removeprefix("ACTION_").lower(), step.summary)
    console.print(table)
    notes = [rule.description for rule in explanation.disclosure_rules]
    notes.append(f"at most {explanation.max_groups:,} groups")
    if explanation.lookup_tables:
        notes.append("joins " + ", ".join(explanation.lookup_tables))
    notes.append(f"nothing was run; access record #{explanation.access_record.removeprefix('accessRecords/')}")
    console.print("; ".join(notes), style="dim")


def fail(error: DsbrokerError, *, as_json: bool) -> None:
    """Print one clear line (or a JSON error object) and exit non-zero."""
    code = error.code.name if hasattr(error.code, "name") else str(error.code)
    if as_json:
        click.echo(json.dumps({"error": {"code": code, "reason": error.reason, "message": error.message,
                                         "metadata": error.metadata}}, ensure_ascii=False))
    else:
        where = ", ".join(f"{k}={v}" for k, v in error.metadata.items() if k in ("rule", "table", "column"))
        click.echo(f"error: {code} {error.reason}: {error.message}" + (f" [{where}]" if where else ""), err=True)
    sys.exit(2 if code in ("INVALID_ARGUMENT", "PERMISSION_DENIED", "NOT_FOUND", "FAILED_PRECONDITION") else 1)


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _json(message) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def _state(value: int) -> str:
    from broker.v1 import access_request_service_pb2 as pb

    return pb.AccessRequestState.Name(value).removeprefix("ACCESS_REQUEST_STATE_").lower()


def _policy_state(value: int) -> str:
    from broker.v1 import policy_service_pb2 as pb

    return pb.PolicyState.Name(value).removeprefix("POLICY_STATE_").lower()


def _next_page(token: str) -> None:
    if token:
        console.print(f"more: --page-token {token}", style="dim")


def print_datasets(datasets, *, as_json: bool) -> None:
    """The catalog as a table (or JSON)."""
    if as_json:
        click.echo(json.dumps([_json(d) for d in datasets], ensure_ascii=False))
        return
    table = Table(header_style="bold")
    for name in ("dataset", "title", "columns", "requestable", "approvals"):
        table.add_column(name, overflow="fold")
    for d in datasets:
        table.add_row(d.name, d.title, str(len(d.columns)), str(sum(1 for c in d.columns if c.levels)),
                      " → ".join(d.approval_stages))
    console.print(table)


def print_dataset(dataset, *, as_json: bool) -> None:
    """One dataset's description."""
    if as_json:
        click.echo(json.dumps(_json(dataset), ensure_ascii=False))
        return
    console.print(f"[bold]{dataset.name}[/bold]  {dataset.title}")
    if dataset.description:
        console.print(dataset.description)
    console.print(f"entity (privacy unit): {dataset.entity_column or '—'};  at least {dataset.min_entities} per cell;  "
                  f"row filter: {dataset.row_filter or 'none'};  approvals: {' → '.join(dataset.approval_stages)}")
    table = Table(header_style="bold")
    for name in ("column", "type", "unit", "classification", "may be requested for", "description"):
        table.add_column(name, overflow="fold")
    for c in dataset.columns:
        table.add_row(c.name, c.type, c.unit, c.classification, ", ".join(c.levels) or "—", c.description)
    console.print(table)
    for product in dataset.products:  # the owner's data products (dsbroker product show NAME --grant G for one)
        console.print(f"data product {product.name} v{product.version}: {product.title_zh} / {product.title_en}",
                      soft_wrap=True)


def print_requests(requests, token: str, *, as_json: bool) -> None:
    """A page of access requests."""
    if as_json:
        click.echo(json.dumps({"access_requests": [_json(r) for r in requests], "next_page_token": token},
                              ensure_ascii=False))
        return
    table = Table(header_style="bold")
    for name in ("request", "state", "department", "dataset", "submitted", "purpose"):
        table.add_column(name, overflow="fold", no_wrap=name in ("request", "state"))
    for r in requests:
        table.add_row(r.name.removeprefix("accessRequests/"), _state(r.state), r.department, r.dataset,
                      r.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M"), r.purpose[:60])
    console.print(table)
    _next_page(token)


def print_request(request, *, as_json: bool, full: bool = False) -> None:
    """One access request; ``full`` adds columns, approvals, the draft policy and the guard's dry runs."""
    if as_json:
        click.echo(json.dumps(_json(request), ensure_ascii=False))
        return
    stages = list(request.approval_stages)
    console.print(f"[bold]{request.name.removeprefix('accessRequests/')}[/bold]  {_state(request.state)}"
                  + (f"  → {request.policy.removeprefix('policies/')}" if request.policy else "")
                  + (f"  ({request.state_reason})" if request.state_reason else ""))
    console.print(f"{request.department} ({request.district}), by {request.requester}: {request.purpose}")
    done = len(request.approvals)
    if done < len(stages) and _state(request.state) in ("submitted", "reviewed"):
        console.print(f"awaiting: {stages[done]} (stage {done + 1} of {len(stages)})", style="yellow")
    if not full:
        return
    console.print(f"dataset {request.dataset}; valid {request.valid_from} to {request.valid_until}; "
                  f"{request.queries_per_day} queries a day" +
                  (f", {request.queries_total} in all" if request.queries_total else ""))
    table = Table(header_style="bold", title="columns asked for")
    for name in ("column", "use", "why"):
        table.add_column(name, overflow="fold")
    from broker.v1 import access_request_service_pb2 as pb

    for c in request.columns:
        table.add_row(c.column, pb.ColumnUse.Name(c.use).removeprefix("COLUMN_USE_").lower(), c.reason)
    console.print(table)
    for a in request.approvals:
        console.print(f"approved as {a.role} by {a.by} ({a.subject}) at {a.signed_at}"
                      + (f": {a.comment}" if a.comment else ""), style="green")
    for check in request.example_checks:
        if check.accepted:
            console.print(f"[green]accepted[/green]  {check.sql}\n          runs as: {check.rewritten_sql}")
        else:
            console.print(f"[red]refused[/red]   {check.sql}\n          {check.reason}: {check.message}")
    if not request.example_checks and request.example_queries:
        console.print("example queries:\n  " + "\n  ".join(request.example_queries))
    console.rule("drafted policy (the body approvers sign)")
    click.echo(request.draft_policy.rstrip())
    _print_dominance_waiver(request.draft_policy)


def print_policies(policies, token: str, *, as_json: bool) -> None:
    """A page of policies and their states."""
    if as_json:
        click.echo(json.dumps({"policies": [_json(p) for p in policies], "next_page_token": token},
                              ensure_ascii=False))
        return
    table = Table(header_style="bold")
    for name in ("policy", "state", "department", "dataset", "valid"):
        table.add_column(name, overflow="fold", no_wrap=name == "policy")
    for p in policies:
        table.add_row(f"{p.name.removeprefix('policies/')} v{p.version}", _policy_state(p.state), p.department,
                      p.dataset, f"{p.valid_from or '…'} to {p.valid_until or '…'}")
    console.print(table)
    _next_page(token)


def print_policy(policy, *, as_json: bool) -> None:
    """One policy; with its signed document when the answer carries it."""
    if as_json:
        click.echo(json.dumps(_json(policy), ensure_ascii=False))
        return
    console.print(f"[bold]{policy.name.removeprefix('policies/')}[/bold] v{policy.version}  "
                  f"{_policy_state(policy.state)}"
                  + (f"  ({policy.state_reason})" if policy.state_reason else ""))
    console.print(f"{policy.department} on {policy.dataset}, valid {policy.valid_from or '…'} to "
                  f"{policy.valid_until or '…'}: {policy.purpose}")
    if policy.document:
        _print_dominance_waiver(policy.document)
        console.rule(f"signed document (sha256 {policy.sha256[:16]}…)")
        click.echo(policy.document.rstrip())


def _print_dominance_waiver(document: str) -> None:
    """Warn when a policy turns the dominance rule off, with the owner's reason (as policy lint does)."""
    from broker.cli.policy_lint import waiver_warning
    from dsbroker.policy.model import parse_policy

    try:
        waiver = parse_policy(document, source="<policy>").dominance_waiver
    except DsbrokerError:
        return  # what does not load is reported where it is used, not here
    if waiver is not None:
        console.print(f"warning: {waiver_warning(waiver)}", style="yellow", highlight=False)
