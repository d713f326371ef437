"""An auditor's pages: the access log with filters, one record in full, and the verify and reconcile status
with what they found (the same checks as ``dsbroker audit verify`` and ``audit reconcile``, over gRPC)."""

from __future__ import annotations

import dataclasses
import json

import click
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.access_log.store import RecordFilter
from broker.cli.audit import DECISIONS, RecordSource, reconciliation, verification
from broker.cli.exit_codes import ExitCode
from broker.cli.i18n import _
from broker.cli.timezones import read_time
from broker.console.pages import page, settings_of
from dsbroker.errors import ConfigError

PAGE_RECORDS = 50
FILTERS = ("since", "until", "department", "grant", "decision", "event")


def access_log(request: Request) -> Response:
    """A page of records matching the filters, oldest first; ``after`` pages on."""
    settings = settings_of(request)
    chosen = {name: request.query_params.get(name, "").strip() for name in FILTERS}
    after_text = request.query_params.get("after", "")
    after = int(after_text) if after_text.isascii() and after_text.isdigit() else 0
    where = _where(chosen, settings.zone)
    with settings.connection.client() as client:
        source = _remote(client)
        records = source.records(after=after, limit=PAGE_RECORDS + 1, where=where)
    more = len(records) > PAGE_RECORDS
    records = records[:PAGE_RECORDS]
    return page(request, "audit.html", records=records, chosen=chosen, decisions=DECISIONS,
                zone_name=str(settings.zone), next_after=records[-1].seq if more and records else 0)


def record(request: Request) -> Response:
    """One record in full: who, when, under which grant version, both SQL texts, hashes and detail."""
    seq = request.path_params["seq"]
    with settings_of(request).connection.client() as client:
        found = client.get_access_record(seq)
    fields = dataclasses.asdict(found)
    fields["detail"] = json.dumps(fields["detail"], ensure_ascii=False, sort_keys=True, indent=1)
    return page(request, "record.html", record=found, fields=fields)


def checks(request: Request) -> Response:
    """What verify (and, with sandbox ledgers, reconcile) find now, over gRPC as the auditor."""
    from dsbroker.records.checkpoints import load_public_key

    settings = settings_of(request)
    public_keys = [load_public_key(path) for path in settings.pinned_keys]
    witness_keys = [load_public_key(path) for path in settings.witness_keys]
    with settings.connection.client() as client:
        report, status, verdict = verification(_remote(client),
                                                public_keys, [])
    reconciled = None
    if settings.ledgers:
        with settings.connection.client() as client:
            reconciled = reconciliation(_remote(client),
                                        settings.ledgers, witness_keys)
    return page(request, "checks.html", report=report, verdict=verdict, intact=status == ExitCode.OK,
                not_verified=status == ExitCode.NOT_VERIFIED, pinned=len(public_keys), reconciled=reconciled,
                ledgers=settings.ledgers)


def _remote(client) -> RecordSource:
    """The records as the broker's AuditService lists them, through this page's client."""
    return RecordSource(None, None, None, None, None, None, None, client=client)


def _where(chosen: dict[str, str], zone) -> RecordFilter:
    """The filters as the store compares them: times read in the console's zone when they carry no offset."""
    try:
        since, until = (read_time(chosen[name], name, in_zone=zone) for name in ("since", "until"))
    except click.BadParameter:
        raise ConfigError(_("a time is ISO 8601: 2026-12-01 or 2026-12-01T08:00+08:00")) from None
    return RecordFilter(since=since, until=until, department=chosen["department"], grant_id=chosen["grant"],
                        decision=chosen["decision"] if chosen["decision"] in DECISIONS else "",
                        event=chosen["event"])


def routes() -> list[Route]:
    """The auditor's routes."""
    return [Route("/audit", access_log), Route("/audit/verify", checks), Route("/audit/records/{seq:int}", record)]
