"""How the CLI prints results and errors: a readable table in the language in force, JSON with --json, or a
spreadsheet (CSV, XLSX) with --output."""

from __future__ import annotations

import datetime as dt
import json
import sys
from decimal import Decimal

import click
from rich.console import Console
from rich.table import Table

from broker.cli.exit_codes import exit_code_for
from broker.cli.exports import FORMATS, Sheet, write_csv, write_xlsx
from broker.cli.i18n import N_, _, localized
from broker.cli.money import unit_name
from broker.cli.reasons import explained, rule_note
from broker.cli.timezones import shown_time
from broker.client.sdk import QueryResult
from dsbroker.errors import DsbrokerError
from dsbroker.private_files import write_private

console = Console()


def output_options(command):
    """``--output FORMAT`` and ``--out FILE`` for commands whose rows may go to a file or a spreadsheet."""
    options = [
        click.option("--output", "-o", "output", type=click.Choice(FORMATS), default="table", show_default=True,
                     help="table on the screen, json, csv (UTF-8 with BOM, for Excel) or xlsx (needs --out)"),
        click.option("--out", type=click.Path(dir_okay=False), help="write csv, xlsx or json to this file"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def unit_option(command):
    """``--unit yuan|wan``: how money (fen in the data) is shown."""
    return click.option("--unit", type=click.Choice(["yuan", "wan"]), default="yuan", show_default=True,
                        help="show money in 元 or 万元 (--json keeps exact integers in fen)")(command)


def chosen_format(as_json: bool, output: str) -> str:
    """The output format: --json is --output json."""
    return "json" if as_json else output


def write_json(value, out: str | None) -> None:
    """``value`` as one JSON document, to ``out`` or standard output."""
    text = json.dumps(value, ensure_ascii=False)
    if out:
        write_private(out, text + "\n")
    else:
        click.echo(text)


def print_result(result: QueryResult, *, fmt: str = "table", out: str | None = None, unit: str = "yuan",
                 money: frozenset[int] | set[int] = frozenset()) -> None:
    """Print a query result as a table (with what disclosure control did), as JSON, or write it as CSV or XLSX.

    ``money`` holds the indexes of columns in fen, shown in ``unit``; JSON keeps them in fen."""
    if fmt == "json":
        write_json(result.as_json(), out)
        return
    headings, rows = result_rows(result, unit, money)
    if fmt in ("csv", "xlsx"):
        sheet = Sheet(headings, rows, money=set(money), unit_name=unit_name(unit), title=_("query result"))
        (write_csv if fmt == "csv" else write_xlsx)(sheet, out)
        if out:
            click.echo(_("{count} row(s) written to {out}").format(count=len(rows), out=out), err=True)
        return
    numeric = {c for c in range(len(headings)) if c in money or any(is_number(row[c]) for row in rows)}
    table = Table(show_lines=False, header_style="bold")
    for c, name in enumerate(headings):
        table.add_column(name, justify="right" if c in numeric else "left")
    for row in rows:
        table.add_row(*[money_text_of(v, unit) if c in money and isinstance(v, Decimal) else cell_text(v)
                        for c, v in enumerate(row)])
    console.print(table)
    console.print(_("; ").join(_result_notes(result)), style="dim")


def result_rows(result: QueryResult, unit: str, money) -> tuple[list[str], list[list]]:
    """Headings and rows as a reader gets them: markers for withheld and rolled-up cells, money in ``unit``
    (exact Decimals), and a column of partitions left out when an encrypted sum left any out."""
    headings = [f"{name} ({unit_name(unit)})" if c in money else name for c, name in enumerate(result.columns)]

    def value(r: int, c: int, v):
        if (r, c) in result.withheld:
            return "x"
        if (r, c) in result.rolled_up:
            return _("(all)")
        return money_amount(v, unit) if c in money and is_number(v) else v

    rows = [[value(r, c, v) for c, v in enumerate(row)] for r, row in enumerate(result.rows)]
    left_out = (result.encryption or {}).get("partitions_withheld") or []
    if any(left_out):
        headings.append(_("partitions left out"))
        for row, count in zip(rows, left_out, strict=True):
            row.append(count or None)
    return headings, rows


def _result_notes(result: QueryResult) -> list[str]:
    notes = [_("{count} row(s)").format(count=len(result.rows))] + [rule_note(r) for r in result.disclosure_rules]
    if result.encryption:
        partitions = result.encryption["partitions"]
        notes.append(_("decrypted here with key {key}…").format(key=result.encryption["key_id"][:19])
                     + (_(", the sum of {count} partitions").format(count=partitions) if partitions > 1 else ""))
    if result.withheld:
        notes.append(_("x: withheld by disclosure control"))
    if result.truncated:
        notes.append(_("truncated at the grant's cap on groups"))
    notes.append(_("access record #{seq}").format(seq=result.access_record))
    return notes


def money_amount(fen, unit: str) -> Decimal:
    """``fen`` in ``unit`` as an exact Decimal (what CSV and XLSX carry)."""
    from broker.cli.money import UNITS

    return (fen if isinstance(fen, Decimal) else Decimal(str(fen))) / UNITS[unit][0]


def money_text_of(amount: Decimal, unit: str) -> str:
    """An amount already in ``unit``, as the table shows it: grouped, two decimals."""
    from broker.cli.i18n import language
    from broker.cli.money import UNITS, money_text

    return money_text(amount * UNITS[unit][0], unit, language())


def print_rows(headings, rows, *, right: frozenset[int] | set[int] = frozenset()) -> None:
    """A plain table of ``rows`` under ``headings`` (already translated); ``right``: right-aligned columns."""
    table = Table(header_style="bold")
    for c, name in enumerate(headings):
        table.add_column(name, justify="right" if c in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*[cell_text(v) for v in row])
    console.print(table)


def is_number(value) -> bool:
    """Whether a cell is a number (a bool is not)."""
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def print_explanation(explanation, *, as_json: bool) -> None:
    """What the guard makes of a query: the SQL that would run, each rule's part, the disclosure rules."""
    if as_json:
        click.echo(json.dumps(_json(explanation), ensure_ascii=False))
        return
    from broker.v1 import query_service_pb2 as pb

    console.print(_("SQL the sandbox would run:"), style="bold")
    click.echo(explanation.rewritten_sql)  # unwrapped, to copy
    if explanation.release_plan:
        console.print(_("computed from the cells it releases, after disclosure control:"), style="bold")
        click.echo(explanation.release_plan)
    table = Table(header_style="bold", title=_("guard rules, in order"))
    for name in (N_("rule"), N_("did"), N_("what it is for")):
        table.add_column(_(name))
    for step in explanation.steps:
        table.add_row(step.rule, pb.GuardStep.Action.Name(step.action).removeprefix("ACTION_").lower(), step.summary)
    console.print(table)
    notes = [rule_note({"rule": r.rule, "column": r.column, "threshold": r.threshold, "description": r.description})
             for r in explanation.disclosure_rules]
    notes.append(_("at most {count} groups").format(count=f"{explanation.max_groups:,}"))
    if explanation.lookup_tables:
        notes.append(_("joins {tables}").format(tables=", ".join(explanation.lookup_tables)))
    notes.append(_("nothing was run; access record #{seq}").format(
        seq=explanation.access_record.removeprefix("accessRecords/")))
    console.print(_("; ").join(notes), style="dim")


def fail(error: DsbrokerError, *, as_json: bool) -> None:
    """Print one clear line (or a JSON error object) and exit with the code of the error's kind."""
    code = error.code_name
    if as_json:
        click.echo(json.dumps({"error": {"code": code, "reason": error.reason, "message": error.message,
                                         "metadata": error.metadata}}, ensure_ascii=False))
    else:
        where = ", ".join(f"{k}={v}" for k, v in error.metadata.items() if k in ("rule", "table", "column"))
        label = _("error")
        click.echo(f"{label}: {code} {error.reason}: {explained(error)}" + (f" [{where}]" if where else ""), err=True)
    sys.exit(exit_code_for(error))


def cell_text(value) -> str:
    """A cell as a table shows it: — for none, numbers grouped by thousands."""
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _shown_text_time(text: str) -> str:
    """An ISO 8601 time the API sends as text, in the display zone; as sent when it does not parse."""
    try:
        return shown_time(text)
    except ValueError:
        return text


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
        console.print(_("more: --page-token {token}").format(token=token), style="dim")


def print_datasets(datasets, *, as_json: bool) -> None:
    """The catalog as a table (or JSON)."""
    if as_json:
        click.echo(json.dumps([_json(d) for d in datasets], ensure_ascii=False))
        return
    table = Table(header_style="bold")
    for name in (N_("dataset"), N_("title"), N_("columns"), N_("requestable"), N_("approvals")):
        table.add_column(_(name), overflow="fold", justify="right" if name in ("columns", "requestable") else "left")
    for d in datasets:
        table.add_row(d.name, localized(d.title, d.title_zh), str(len(d.columns)),
                      str(sum(1 for c in d.columns if c.levels)), " → ".join(d.approval_stages))
    console.print(table)


def print_dataset(dataset, *, as_json: bool) -> None:
    """One dataset's description."""
    if as_json:
        click.echo(json.dumps(_json(dataset), ensure_ascii=False))
        return
    console.print(f"[bold]{dataset.name}[/bold]  {localized(dataset.title, dataset.title_zh)}")
    if dataset.description:
        console.print(localized(dataset.description, dataset.description_zh))
    console.print(_("entity (privacy unit): {entity};  at least {k} per cell;  row filter: {row_filter};  "
                    "approvals: {stages}").format(entity=dataset.entity_column or "—", k=dataset.min_entities,
                                                  row_filter=dataset.row_filter or _("none"),
                                                  stages=" → ".join(dataset.approval_stages)))
    table = Table(header_style="bold")
    for name in (N_("column"), N_("type"), N_("unit"), N_("classification"), N_("may be requested for"),
                 N_("description")):
        table.add_column(_(name), overflow="fold")
    for c in dataset.columns:
        table.add_row(c.name, c.type, c.unit, c.classification, ", ".join(c.levels) or "—",
                      localized(c.description, c.description_zh))
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
    for name in (N_("request"), N_("state"), N_("department"), N_("dataset"), N_("submitted"), N_("purpose")):
        table.add_column(_(name), overflow="fold", no_wrap=name in ("request", "state"))
    for r in requests:
        table.add_row(r.name.removeprefix("accessRequests/"), _state(r.state), r.department, r.dataset,
                      shown_time(r.create_time.ToDatetime(tzinfo=dt.timezone.utc), seconds=False), r.purpose[:60])
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
    console.print(_("{department} ({district}), by {requester}: {purpose}").format(
        department=request.department, district=request.district, requester=request.requester,
        purpose=request.purpose))
    done = len(request.approvals)
    if done < len(stages) and _state(request.state) in ("submitted", "reviewed"):
        console.print(_("awaiting: {stage} (stage {number} of {stages})").format(
            stage=stages[done], number=done + 1, stages=len(stages)), style="yellow")
    if not full:
        return
    console.print(_("dataset {dataset}; valid {valid_from} to {valid_until}; {per_day} queries a day").format(
        dataset=request.dataset, valid_from=request.valid_from, valid_until=request.valid_until,
        per_day=request.queries_per_day)
        + (_(", {total} in all").format(total=request.queries_total) if request.queries_total else ""))
    table = Table(header_style="bold", title=_("columns asked for"))
    for name in (N_("column"), N_("use"), N_("why")):
        table.add_column(_(name), overflow="fold")
    from broker.v1 import access_request_service_pb2 as pb

    for c in request.columns:
        table.add_row(c.column, pb.ColumnUse.Name(c.use).removeprefix("COLUMN_USE_").lower(), c.reason)
    if request.columns:
        console.print(table)
    if request.products:
        console.print(_("products asked for: {products}").format(products=", ".join(request.products))
                      + ("" if request.columns else _(" (products only)")))
    for a in request.approvals:
        console.print(_("approved as {role} by {by} ({subject}) at {at}").format(
            role=a.role, by=a.by, subject=a.subject, at=_shown_text_time(a.signed_at))
            + (f": {a.comment}" if a.comment else ""), style="green")
    for check in request.example_checks:
        if check.accepted:
            accepted, runs_as = _("accepted"), _("runs as:")
            console.print(f"[green]{accepted}[/green]  {check.sql}\n          {runs_as} {check.rewritten_sql}")
        else:
            refused = _("refused")
            console.print(f"[red]{refused}[/red]   {check.sql}\n          {check.reason}: {check.message}")
    if not request.example_checks and request.example_queries:
        console.print(_("example queries:") + "\n  " + "\n  ".join(request.example_queries))
    console.rule(_("drafted policy (the body approvers sign)"))
    click.echo(request.draft_policy.rstrip())
    _print_dominance_waiver(request.draft_policy)


def print_policies(policies, token: str, *, as_json: bool) -> None:
    """A page of policies and their states."""
    if as_json:
        click.echo(json.dumps({"policies": [_json(p) for p in policies], "next_page_token": token},
                              ensure_ascii=False))
        return
    table = Table(header_style="bold")
    for name in (N_("policy"), N_("state"), N_("department"), N_("dataset"), N_("valid")):
        table.add_column(_(name), overflow="fold", no_wrap=name == "policy")
    for p in policies:
        state = _policy_state(p.state)
        if p.reused_version_body_sha256:
            state = f"{state}, [red]" + _("version reused") + "[/red]"
        table.add_row(f"{p.name.removeprefix('policies/')} v{p.version}", state, p.department,
                      p.dataset, _("{valid_from} to {valid_until}").format(valid_from=p.valid_from or "…",
                                                                            valid_until=p.valid_until or "…"))
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
    console.print(_("{department} on {dataset}, valid {valid_from} to {valid_until}: {purpose}").format(
        department=policy.department, dataset=policy.dataset, valid_from=policy.valid_from or "…",
        valid_until=policy.valid_until or "…", purpose=policy.purpose))
    if policy.reused_version_body_sha256:
        console.print("[red]" + _("version {version} is reused: the owner signed another body of it (sha256 "
                                  "{digest}…), which the broker did not install; no query runs under it "
                                  "(POLICY_VERSION_REUSED) until the owner signs the change as a new version").format(
            version=policy.version, digest=policy.reused_version_body_sha256[:16]) + "[/red]")
    if policy.document:
        _print_dominance_waiver(policy.document)
        console.rule(_("signed document (sha256 {digest}…)").format(digest=policy.sha256[:16]))
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
        console.print(_("warning") + f": {waiver_warning(waiver)}", style="yellow", highlight=False)
