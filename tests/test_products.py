"""The owner's data products: parameters checked and bound on the parse tree, product answers equal to the same
query by hand, products outside the grant refused, and a broker that swaps a product's text refused by the
sandbox. End to end on the run's shared broker and sandbox (the demo data), and directly against the sandbox as
a hostile broker would call it."""

from __future__ import annotations

import grpc
import pytest
import sqlglot
import sqlglot.expressions as exp

from broker.access_log.log import AccessLog
from dsbroker.errors import DsbrokerError, PolicyFileError, ProductError
from dsbroker.policy.model import parse_policy
from dsbroker.policy.product_binding import bind_product, parse_parameters, product_query
from dsbroker.v1 import product_pb2
from tests.conftest import GRANT, POLICIES, sign
from tests.test_hostile_broker import execute, plan_for, refusal

SHIPPED = (POLICIES / f"{GRANT}.yaml").read_text(encoding="utf-8")
STREETS = {"period_from": "2025-01-01", "period_to": "2025-03-01", "streets": "320102003,320102001"}
# The same query as street-revenue-monthly with STREETS bound, written by hand as a department would.
STREETS_BY_HAND = ("SELECT street_code, period, COUNT(DISTINCT taxpayer_id) AS taxpayers, SUM(revenue) AS revenue, "
                   "SUM(vat_paid) AS vat_paid, SUM(cit_paid) AS cit_paid FROM tax.declarations "
                   "WHERE period >= DATE '2025-01-01' AND period <= DATE '2025-03-01' "
                   "AND street_code IN ('320102001', '320102003') GROUP BY street_code, period")
SHIPPED_CALLS = {
    "street-revenue-monthly": STREETS,
    "industry-structure-yoy": {"section": "C"},
    "enterprise-counts-by-size": {"period": "2025-06-01"},
}


@pytest.fixture(scope="module")
def shipped():
    return parse_policy(SHIPPED, source=GRANT)


def bound_refusal(product, values) -> ProductError:
    with pytest.raises(ProductError) as caught:
        bind_product(product, values)
    return caught.value


# -- parameters, bound on the parse tree ----------------------------------------------------------

@pytest.mark.parametrize("name, values, reason, parameter", [
    ("street-revenue-monthly", {**STREETS, "period_from": "2023-12-01"}, "PRODUCT_PARAMETER_OUT_OF_RANGE",
     "period_from"),
    ("street-revenue-monthly", {**STREETS, "period_to": "2027-01-01"}, "PRODUCT_PARAMETER_OUT_OF_RANGE", "period_to"),
    ("street-revenue-monthly", {**STREETS, "streets": "320102001,320104001"}, "PRODUCT_PARAMETER_NOT_ALLOWED",
     "streets"),
    ("street-revenue-monthly", {**STREETS, "streets": "320102001,320102001"}, "PRODUCT_PARAMETER_INVALID", "streets"),
    ("street-revenue-monthly", {**STREETS, "period_from": "January 2025"}, "PRODUCT_PARAMETER_INVALID",
     "period_from"),
    ("street-revenue-monthly", {**STREETS, "period_from": "2025-02-30"}, "PRODUCT_PARAMETER_INVALID", "period_from"),
    ("street-revenue-monthly", {"period_from": "2025-01-01", "streets": "320102001"}, "PRODUCT_PARAMETER_MISSING",
     "period_to"),
    ("street-revenue-monthly", {**STREETS, "district": "320104"}, "PRODUCT_PARAMETER_UNKNOWN", "'district'"),
    ("industry-structure-yoy", {"section": "Z"}, "PRODUCT_PARAMETER_NOT_ALLOWED", "section"),
    ("industry-structure-yoy", {"section": "C,D"}, "PRODUCT_PARAMETER_NOT_ALLOWED", "section"),
    ("enterprise-counts-by-size", {"period": "20250601"}, "PRODUCT_PARAMETER_INVALID", "period"),
])
def test_a_parameter_out_of_bounds_is_refused_with_the_parameter_named(shipped, name, values, reason, parameter):
    error = bound_refusal(shipped.products[name], values)
    assert (error.reason, error.code) == (reason, grpc.StatusCode.INVALID_ARGUMENT)
    assert error.metadata == {"product": name, "parameter": parameter}
    violation = error.rich_details()[0].field_violations[0]
    assert violation.field == f"product.parameters[{parameter}]"


