"""How the CLI prints results and errors: a readable table, or JSON with --json."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from broker.client import QueryResult
from broker.errors import DsbrokerError

console = Console()


def print_result(result: QueryResult, *, as_json: bool) -> None:
    """Print a query result as a table (with what disclosure control did), or as JSON."""
    if as_json:
        click.echo(json.dumps(result.as_json(), ensure_ascii=False))
        return
    table = Table(show_lines=False, header_style="bold")
    for name in result.columns:
        table.add_column(name, justify="left")
    for row in result.rows:
        table.add_row(*(_cell(v) for v in row))
    console.print(table)
    notes = [f"{len(result.rows)} row(s)"] + [r["description"] for r in result.disclosure_rules]
    if result.truncated:
        notes.append("truncated at the grant's cap on groups")
    notes.append(f"access record #{result.access_record}")
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
