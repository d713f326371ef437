"""``dsbroker audit``: list, show, export, verify and reconcile the access log, locally or over gRPC.

With ``--log`` (a SQLite file or a postgresql:// DSN, say a copy the owner handed over) the
commands read the store directly; without it they ask the broker's AuditService with an auditor's
token, and each of those reads is itself recorded in the log.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from broker.cli.common import client_options, client_tls, reporting_errors
from broker.cli.exit_codes import ExitCode
from broker.cli.i18n import N_, _
from broker.cli.output import chosen_format, output_options
from broker.cli.timezones import read_time, shown_time
from broker.cli.translated import TranslatedGroup
from dsbroker.private_files import open_private

DECISIONS = ("allow", "deny", "released", "error")


def PROBLEM() -> str:  # noqa: N802 (a label, as the constants beside it)
    """The label of a problem line ("problem: ..."), in the language in force."""
    return _("problem")


def NOTE() -> str:  # noqa: N802
    """The label of a note line ("note: ..."), in the language in force."""
    return _("note")
_END = object()  # no page after this one


def log_option(command):
    """``--log``: read the store directly instead of asking the broker."""
    return click.option("--log", "log_location", envvar="DSBROKER_ACCESS_LOG",
                        help="read this access log directly: a SQLite file or a postgresql:// DSN "
                             "[env DSBROKER_ACCESS_LOG]; without it, ask the broker (auditor role)")(command)


def filter_options(command):
    """The filters ``list`` and ``export`` share."""
    options = [
        click.option("--since", help="records at or after this time (ISO 8601, e.g. 2026-11-01 or "
                                     "2026-11-01T08:00+08:00); without an offset it is in the time zone of "
                                     "--tz (default Asia/Shanghai): a date alone is midnight there"),
        click.option("--until", help="records before this time (ISO 8601; read as --since is)"),
        click.option("--department", default="", help="only this department's records"),
        click.option("--grant", default="", help="only records under this grant (policy id)"),
        click.option("--decision", type=click.Choice(DECISIONS), help="only this decision"),
        click.option("--event", default="", help="only this event type, e.g. query.decision or audit.read"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


# Checkpoints come one per thousand records or so: 100,000 pages of 1,000 is a log no broker holds.
MOST_CHECKPOINT_PAGES = 100_000


class RecordSource:
    """Where records come from: the store itself, or the broker's AuditService."""

    def __init__(self, log_location, broker, token, ca, cert, key, plaintext, *, client=None) -> None:
        self.log, self.client = None, client
        if client is not None:
            pass  # a caller's own client (the web console's): closed here with the source
        elif log_location:
            from broker.access_log.log import AccessLog

            self.log = AccessLog(log_location, read_only=True)  # an auditor's copy is read, never changed
        else:
            from broker.client.sdk import BrokerClient

            self.client = BrokerClient(broker, token=token, tls=client_tls(ca, cert, key, plaintext))
        self._tokens = {0: ""}

    def records(self, *, after: int = 0, limit: int | None = None, where=None):
        """Records after ``after`` (remote: pages are walked in order, as verify and export do)."""
        from broker.access_log.log import RecordFilter

        where = where or RecordFilter()
        if self.log is not None:
            return self.log.records(after=after, limit=limit, where=where)
        token = self._tokens.get(after)
        if token is _END:
            return []
        if token is None:  # a start the broker gave no token for: walk from the beginning
            records, token, seen = [], "", set()
            while True:
                page, token = self.client.list_access_records(page_size=1000, page_token=token, where=where)
                records += [r for r in page if r.seq > after]
                if not token or token in seen or (limit and len(records) >= limit):  # a repeated token: a loop
                    return records[:limit] if limit else records
                seen.add(token)
        page, next_token = self.client.list_access_records(page_size=min(limit or 1000, 1000), page_token=token,
                                                           where=where)
        # Only records past ``after``: a broker that answers the same page again ends the walk, not loops it.
        page = [r for r in page if r.seq > after]
        if page:
            self._tokens[page[-1].seq] = next_token or _END
        return page

    def checkpoints(self):
        """Every checkpoint, oldest first."""
        if self.log is not None:
            return self.log.checkpoints()
        from dsbroker.rpc.pagination import every_page

        client = self.client
        return every_page(lambda token: client.list_checkpoints(page_size=1000, page_token=token),
                          list_name="checkpoints", most_pages=MOST_CHECKPOINT_PAGES)

    def missing_append_only_guards(self) -> list[str] | None:
        """The append-only triggers a log read directly lacks; None over gRPC, where the broker would say."""
        return self.log.store.missing_append_only_guards() if self.log is not None else None

    def record(self, seq: int):
        """One record, or None."""
        if self.log is not None:
            return self.log.store.record(seq)
        return self.client.get_access_record(seq)

    def all_records(self, where=None):
        """Every record (matching ``where``), page by page."""
        after = 0
        while True:
            page = self.records(after=after, limit=1000, where=where)
            yield from page
            if len(page) < 1000:
                return
            after = page[-1].seq

    def close(self) -> None:
        for thing in (self.log, self.client):
            if thing is not None:
                thing.close()