@pytest.mark.parametrize("parameter, value", [
    ("streets", "320102001') OR 1=1 --"),
    ("streets", "320102001'); SELECT taxpayer_id FROM tax.declarations; --"),
    ("period_from", "2025-01-01' OR '1'='1"),
    ("period_from", "2025-01-01'::DATE) OR (1=1"),
])
def test_injection_shaped_values_are_refused(shipped, parameter, value):
    error = bound_refusal(shipped.products["street-revenue-monthly"], {**STREETS, parameter: value})
    assert error.reason in ("PRODUCT_PARAMETER_INVALID", "PRODUCT_PARAMETER_NOT_ALLOWED")
    assert "OR" not in str(error) and "SELECT" not in str(error), "the value is never quoted back"


def test_an_allowed_value_full_of_sql_is_bound_as_one_literal():
    # An owner's list may hold any text; bound on the tree, it stays a string literal whatever it holds.
    hostile = "x') OR 1=1; DROP TABLE tax.declarations; --"
    text = SHIPPED.replace('values: ["C", "D",', f'values: ["{hostile}", "C", "D",')
    product = parse_policy(text).products["industry-structure-yoy"]
    bound = bind_product(product, {"section": hostile})
    statements = sqlglot.parse(bound, read="duckdb")
    assert len(statements) == 1 and not statements[0].find(exp.Drop, exp.Or)
    compared = statements[0].find(exp.EQ)
    assert isinstance(compared.expression, exp.Literal) and compared.expression.this == hostile


def test_a_list_is_bound_as_sorted_literals_of_an_in_and_dates_as_typed_dates(shipped):
    bound = bind_product(shipped.products["street-revenue-monthly"], STREETS)
    tree = sqlglot.parse_one(bound, read="duckdb")
    assert [e.this for e in tree.find(exp.In).expressions] == ["320102001", "320102003"]
    assert {c.to.this for c in tree.find_all(exp.Cast)} == {exp.DataType.Type.DATE}
    assert not list(tree.find_all(exp.Placeholder))
    assert bound == bind_product(shipped.products["street-revenue-monthly"],
                                 {**STREETS, "streets": "320102001,320102003"}), "one text per set of values"


def test_cli_parameters_repeat_into_a_list():
    assert parse_parameters(["streets=320102001", "streets=320102002", "period=2025-01-01"]) == {
        "streets": "320102001,320102002", "period": "2025-01-01"}
    with pytest.raises(ValueError):
        parse_parameters(["streets"])


@pytest.mark.parametrize("old, new, problem", [
    ("AND street_code IN (:streets)", "AND street_code IN (:streets) AND size_class = :size",
     ":size is not a declared parameter"),
    ("AND street_code IN (:streets)", "AND street_code = :streets", "must stand alone in an IN list"),
    ("WHERE period = :period GROUP BY", "WHERE period = CAST('2025-01-01' AS DATE) GROUP BY",
     "period not used in the sql"),
    ("period: {type: date, min: 2024-01-01, max: 2026-12-01,", "period: {type: date, min: 2024-01-01,",
     "missing required key 'products.enterprise-counts-by-size.parameters.period.max'"),
    ('title: {zh: "按规模分类的企业数", en: "Enterprise counts by size class"}',
     'title: {en: "Enterprise counts by size class"}', "described in Chinese and English"),
])
def test_a_product_that_does_not_check_is_a_policy_error_naming_the_line(old, new, problem):
    assert old in SHIPPED
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(SHIPPED.replace(old, new), source="p.yaml")
    assert problem in str(caught.value) and caught.value.metadata["line"]


def test_lint_finds_a_product_the_guard_refuses_under_its_own_grant(shipped):
    from broker.cli.policy_lint import policy_problems

    assert policy_problems(shipped) == [], "the shipped products all pass the guard"
    raw = parse_policy(SHIPPED.replace("SELECT size_class, COUNT(DISTINCT taxpayer_id) AS enterprises",
                                       "SELECT size_class, taxpayer_id, COUNT(*) AS enterprises", 1)
                       .replace("WHERE period = :period GROUP BY size_class",
                                "WHERE period = :period GROUP BY size_class, taxpayer_id", 1))
    (line, problem), = policy_problems(raw)
    assert problem.startswith("products.enterprise-counts-by-size: the guard refuses its query")
    assert "enterprise-counts-by-size:" in raw.document.splitlines()[line - 1]


