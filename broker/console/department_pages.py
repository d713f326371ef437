"""A department's pages: the catalog, its grants and requests, and the query workspace (the released table,
its chart, the disclosure rules applied, CSV and XLSX to download)."""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.cli.exports import Sheet, csv_text, xlsx_bytes
from broker.cli.i18n import _
from broker.cli.money import unit_name
from broker.cli.output import cell_text, is_number, money_text_of, result_rows
from broker.cli.query import money_of
from broker.cli.reasons import rule_note
from broker.console.chart import Bar, bar_chart, chart_column
from broker.console.pages import page, settings_of
from broker.v1 import access_request_service_pb2 as requests_pb
from broker.v1 import policy_service_pb2 as policies_pb

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MOST_LISTED = 200  # grants and requests on one page; the CLI pages through more


def catalog(request: Request) -> Response:
    """Every dataset the owners describe."""
    with settings_of(request).connection.client() as client:
        return page(request, "catalog.html", datasets=client.datasets())


def dataset(request: Request) -> Response:
    """One dataset: its columns, their units and levels, the owner's products."""
    with settings_of(request).connection.client() as client:
        return page(request, "dataset.html", dataset=client.dataset(request.path_params["name"]))


def grants(request: Request) -> Response:
    """The department's grants (policies) and where each stands."""
    with settings_of(request).connection.client() as client:
        listed, _next = client.list_policies(page_size=MOST_LISTED)
    return page(request, "grants.html", policies=listed, state_name=policy_state)


def my_requests(request: Request) -> Response:
    """The department's access requests and where each stands."""
    with settings_of(request).connection.client() as client:
        listed, _next = client.list_requests(page_size=MOST_LISTED)
    return page(request, "requests.html", requests=listed, state_name=request_state)


def query_form(request: Request) -> Response:
    """The workspace: a grant to query under and the SQL; after a run, the released table below."""
    with settings_of(request).connection.client() as client:
        listed, _next = client.list_policies(page_size=MOST_LISTED)
    usable = [p.name.removeprefix("policies/") for p in listed if p.state == policies_pb.POLICY_STATE_ACTIVE]
    return page(request, "query.html", grants=usable, chosen=request.query_params.get("grant", ""), sql="",
                unit="yuan", result=None)


def run_query(request: Request) -> Response:
    """Run the SQL under the grant and show what was released (nothing of it is kept here)."""
    from broker.console.app import posted

    fields = posted(request)
    grant, sql = fields.get("grant", ""), fields.get("sql", "")
    unit = fields.get("unit") if fields.get("unit") in ("yuan", "wan") else "yuan"
    with settings_of(request).connection.client() as client:
        listed, _next = client.list_policies(page_size=MOST_LISTED)
        usable = [p.name.removeprefix("policies/") for p in listed if p.state == policies_pb.POLICY_STATE_ACTIVE]
        result = client.query(grant, sql)
        money = money_of(client, sql)
    return page(request, "query.html", grants=usable, chosen=grant, sql=sql, unit=unit,
                result=released_view(result, unit, money))