def _source(kwargs) -> RecordSource:
    return RecordSource(kwargs.pop("log_location"), *(kwargs.pop(k) for k in ("broker", "token", "ca", "cert", "key",
                                                                        "plaintext")))


def _where(since, until, department, grant, decision, event):
    from broker.access_log.log import RecordFilter

    return RecordFilter(since=read_time(since, "--since"), until=read_time(until, "--until"),
                        department=department, grant_id=grant, decision=decision or "", event=event)


LIST_HEADINGS = (N_("seq"), N_("at"), N_("event"), N_("department"), N_("subject"), N_("grant"), N_("decision"),
                 N_("reason"), N_("sql"))


@click.group(cls=TranslatedGroup)
def audit() -> None:
    """The access log: list, show, export, verify, reconcile (auditors)."""


@audit.command("list")
@log_option
@client_options
@filter_options
@click.option("--after", default=0, show_default=True, help="start after this sequence number (paging)")
@click.option("--limit", default=50, show_default=True, help="records per page")
@click.option("--json", "as_json", is_flag=True,
              help="one JSON object per line, as stored (hashes checkable; times in UTC); as --output json")
@output_options
@reporting_errors
def audit_list(after, limit, as_json, output, out, since, until, department, grant, decision, event,
               **kwargs) -> None:
    """List access records, oldest first, a page at a time; times in the --tz zone, with their offset."""
    from rich.table import Table

    from broker.cli.exports import Sheet, write_csv, write_xlsx
    from broker.cli.output import console

    source = _source(kwargs)
    try:
        records = source.records(after=after, limit=limit + 1,
                                 where=_where(since, until, department, grant, decision, event))
    finally:
        source.close()
    more = len(records) > limit
    records = records[:limit]
    fmt = chosen_format(as_json, output)
    if fmt == "json":
        lines = "".join(json.dumps(asdict(record), ensure_ascii=False) + "\n" for record in records)
        if out:
            with open_private(out, "w", encoding="utf-8") as handle:
                handle.write(lines)
        else:
            click.echo(lines, nl=False)
        return
    if fmt in ("csv", "xlsx"):
        rows = [[r.seq, shown_time(r.at), r.event, r.department, r.subject, r.grant_id, r.decision, r.reason, r.sql]
                for r in records]
        (write_csv if fmt == "csv" else write_xlsx)(Sheet([_(h) for h in LIST_HEADINGS], rows,
                                                          title=_("access records")), out)
        return
    table = Table(header_style="bold")
    for name in LIST_HEADINGS:
        table.add_column(_(name), overflow="fold", justify="right" if name == "seq" else "left")
    for r in records:
        table.add_row(str(r.seq), shown_time(r.at), r.event, r.department, r.subject, r.grant_id, r.decision,
                      r.reason, (r.sql[:60] + "…") if len(r.sql) > 60 else r.sql)
    console.print(table)
    if more:
        console.print(_("more: --after {seq}").format(seq=records[-1].seq), style="dim")