def test_sql_and_a_product_together_are_refused(shipped):
    call = product_pb2.ProductCall(name="enterprise-counts-by-size", parameters={"period": "2025-06-01"})
    with pytest.raises(ProductError) as caught:
        product_query(shipped, call, "SELECT COUNT(*) AS n FROM tax.declarations")
    assert caught.value.reason == "PRODUCT_CALL_INVALID"


# -- end to end: the shared broker and sandbox on the demo data ----------------------------------

def run_refusal(client, name, values) -> DsbrokerError:
    with pytest.raises(DsbrokerError) as caught:
        client.run_product(GRANT, name, values)
    return caught.value


@pytest.mark.parametrize("name", sorted(SHIPPED_CALLS))
def test_each_shipped_product_runs_on_the_demo_data(client, name):
    result = client.run_product(GRANT, name, SHIPPED_CALLS[name])
    assert result.rows and result.access_record > 0
    assert "district_code = '320102'" in result.rewritten_sql, "the grant's row filter binds a product as any query"
    released = [v for row in result.rows for v in row if v is not None]
    assert released, "cells come back, not only withheld ones"


def test_a_product_answers_cell_for_cell_what_the_same_query_by_hand_does(client):
    by_product = client.run_product(GRANT, "street-revenue-monthly", STREETS)
    by_hand = client.query(GRANT, STREETS_BY_HAND)
    assert by_product.columns == by_hand.columns == ["street_code", "period", "taxpayers", "revenue", "vat_paid",
                                                     "cit_paid"]
    assert by_product.rows == by_hand.rows and len(by_product.rows) == 6
    assert by_product.withheld == by_hand.withheld and by_product.rewritten_sql == by_hand.rewritten_sql


def test_industry_growth_is_computed_on_the_released_cells(client, direct):
    result = client.run_product(GRANT, "industry-structure-yoy", {"section": "C"})
    assert result.columns == ["industry_code", "yr", "revenue", "share", "growth"]
    rows = {(r[0], r[1]): r for r in result.rows}
    for (industry, year), row in rows.items():
        before = rows.get((industry, year - 1))
        if before is not None and row[2] is not None and before[2]:
            assert row[4] == pytest.approx(row[2] / before[2] - 1)
    assert any(r[4] is not None for r in result.rows), "some year has a year before it"


def test_out_of_bounds_through_the_broker_is_invalid_argument_naming_the_parameter(broker, client):
    error = run_refusal(client, "street-revenue-monthly", {**STREETS, "period_to": "2030-01-01"})
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PRODUCT_PARAMETER_OUT_OF_RANGE")
    assert error.metadata["product"] == "street-revenue-monthly" and error.metadata["parameter"] == "period_to"
    assert "2030" not in str(error)
    log = AccessLog(broker.access_log_path)
    last = list(log.records())[-1]
    log.close()
    assert (last.event, last.decision, last.reason) == ("query.decision", "deny", "PRODUCT_PARAMETER_OUT_OF_RANGE")
    assert last.detail["product"] == "street-revenue-monthly"


def test_a_product_not_in_the_grant_is_refused(client):
    error = run_refusal(client, "taxpayer-list", {})
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PRODUCT_NOT_GRANTED")
    assert error.metadata == {"grant": GRANT, "product": "taxpayer-list"}
    with pytest.raises(DsbrokerError) as caught:
        client.run_product(GRANT, "enterprise-counts-by-size", {"period": "2025-06-01"}, version=2)
    assert caught.value.reason == "PRODUCT_VERSION_MISMATCH"


def test_a_product_run_is_in_the_access_log_with_its_name_and_parameters(broker, client):
    log = AccessLog(broker.access_log_path)
    before = max((r.seq for r in log.records()), default=0)
    client.run_product(GRANT, "enterprise-counts-by-size", {"period": "2025-06-01"})
    decision, result = list(log.records(after=before))
    log.close()
    assert (decision.event, decision.decision, result.decision) == ("query.decision", "allow", "released")
    for record in (decision, result):
        assert record.detail["product"] == "enterprise-counts-by-size"
        assert record.detail["product_parameters"] == {"period": "2025-06-01"}
    assert "CAST('2025-06-01' AS DATE)" in decision.sql, "the bound query is recorded as the query's SQL"