def released_view(result, unit: str, money: set[int]) -> dict:
    """What the page shows of a result: cells as text (withheld marked), the chart, the rules, the downloads."""
    headings, rows = result_rows(result, unit, money)
    shown = [[_("withheld") if (r, c) in result.withheld
              else money_text_of(v, unit) if c in money and isinstance(v, Decimal) else cell_text(v)
              for c, v in enumerate(row)] for r, row in enumerate(rows)]
    numeric = {c for c in range(len(headings)) if c in money or any(is_number(row[c]) for row in rows)}
    sheet = Sheet(headings, rows, money=set(money), unit_name=unit_name(unit), title=_("query result"))
    column = chart_column(result.columns, result.rows, result.withheld, money)
    chart = None
    if column is not None:
        label_columns = [c for c in range(len(headings)) if c != column and c not in numeric] or [0]
        bars = [Bar(" · ".join(shown[r][c] for c in label_columns),
                    None if (r, column) in result.withheld else rows[r][column], shown[r][column])
                for r in range(len(rows))]
        chart = bar_chart(bars, title=headings[column], withheld_label=_("withheld"))
    return {"headings": headings, "rows": shown, "withheld": result.withheld, "numeric": numeric,
            "rules": [rule_note(r) for r in result.disclosure_rules], "raw_rules": result.disclosure_rules,
            "chart": chart, "chart_of": headings[column] if column is not None else "",
            "rewritten_sql": result.rewritten_sql, "access_record": result.access_record,
            "truncated": result.truncated, "policy_version": result.policy_version,
            "csv": "data:text/csv;charset=utf-8;base64," + base64.b64encode(csv_text(sheet).encode()).decode(),
            "xlsx": f"data:{XLSX_TYPE};base64," + base64.b64encode(xlsx_bytes(sheet)).decode()}


def request_form(request: Request) -> Response:
    """A new access request: purpose, the chosen dataset's columns with their use and why, the owner's products
    offered to requests, example queries, validity and volume."""
    with settings_of(request).connection.client() as client:
        datasets = [d for d in client.datasets() if d.entity_column]
    if not datasets:
        return page(request, "new_request.html", datasets=[], chosen=None)
    wanted = request.query_params.get("dataset", "")
    chosen = next((d for d in datasets if d.name == wanted), datasets[0])
    today = dt.datetime.now(settings_of(request).zone).date()
    return page(request, "new_request.html", datasets=datasets, chosen=chosen, today=today.isoformat(),
                until=(today + dt.timedelta(days=180)).isoformat())


def submit_request(request: Request) -> Response:
    """Submit the request as the person signed in; the broker checks it against the catalog and drafts its policy."""
    from broker.console.app import posted

    fields = posted(request)
    uses = {"group": requests_pb.COLUMN_USE_GROUP, "filter": requests_pb.COLUMN_USE_FILTER,
            "measure": requests_pb.COLUMN_USE_MEASURE}
    columns = [requests_pb.RequestedColumn(column=key.removeprefix("use."), use=uses[value],
                                           reason=fields.get("reason." + key.removeprefix("use."), ""))
               for key, value in fields.items() if key.startswith("use.") and value in uses]
    try:
        per_day = int(fields.get("queries_per_day", "0"))
    except ValueError:
        per_day = 0  # the broker refuses it, naming the field
    wanted = requests_pb.AccessRequest(
        purpose=fields.get("purpose", ""), dataset=fields.get("dataset", ""), columns=columns,
        products=[key.removeprefix("product.") for key in fields if key.startswith("product.")],
        example_queries=[line.strip() for line in fields.get("examples", "").splitlines() if line.strip()],
        result_modes=["aggregate"], valid_from=fields.get("valid_from", ""), valid_until=fields.get("valid_until", ""),
        queries_per_day=per_day)
    with settings_of(request).connection.client() as client:
        submitted = client.submit_request(wanted)
    return page(request, "submitted.html", submitted=submitted, state_name=request_state)


def policy_state(value: int) -> str:
    """A policy's state as a word (active, suspended, ...)."""
    return policies_pb.PolicyState.Name(value).removeprefix("POLICY_STATE_").lower()


def request_state(value: int) -> str:
    """An access request's state as a word (submitted, reviewed, active, ...)."""
    return requests_pb.AccessRequestState.Name(value).removeprefix("ACCESS_REQUEST_STATE_").lower()


def routes() -> list[Route]:
    """The department's routes."""
    return [Route("/catalog", catalog), Route("/catalog/{name}", dataset), Route("/grants", grants),
            Route("/requests", my_requests), Route("/requests/new", request_form, methods=["GET"]),
            Route("/requests/new", submit_request, methods=["POST"]), Route("/query", query_form, methods=["GET"]),
            Route("/query", run_query, methods=["POST"])]