@audit.command("show")
@click.argument("seq", type=click.IntRange(min=1))
@log_option
@client_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@reporting_errors
def audit_show(seq, as_json, **kwargs) -> None:
    """Show access record SEQ in full: SQL, rewritten SQL, hashes and detail."""
    from dsbroker.errors import DsbrokerError

    source = _source(kwargs)
    try:
        record = source.record(seq)
    finally:
        source.close()
    if record is None:
        raise DsbrokerError(f"no access record {seq}", reason="ACCESS_RECORD_NOT_FOUND")
    values = asdict(record)
    if not as_json:
        values["at"] = shown_time(record.at)
    cut = {"sql_cut": record.sql_cut, "rewritten_sql_cut": record.rewritten_sql_cut}
    if as_json:
        click.echo(json.dumps({**values, **cut}, ensure_ascii=False, indent=2))
        return
    width = max(len(k) for k in values)
    for key, value in values.items():
        if key == "detail":
            value = json.dumps(value, ensure_ascii=False, sort_keys=True)
        click.echo(f"{key:<{width}}  {value}")
        if key in ("sql", "rewritten_sql") and cut[f"{key}_cut"]:
            click.echo(f"{'':<{width}}  (cut: the record keeps the first {len(value.encode()):,} of "
                       f"{values[key + '_bytes']:,} bytes; {key}_sha256 is of the whole text)")


@audit.command("export")
@log_option
@client_options
@filter_options
@click.option("--format", "--output", "fmt", type=click.Choice(["jsonl", "csv", "xlsx"]), default="jsonl",
              show_default=True, help="jsonl (hashes checkable), csv (UTF-8 with BOM, for Excel) or xlsx (needs --out)")
@click.option("--out", type=click.Path(dir_okay=False), help="write here instead of standard output")
@reporting_errors
def audit_export(fmt, out, since, until, department, grant, decision, event, **kwargs) -> None:
    """Export records, as stored: JSON lines (hashes checkable), CSV or XLSX (detail as JSON; at in UTC as
    stored, at_local in the --tz zone)."""
    from broker.cli.exports import Sheet, write_csv, write_xlsx
    from dsbroker.records.access_record import STORED_COLUMNS, to_row

    if fmt == "xlsx" and not out:
        raise click.UsageError(_("--output xlsx writes a file: pass --out FILE.xlsx"))
    source = _source(kwargs)
    count = 0
    try:
        records = source.all_records(where=_where(since, until, department, grant, decision, event))
        if fmt == "jsonl":
            handle = open_private(out, "w", encoding="utf-8") if out else sys.stdout
            try:
                for record in records:
                    handle.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
                    count += 1
            finally:
                if out:
                    handle.close()
        else:
            headings = [*STORED_COLUMNS, "at_local"]
            rows = [[*to_row(record).values(), shown_time(record.at)] for record in records]
            count = len(rows)
            (write_csv if fmt == "csv" else write_xlsx)(Sheet(headings, rows, title=_("access records")), out)
    finally:
        source.close()
    click.echo(_("{count} record(s) exported").format(count=count)
               + (_(" to {out}").format(out=out) if out else ""), err=True)


@audit.command("verify")
@log_option
@client_options
@click.option("--pinned-key", "pinned_keys", multiple=True, envvar="DSBROKER_AUDIT_KEY",
              type=click.Path(exists=True, dir_okay=False),
              help="a broker's log key, as you pinned it (PEM; access-log.pub); repeat it for each broker that "
                   "writes the log [env DSBROKER_AUDIT_KEY, paths separated by ':']. Without one nothing signed "
                   "can be checked, and verify exits 8")