def test_the_sdk_lists_the_grants_products_in_chinese_and_english(client):
    products = client.products(GRANT)
    assert sorted(products) == sorted(SHIPPED_CALLS)
    assert products["street-revenue-monthly"].title == {"zh": "街道月度营收与税收",
                                                        "en": "Street revenue and tax by month"}


# -- the sandbox against a broker that swaps a product's text ------------------------------------

def product_plan(signed: str, original_sql: str, name: str, values: dict):
    """The plan for ``original_sql`` under ``signed``, naming the product ``name`` called with ``values``."""
    plan = plan_for(signed, original_sql)
    plan.product.CopyFrom(product_pb2.ProductCall(name=name, parameters=values))
    return plan


def test_the_sandbox_runs_a_product_plan_bound_from_the_signed_policy(sandbox, shipped):
    honest = product_plan(sign(SHIPPED), bind_product(shipped.products["street-revenue-monthly"], STREETS),
                          "street-revenue-monthly", STREETS)
    assert execute(sandbox, honest).table.row_count == 6


def test_a_product_plan_with_another_text_is_refused_by_the_sandbox(sandbox):
    # The broker runs a query the grant allows, but not the product's: the ledger would say the product ran.
    swapped = product_plan(sign(SHIPPED), "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY 1",
                           "street-revenue-monthly", STREETS)
    error = refusal(sandbox, swapped)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PRODUCT_TEMPLATE_MISMATCH")
    assert error.metadata == {"policy": GRANT, "product": "street-revenue-monthly"}


def test_a_product_template_changed_without_the_owners_signature_is_refused_by_the_sandbox(sandbox):
    signed = sign(SHIPPED)
    # A text the grant would allow (another sum under the product's column name): only the signature stops it.
    widened = signed.replace("SUM(vat_paid) AS vat_paid", "SUM(vat_paid + iit_withheld) AS vat_paid", 1)
    assert widened != signed
    edited = parse_policy(widened).products["street-revenue-monthly"]
    plan = product_plan(widened, bind_product(edited, STREETS), "street-revenue-monthly", STREETS)
    error = refusal(sandbox, plan)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "POLICY_SIGNATURE_INVALID")


def test_parameters_out_of_bounds_in_a_plan_are_refused_by_the_sandbox(sandbox, shipped):
    sql = bind_product(shipped.products["street-revenue-monthly"], STREETS)
    plan = product_plan(sign(SHIPPED), sql, "street-revenue-monthly", {**STREETS, "period_from": "2020-01-01"})
    error = refusal(sandbox, plan)
    assert (error.reason, error.metadata["parameter"]) == ("PRODUCT_PARAMETER_OUT_OF_RANGE", "period_from")


# -- the command line -----------------------------------------------------------------------------

def test_product_list_show_and_run_from_the_command_line(broker):
    import json

    from tests.test_cli_workflow import as_actor, run
    from tests.conftest import XUANWU

    requester = as_actor(f"127.0.0.1:{broker.port}", "xuanwu-fgw", XUANWU, "requester")
    listed = run(requester, "product", "list", "--grant", GRANT)
    assert listed.exit_code == 0, listed.output
    assert "street-revenue-monthly  v1  街道月度营收与税收 / Street revenue and tax by month" in listed.output
    shown = run(requester, "product", "show", "street-revenue-monthly", "--grant", GRANT)
    assert shown.exit_code == 0 and "streets (text_list): up to 7 of 320102001" in shown.output
    assert "period_from (date): 2024-01-01 .. 2026-12-01" in shown.output and "IN (:streets)" in shown.output
    ran = run(requester, "product", "run", "enterprise-counts-by-size", "--grant", GRANT,
              "--param", "period=2025-06-01", "--json")
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.output)["columns"] == ["size_class", "enterprises"]
    repeated = run(requester, "product", "run", "street-revenue-monthly", "--grant", GRANT, "--json",
                   *(f"--param={k}={v}" for k, v in {**STREETS, "streets": "320102001"}.items()),
                   "--param", "streets=320102003")
    assert repeated.exit_code == 0, repeated.output
    assert {row[0] for row in json.loads(repeated.output)["rows"]} == {"320102001", "320102003"}
    refused = run(requester, "product", "run", "enterprise-counts-by-size", "--grant", GRANT,
                  "--param", "period=2031-01-01")
    from broker.cli.exit_codes import ExitCode

    assert refused.exit_code == ExitCode.REFUSED
    assert "PRODUCT_PARAMETER_OUT_OF_RANGE" in refused.output and "parameter period must lie" in refused.output


# -- the released-cell auditor sees a product's cells as any query's -----------------------------

@pytest.fixture
def audited(demo_db, tmp_path):
    from tests.test_released_cell_auditor import _stack

    stack = _stack(demo_db, tmp_path, audit=True)
    yield next(stack)
    next(stack, None)


def test_a_products_cells_count_against_a_later_query_by_hand(audited, direct):
    month = "period = DATE '2025-06-01'"
    counts = dict(direct.execute(f"SELECT size_class, COUNT(DISTINCT taxpayer_id) FROM tax.declarations "
                                 f"WHERE district_code = '320102' AND {month} GROUP BY 1").fetchall())
    assert counts["large"] < 10 <= min(counts["medium"], counts["micro"], counts["small"]), "the demo data changed"
    client = audited()
    by_size = client.run_product(GRANT, "enterprise-counts-by-size", {"period": "2025-06-01"})
    released = {row[0]: row[1] for row in by_size.rows}
    assert released["large"] is None and released["micro"] == counts["micro"]
    # The month's total less the product's released cells would be the large firms' count: the auditor withholds it.
    try:
        total = client.query(GRANT, f"SELECT COUNT(DISTINCT taxpayer_id) AS n FROM tax.declarations WHERE {month}")
    except DsbrokerError as error:
        assert error.reason == "AUDIT_REFUSED"
    else:
        assert total.rows == [[None]], "the total would give the large firms' count away"


def test_the_catalog_describes_the_products_offered_in_chinese_and_english(client, shipped):
    offered = {p.name: p for p in client.dataset("tax.declarations").products}
    assert sorted(offered) == sorted(shipped.products)
    for name, product in shipped.products.items():
        described = offered[name]
        assert described.version == product.version
        assert (described.title_zh, described.title_en) == (product.title["zh"], product.title["en"])
        assert (described.description_zh, described.description_en) == (product.description["zh"],
                                                                         product.description["en"])


def test_a_catalog_product_without_its_english_title_does_not_load(tmp_path):
    from dsbroker.errors import ConfigError
    from sandbox.catalog import load_catalog

    text = (POLICIES.parent / "sandbox" / "demo" / "catalog.yaml").read_text(encoding="utf-8")
    old = 'title: {zh: "按规模分类的企业数", en: "Enterprise counts by size class"}'
    assert old in text
    path = tmp_path / "catalog.yaml"
    path.write_text(text.replace(old, 'title: {zh: "按规模分类的企业数"}'), encoding="utf-8")
    columns = [(c, "VARCHAR") for c in ("taxpayer_id", "period", "district_code", "street_code", "industry_code",
                                        "industry_section", "registration_type", "size_class", "revenue", "vat_paid",
                                        "cit_paid", "iit_withheld", "employees")]
    with pytest.raises(ConfigError, match="needs zh and en"):
        load_catalog(path, {"tax.declarations"}, lambda _table: columns)


def test_catalog_show_lists_the_products_offered(broker):
    from tests.test_cli_workflow import as_actor, run
    from tests.conftest import XUANWU

    shown = run(as_actor(f"127.0.0.1:{broker.port}", "xuanwu-fgw", XUANWU, "requester"),
                "catalog", "show", "tax.declarations")
    assert shown.exit_code == 0, shown.output
    line = "data product enterprise-counts-by-size v1: 按规模分类的企业数 / Enterprise counts by size class"
    assert line in shown.output