@click.option("--checkpoint", "kept", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="a checkpoint you kept (from 'audit checkpoint'); the log must still match it (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the report as one JSON object")
@reporting_errors
def audit_verify(pinned_keys, kept, as_json, **kwargs) -> None:
    """Check the chain, the seals, the signed checkpoints and gaps; print what is wrong and where.

    Exits 0 when the log is intact and verified against a pinned key, 7 on any problem, and 8 when no
    key was pinned (the log is then NOT verified, whatever the chain says)."""
    from dsbroker.records.checkpoints import Checkpoint, load_public_key

    checkpoints = [Checkpoint.from_json(line) for path in kept
                   for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    public_keys = [load_public_key(path) for path in pinned_keys]
    source = _source(kwargs)
    try:
        report, status, verdict = verification(source, public_keys, checkpoints)
    finally:
        source.close()
    if as_json:
        click.echo(json.dumps({"intact": report.intact, "verified": report.verified, "records": report.records,
                               "checkpoints": report.checkpoints, "verdict": verdict, "exit_code": int(status),
                               "problems": [asdict(f) for f in report.problems],
                               "warnings": [asdict(f) for f in report.warnings]}, ensure_ascii=False))
        sys.exit(status)
    for finding in report.problems:
        click.echo(f"{PROBLEM()}: {finding} [{finding.kind}]", err=True)
    for finding in report.warnings:
        click.echo(f"{NOTE()}: {finding}" if finding.seq else f"{NOTE()}: {finding.message}", err=True)
    click.echo(verdict)
    sys.exit(status)


def verification(source: RecordSource, public_keys, checkpoints) -> tuple:
    """Verify the log ``source`` reads: (the report, its exit code, its verdict in the language in force)."""
    from broker.audit.verify import verify_log

    report = verify_log(source, public_keys=public_keys, kept_checkpoints=checkpoints)
    status = ExitCode.CHECK_FAILED if report.problems else ExitCode.OK if report.verified else ExitCode.NOT_VERIFIED
    summary = _("{records} records, {checkpoints} checkpoints").format(records=report.records,
                                                                       checkpoints=report.checkpoints)
    if report.problems:
        verdict = _("access log NOT intact: {count} problem(s), first at seq {seq}; {summary}").format(
            count=len(report.problems), seq=report.problems[0].seq, summary=summary)
    elif report.verified:
        verdict = _("access log intact: {summary}, verified against {count} pinned key(s)").format(
            summary=summary, count=len(public_keys))
    else:
        verdict = _("access log NOT verified: no pinned key, so no seal or checkpoint signature was checked and "
                    "anyone could have written it; pass --pinned-key (env DSBROKER_AUDIT_KEY); {summary}").format(
            summary=summary)
    return report, status, verdict


@audit.command("checkpoint")
@log_option
@client_options
@click.option("--out", type=click.Path(dir_okay=False), help="append the checkpoint to this file")
@reporting_errors
def audit_checkpoint(out, **kwargs) -> None:
    """Print the newest signed checkpoint, to keep: 'audit verify --checkpoint' later proves the log
    was not rolled back or rewritten since."""
    from dsbroker.errors import ConfigError

    source = _source(kwargs)
    try:
        checkpoints = source.checkpoints()
    finally:
        source.close()
    if not checkpoints:
        raise ConfigError("the log has no checkpoint yet (the broker signs one every checkpoint_every records, "
                          "every checkpoint_seconds, and when it stops)")
    line = checkpoints[-1].to_json()
    if out:
        with open_private(out, "a", encoding="utf-8") as handle:  # created 0600, like every state file
            handle.write(line + "\n")
        click.echo(_("checkpoint at size {size} appended to {out}").format(size=checkpoints[-1].size, out=out),
                   err=True)
    else:
        click.echo(line)


@audit.command("reconcile")
@log_option
@client_options
@click.option("--ledger", "ledgers", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="a sandbox's execution ledger (<data>.executions.sqlite unless configured); repeat it for "
                   "each sandbox, e.g. each partition")
@click.option("--witness-key", "witness_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="a sandbox's witness public key (<ledger>.witness.pub unless configured): each checkpoint it "
                   "witnessed must carry its valid countersignature (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the report as one JSON object")
@reporting_errors
def audit_reconcile(ledgers, witness_keys, as_json, **kwargs) -> None:
    """Check the broker's log against sandboxes' execution ledgers, both ways, and against every checkpoint
    head they witnessed; exit 7 on any difference."""
    from dsbroker.records.checkpoints import load_public_key

    keys = [load_public_key(path) for path in witness_keys]
    source = _source(kwargs)
    try:
        found = reconciliation(source, ledgers, keys)
    finally:
        source.close()
    problems_found, notes, executed, witnessed = found["problems"], found["notes"], found["executions"], \
        found["witnessed_size"]
    verdict, status = found["verdict"], found["status"]
    if as_json:
        click.echo(json.dumps({"reconciled": not problems_found, "executions": executed, "ledgers": len(ledgers),
                               "witnessed_size": witnessed, "verdict": verdict, "exit_code": int(status),
                               "problems": problems_found, "notes": notes}, ensure_ascii=False))
        sys.exit(status)
    for note in notes:
        click.echo(f"{NOTE()}: {note['ledger']}: {note['message']}", err=True)
    for problem in problems_found:
        click.echo(f"{PROBLEM()}: {problem['ledger']}: {problem['message']} [{problem['kind']}]", err=True)
    click.echo(verdict)
    sys.exit(status)


def reconciliation(source: RecordSource, ledgers, witness_keys) -> dict:
    """The log ``source`` reads against each sandbox ledger: its problems, notes, executions, the largest
    checkpoint witnessed, the verdict (in the language in force) and the exit code."""
    records = list(source.all_records())  # read once, reconciled with each ledger
    checkpoints = source.checkpoints()
    problems_found: list[dict] = []  # {ledger, kind, message}
    notes: list[dict] = []
    executed = witnessed = 0
    for ledger in ledgers:
        found, noted, executions, heads = _reconcile_ledger(ledger, records, checkpoints, witness_keys)
        problems_found += found
        notes += noted
        executed += executions
        witnessed = max(witnessed, heads)
    if problems_found:
        verdict = _("NOT reconciled: {count} problem(s); {executed} executions in {ledgers} ledger(s)").format(
            count=len(problems_found), executed=executed, ledgers=len(ledgers))
    else:
        verdict = _("reconciled: {executed} executions in {ledgers} ledger(s), each decided in the access log, and "
                    "every release from these sandboxes executed").format(executed=executed, ledgers=len(ledgers))
        if witnessed:
            verdict += _("; the log matches every checkpoint they witnessed (up to size {size})").format(
                size=witnessed)
    return {"problems": problems_found, "notes": notes, "executions": executed, "witnessed_size": witnessed,
            "verdict": verdict, "status": ExitCode.CHECK_FAILED if problems_found else ExitCode.OK}


def _reconcile_ledger(ledger: str, records, checkpoints, keys) -> tuple[list[dict], list[dict], int, int]:
    """One sandbox's ledger against the log: (problems, notes, executions in it, largest checkpoint witnessed)."""
    from broker.audit.reconcile import Discrepancy, check_witnessed, reconcile
    from dsbroker.records.chain import LedgerUnreadable
    from dsbroker.records.executions import read_executions, verify_executions
    from dsbroker.records.witnessed import (WITNESSED, WitnessTableMissing, read_witnessed, verify_witnessed,
                                            witness_marked)

    try:
        executions = read_executions(ledger)
    except LedgerUnreadable as error:  # the other ledgers are still reconciled
        return [{"ledger": ledger, "kind": "LEDGER_UNREADABLE", "message": str(error)}], [], 0, 0
    problems = verify_executions(executions)
    found = reconcile(records, executions)
    try:
        entries = read_witnessed(ledger)
    except WitnessTableMissing:
        entries = []
        found.append(Discrepancy(ledger, "WITNESS_TABLE_MISSING", "the ledger has no witnessed checkpoints "
                                 "table: written by an older dsbroker, or the table was dropped"))
    except LedgerUnreadable as error:
        entries = []
        found.append(Discrepancy(ledger, "LEDGER_UNREADABLE", str(error)))
    else:
        if not entries and witness_marked(ledger):
            found.append(Discrepancy(ledger, "WITNESS_HISTORY_LOST", "the ledger is marked as having witnessed "
                                     "checkpoints, but its witness table is empty: its entries were deleted"))
    problems += verify_witnessed(entries)
    found += check_witnessed(records, checkpoints, entries, witness_keys=keys)
    heads = [e for e in entries if e.kind == WITNESSED]
    notes = []
    if checkpoints and not heads:
        notes.append({"ledger": ledger, "message": _(
            "the sandbox witnessed none of the log's checkpoints (does it pin the broker's key in "
            "broker_log_keys?); the log's end is checked only against kept checkpoints")})
    return ([{"ledger": ledger, "kind": getattr(problem, "kind", "LEDGER_CHAIN_BROKEN"), "message": str(problem)}
             for problem in (*problems, *found)], notes, len(executions), max((e.size for e in heads), default=0))