def test_a_product_is_explained_as_it_runs_and_the_explanation_is_logged(broker, client):
    log = AccessLog(broker.access_log_path)
    before = max((r.seq for r in log.records()), default=0)
    explained = client.explain_product(GRANT, "street-revenue-monthly", STREETS)
    records = list(log.records(after=before))
    log.close()
    assert explained.rewritten_sql == client.run_product(GRANT, "street-revenue-monthly", STREETS).rewritten_sql
    assert (records[0].event, records[0].decision, records[0].detail["product"]) == (
        "query.explain", "allow", "street-revenue-monthly")
    with pytest.raises(DsbrokerError) as caught:
        client.explain_product(GRANT, "street-revenue-monthly", {**STREETS, "streets": "320104001"})
    assert (caught.value.reason, caught.value.metadata["parameter"]) == ("PRODUCT_PARAMETER_NOT_ALLOWED", "streets")


def test_product_run_explain_from_the_command_line(broker):
    from tests.test_cli_workflow import as_actor, run
    from tests.conftest import XUANWU

    requester = as_actor(f"127.0.0.1:{broker.port}", "xuanwu-fgw", XUANWU, "requester")
    shown = run(requester, "product", "run", "enterprise-counts-by-size", "--grant", GRANT, "--param",
                "period=2025-06-01", "--explain")
    assert shown.exit_code == 0, shown.output
    assert "nothing was run" in shown.output and "add_row_filter" in shown.output


# -- a grant that answers only its products (queries: products) -----------------------------------

PRODUCTS_ONLY = SHIPPED.replace("\nproducts:\n", "\nqueries: products\nproducts:\n", 1)


@pytest.fixture(scope="module")
def products_only(sandbox, tmp_path_factory):
    """A broker on the run's sandbox whose one grant is the shipped one with ``queries: products``, and a client."""
    from broker.client.sdk import BrokerClient
    from broker.server import start_broker
    from tests.conftest import broker_settings_for, client_tls, token_for
    state = tmp_path_factory.mktemp("products-only")
    policies = state / "policies"
    policies.mkdir()
    (policies / f"{GRANT}.yaml").write_text(sign(PRODUCTS_ONLY), encoding="utf-8")
    running = start_broker(broker_settings_for(sandbox.port, state / "log.sqlite", policies=str(policies)))
    with BrokerClient(f"127.0.0.1:{running.port}", token=token_for(), tls=client_tls()) as client:
        yield client
    running.stop()


def test_a_products_only_grant_refuses_sql_of_the_callers_own_and_runs_its_products(products_only):
    assert parse_policy(PRODUCTS_ONLY).products_only and not parse_policy(SHIPPED).products_only
    for ask in (products_only.query, products_only.explain):
        with pytest.raises(DsbrokerError) as caught:
            ask(GRANT, STREETS_BY_HAND)  # the product's very query, written by hand
        error = caught.value
        assert (error.code, error.reason, error.metadata) == (grpc.StatusCode.PERMISSION_DENIED,
                                                               "AD_HOC_QUERY_NOT_GRANTED", {"grant": GRANT})
    answer = products_only.run_product(GRANT, "street-revenue-monthly", STREETS)
    assert len(answer.rows) == 6


def test_a_broker_sending_a_products_text_as_sql_of_the_callers_own_is_refused_by_the_sandbox(sandbox, shipped):
    """A hostile broker drops the product call and sends the bound text as an ordinary query: the grant's columns
    would allow it, but the grant answers its products only, and the sandbox says so."""
    sql = bind_product(shipped.products["street-revenue-monthly"], STREETS)
    error = refusal(sandbox, plan_for(sign(PRODUCTS_ONLY), sql))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "AD_HOC_QUERY_NOT_GRANTED")
    honest = product_plan(sign(PRODUCTS_ONLY), sql, "street-revenue-monthly", STREETS)
    assert execute(sandbox, honest).table.row_count == 6


@pytest.mark.parametrize("old, new, problem", [
    ("\nproducts:\n", "\nqueries: some\nproducts:\n", "queries"),
    ("\nresults:", "\nqueries: [products]\nresults:", "queries"),
])
def test_queries_takes_any_or_products(old, new, problem):
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(SHIPPED.replace(old, new, 1))
    assert problem in str(caught.value)


def test_queries_products_without_products_is_a_policy_error():
    start, end = SHIPPED.index("\nproducts:\n"), SHIPPED.index("\nrow_filter:")
    without = SHIPPED[:start] + "\nqueries: products" + SHIPPED[end:]
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(without)
    assert "queries: products needs products" in str(caught.value)
