"""Findings of a thirteenth outside review: the owner's data products (branch data-products).

The review attacked products as a curious department (parameter values shaped to inject SQL or change the
query's shape, products that isolate one taxpayer by differencing two runs, products outside the grant, old
versions, explain) and as a hostile broker (plans naming a product whose text, version or parameters are not the
signed policy's), and looked for crashes, leaked values and refusals that depend on the data.

- **FINDING** tests failed on the code they were written against; each says how the attack works and what the
  safe behaviour is.
- **PIN** tests pass: attacks tried that the code refuses or handles correctly, pinned so that a later change
  cannot lose them silently.

Findings, all fixed on this branch: a placeholder where a literal is SQL (a GROUP BY / ORDER BY position, a table,
an alias) loaded (dsbroker/policy/products.py); a text_list value holding a comma, which no call can name, loaded
(same file); an integer "2\n" was taken as 2 (dsbroker/policy/product_binding.py); a catalog product version "²" or
past int64 crashed the sandbox's start (sandbox/catalog.py); a newer grant version could keep a product's version
number and change its query, so a caller's version pin got another text (broker/workflow/policy_registry.py).
"""

from __future__ import annotations

import grpc
import pytest

from broker.client.sdk import BrokerClient
from broker.dev.keys import sandbox_settings
from broker.server import start_broker
from broker.v1 import query_service_pb2 as query_pb
from dsbroker.errors import DsbrokerError, PolicyFileError, ProductError
from dsbroker.policy.model import parse_policy
from dsbroker.policy.product_binding import bind_product
from dsbroker.v1 import product_pb2
from sandbox.demo.data import DEMO_DATASETS
from sandbox.server import start_sandbox
from sandbox.settings import SandboxSettings
from tests.conftest import (GRANT, broker_settings_for, call_raw, client_tls, dev_keys, policies_with, sign,
                            token_for)
from tests.test_hostile_broker import deployment, document, execute, own, refusal  # noqa: F401 (fixtures)
from tests.test_products import SHIPPED, STREETS, product_plan

# -- a product of the test's own, whose list parameter sums across its members ----------------------

# Summed over a list of size classes, with no group by the class: two runs whose lists differ by "large" give the
# large firms' total by difference, and the month's large firms are fewer than the grant's 10 (the products
# tests pin that in the demo data).
SIZE_TOTALS = """  size-totals:
    version: 1
    title: {zh: "所选规模企业合计", en: "Totals of the chosen size classes"}
    parameters:
      period: {type: date, min: 2024-01-01, max: 2026-12-01}
      sizes: {type: text_list, values: ["large", "medium", "micro", "small"]}
    sql: |
      SELECT COUNT(DISTINCT taxpayer_id) AS enterprises, SUM(revenue) AS revenue
      FROM tax.declarations WHERE period = :period AND size_class IN (:sizes)
"""
SIZE_TOTALS_BY_HAND = ("SELECT COUNT(DISTINCT taxpayer_id) AS enterprises, SUM(revenue) AS revenue "
                       "FROM tax.declarations WHERE period = DATE '2025-06-01' AND size_class IN ({})")
MONTH = "2025-06-01"
BARE_GRANT = "xuanwu-fgw-2026-008"


@pytest.fixture
def audited_products(demo_db, tmp_path):
    """A broker and an auditing sandbox of the test's own whose grant holds SIZE_TOTALS too; yields a client."""
    sandbox = start_sandbox(SandboxSettings(
        audit_released_cells=True, listen="127.0.0.1:0", data=str(demo_db), datasets=DEMO_DATASETS,
        released_cells=str(tmp_path / "released.sqlite"), privacy_ledger=str(tmp_path / "privacy.sqlite"),
        execution_ledger=str(tmp_path / "executions.sqlite"), policy_ledger=str(tmp_path / "policies.sqlite"),
        **sandbox_settings(dev_keys())))
    policies = policies_with(tmp_path, "products:\n", "products:\n" + SIZE_TOTALS)
    # A second grant of the same department, without products: a product of the first is not one of its own.
    start, end = SHIPPED.index("products:\n"), SHIPPED.index("row_filter:")
    bare = (SHIPPED[:start] + SHIPPED[end:]).replace(f"id: {GRANT}", f"id: {BARE_GRANT}")
    (tmp_path / "policies" / f"{BARE_GRANT}.yaml").write_text(sign(bare), encoding="utf-8")
    broker = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", policies=policies))
    client = BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(), tls=client_tls())
    yield client
    client.close()
    broker.stop()
    sandbox.stop()


def _cells_or_refused(run) -> list | str:
    try:
        return run().rows
    except DsbrokerError as error:
        return error.reason


def test_pin_differencing_two_product_runs_by_one_list_member_is_caught_by_the_auditor(audited_products, direct):
    counts = dict(direct.execute("SELECT size_class, COUNT(DISTINCT taxpayer_id) FROM tax.declarations WHERE "
                                 f"district_code = '320102' AND period = DATE '{MONTH}' GROUP BY 1").fetchall())
    assert counts["large"] < 10 <= counts["medium"], "the demo data changed"
    client = audited_products
    first = client.run_product(GRANT, "size-totals", {"period": MONTH, "sizes": "medium,micro"})
    assert first.rows[0][0] == counts["medium"] + counts["micro"], "the first run is released"
    second = _cells_or_refused(lambda: client.run_product(GRANT, "size-totals",
                                                          {"period": MONTH, "sizes": "micro,large,medium"}))
    assert second == "AUDIT_REFUSED" or all(v is None for v in second[0]), \
        "the second run less the first is the large firms' total"
    # The same SQL by hand is answered alike: a product is no way around the auditor, nor a way to be refused more.
    by_hand = _cells_or_refused(lambda: client.query(GRANT, SIZE_TOTALS_BY_HAND.format("'large', 'medium', 'micro'")))
    assert by_hand == "AUDIT_REFUSED" or all(v is None for v in by_hand[0])


def test_pin_either_run_alone_is_released_so_it_is_the_auditor_that_withholds_the_difference(audited_products):
    client = audited_products
    larger = client.run_product(GRANT, "size-totals", {"period": MONTH, "sizes": "large,medium,micro"})
    assert all(v is not None for v in larger.rows[0]), "released when nothing was released before"
    smaller = _cells_or_refused(lambda: client.run_product(GRANT, "size-totals",
                                                           {"period": MONTH, "sizes": "medium,micro"}))
    assert smaller == "AUDIT_REFUSED" or all(v is None for v in smaller[0])


def test_pin_a_product_of_one_grant_is_not_run_under_another_grant_of_the_department(audited_products):
    with pytest.raises(DsbrokerError) as caught:
        audited_products.run_product(BARE_GRANT, "size-totals", {"period": MONTH, "sizes": "medium,micro"})
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PRODUCT_NOT_GRANTED")
    assert caught.value.metadata == {"grant": BARE_GRANT, "product": "size-totals"}


def test_pin_a_list_of_one_member_is_a_cell_like_any_other(audited_products):
    one = audited_products.run_product(GRANT, "size-totals", {"period": MONTH, "sizes": "large"})
    assert all(v is None for v in one.rows[0]), "the large firms alone are fewer than 10: withheld"


# -- a curious department through the broker -------------------------------------------------------

def _refused(client, name, values, **options) -> DsbrokerError:
    with pytest.raises(DsbrokerError) as caught:
        client.run_product(GRANT, name, values, **options)
    return caught.value


@pytest.mark.parametrize("values, reason, parameter", [
    ({**STREETS, "streets": ""}, "PRODUCT_PARAMETER_MISSING", "streets"),
    ({**STREETS, "streets": ","}, "PRODUCT_PARAMETER_INVALID", "streets"),
    ({**STREETS, "streets": "320102001,"}, "PRODUCT_PARAMETER_NOT_ALLOWED", "streets"),
    ({**STREETS, "streets": ",".join(["320102001"] * 2000)}, "PRODUCT_PARAMETER_INVALID", "streets"),
    ({**STREETS, "streets": "320102001,320102002,320102003,320102004,320102005,320102006,320102007,320102001"},
     "PRODUCT_PARAMETER_OUT_OF_RANGE", "streets"),
    ({**STREETS, "streets": "320102001\x00"}, "PRODUCT_PARAMETER_NOT_ALLOWED", "streets"),
    ({**STREETS, "streets": "３２０１０２００１"}, "PRODUCT_PARAMETER_NOT_ALLOWED", "streets"),
    ({**STREETS, "streets": "320102001 "}, "PRODUCT_PARAMETER_NOT_ALLOWED", "streets"),
    ({**STREETS, "period_from": "2025-01-01\n"}, "PRODUCT_PARAMETER_INVALID", "period_from"),
    ({**STREETS, "period_from": "２０２５-01-01"}, "PRODUCT_PARAMETER_INVALID", "period_from"),
    ({**STREETS, "period_from": "NULL"}, "PRODUCT_PARAMETER_INVALID", "period_from"),
    ({**STREETS, "period_from": "2025-01-01 00:00:00"}, "PRODUCT_PARAMETER_INVALID", "period_from"),
    ({**STREETS, "period_from": "9999-12-31"}, "PRODUCT_PARAMETER_OUT_OF_RANGE", "period_from"),
    ({**STREETS, "period_from": "0001-01-01"}, "PRODUCT_PARAMETER_OUT_OF_RANGE", "period_from"),
    ({**STREETS, "taxpayer_id": "1"}, "PRODUCT_PARAMETER_UNKNOWN", "'taxpayer_id'"),
    ({**STREETS, "department": "xuanwu-tjj"}, "PRODUCT_PARAMETER_UNKNOWN", "'department'"),
    ({**STREETS, "x" * 5000: "1"}, "PRODUCT_PARAMETER_UNKNOWN", "'" + "x" * 40 + "…'"),
])
def test_pin_hostile_parameter_values_are_refused_naming_the_parameter(client, values, reason, parameter):
    error = _refused(client, "street-revenue-monthly", values)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert error.metadata["parameter"] == parameter
    assert "Traceback" not in str(error) and "3201020" not in str(error), "no value is quoted back"


def test_pin_a_reversed_range_is_an_empty_answer_not_an_error(client):
    result = client.run_product(GRANT, "street-revenue-monthly",
                                {**STREETS, "period_from": "2025-03-01", "period_to": "2025-01-01"})
    assert result.rows == []


@pytest.mark.parametrize("name", ["", "street-revenue-monthly' OR '1'='1", "x" * 10_000, "街道", "\x00",
                                  "STREET-REVENUE-MONTHLY", "street-revenue-monthly "])
def test_pin_a_product_name_not_in_the_grant_is_not_granted(client, name):
    error = _refused(client, name, STREETS)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PRODUCT_NOT_GRANTED")
    assert len(str(error)) < 400, "a long name is cut"


def test_pin_sql_and_a_product_in_one_request_are_refused_through_the_broker(broker):
    request = query_pb.RunQueryRequest(
        policy=f"policies/{GRANT}", sql="SELECT street_code, SUM(vat_paid) AS v FROM tax.declarations GROUP BY 1",
        product=product_pb2.ProductCall(name="enterprise-counts-by-size", parameters={"period": MONTH}))
    _, code = call_raw(broker.port, "/broker.v1.QueryService/RunQuery", request, token=token_for())
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_pin_a_product_of_another_departments_grant_is_not_reachable(client):
    other = BrokerClient(client.target, token=token_for("xuanwu-tjj"), tls=client_tls())
    try:
        with pytest.raises(DsbrokerError) as caught:
            other.run_product(GRANT, "enterprise-counts-by-size", {"period": MONTH})
        # Whether the other grant holds a product of that name is not learnt either: refused alike.
        with pytest.raises(DsbrokerError) as absent:
            other.explain_product(GRANT, "no-such-product", {})
    finally:
        other.close()
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert not caught.value.reason.startswith("PRODUCT_"), "refused as the grant's, before any product is looked at"
    assert (absent.value.code, absent.value.reason) == (caught.value.code, caught.value.reason)


def test_pin_explain_refuses_as_run_refuses_and_says_nothing_more(client):
    for values in ({**STREETS, "streets": "320104001"}, {**STREETS, "period_to": "2030-01-01"}, {"x": "1"}):
        with pytest.raises(DsbrokerError) as run:
            client.run_product(GRANT, "street-revenue-monthly", values)
        with pytest.raises(DsbrokerError) as explained:
            client.explain_product(GRANT, "street-revenue-monthly", values)
        assert (run.value.reason, run.value.metadata) == (explained.value.reason, explained.value.metadata)
        assert str(run.value) == str(explained.value)


# -- a hostile broker against the sandbox ---------------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    return parse_policy(SHIPPED, source=GRANT)


def _bound(shipped, name="street-revenue-monthly", values=None):
    return bind_product(shipped.products[name], values or STREETS)


def test_pin_a_plan_claiming_a_product_the_policy_lacks_is_refused(sandbox, shipped):
    plan = product_plan(sign(SHIPPED), _bound(shipped), "taxpayer-list", STREETS)
    error = refusal(sandbox, plan)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PRODUCT_NOT_GRANTED")


def test_pin_a_plan_claiming_another_version_is_refused(sandbox, shipped):
    plan = product_plan(sign(SHIPPED), _bound(shipped), "street-revenue-monthly", STREETS)
    plan.product.version = 2
    assert refusal(sandbox, plan).reason == "PRODUCT_VERSION_MISMATCH"


def test_pin_a_plan_whose_parameters_are_not_those_its_sql_was_bound_with_is_refused(sandbox, shipped):
    other = {**STREETS, "streets": "320102001"}
    plan = product_plan(sign(SHIPPED), _bound(shipped, values=other), "street-revenue-monthly", STREETS)
    assert refusal(sandbox, plan).reason == "PRODUCT_TEMPLATE_MISMATCH"


def test_pin_a_plan_naming_one_product_with_anothers_text_is_refused(sandbox, shipped):
    counts = _bound(shipped, "enterprise-counts-by-size", {"period": MONTH})
    plan = product_plan(sign(SHIPPED), counts, "street-revenue-monthly", STREETS)
    assert refusal(sandbox, plan).reason == "PRODUCT_TEMPLATE_MISMATCH"


@pytest.mark.parametrize("edit", [lambda sql: sql + " -- x", lambda sql: sql.replace("SELECT", "SELECT /* */", 1),
                                  lambda sql: sql.replace("'320102003'", "'320102004'")])
def test_pin_a_plan_whose_text_differs_from_the_binding_by_anything_is_refused(sandbox, shipped, edit):
    plan = product_plan(sign(SHIPPED), edit(_bound(shipped)), "street-revenue-monthly", STREETS)
    assert refusal(sandbox, plan).reason in ("PRODUCT_TEMPLATE_MISMATCH", "PLAN_INVALID", "PLAN_NOT_GUARDED")


def test_pin_a_plan_under_an_old_version_after_the_owner_published_a_new_product_is_refused(own, shipped):
    # The owner publishes version 2 of the grant with version 2 of the product (another text); a broker that
    # keeps running version 1's text under version 1's document is refused by the policy ledger.
    sandbox = own.start()
    text = SHIPPED.replace("version: 1", "version: 2", 1).replace(
        "street-revenue-monthly:\n    version: 1", "street-revenue-monthly:\n    version: 2").replace(
        "SUM(cit_paid) AS cit_paid\n", "SUM(cit_paid) AS cit_paid, SUM(iit_withheld) AS iit_withheld\n", 1)
    newer = parse_policy(text)
    assert newer.products["street-revenue-monthly"].version == 2
    execute(sandbox, product_plan(sign(text), bind_product(newer.products["street-revenue-monthly"], STREETS),
                                  "street-revenue-monthly", STREETS))
    old = product_plan(document(1), _bound(shipped), "street-revenue-monthly", STREETS)
    assert refusal(sandbox, old).reason == "POLICY_SUPERSEDED"
    # And the old text under the new document is not the new product's: refused by the binding.
    stale = product_plan(sign(text), _bound(shipped), "street-revenue-monthly", STREETS)
    assert refusal(sandbox, stale).reason == "PRODUCT_TEMPLATE_MISMATCH"
    stale.product.version = 1
    assert refusal(sandbox, stale).reason == "PRODUCT_VERSION_MISMATCH"


# -- the owner's products as the loader reads them -------------------------------------------------

def _with_probe(sql: str, parameters: str) -> str:
    """The shipped grant with one more product, ``probe``, of ``sql`` and ``parameters`` (YAML lines)."""
    return SHIPPED.replace("products:\n", "products:\n  probe:\n    version: 1\n    title: {zh: 探针, en: probe}\n"
                           f"    parameters:\n{parameters}    sql: |\n      {sql}\n", 1)


NUMBER = "      n: {type: integer, min: 1, max: 3}\n"
TABLE = '      t: {type: text, values: ["tax.declarations", "tax.streets"]}\n'


@pytest.mark.parametrize("sql, parameters", [
    # A whole number in GROUP BY or ORDER BY is a column's position, not a value: the caller would pick the
    # columns the query groups or sorts by, a shape the owner never signed (GROUP BY :n with n=1 or n=2).
    ("SELECT street_code, size_class, SUM(revenue) AS r FROM tax.declarations GROUP BY :n, 2", NUMBER),
    ("SELECT street_code, SUM(revenue) AS r FROM tax.declarations GROUP BY 1 ORDER BY :n", NUMBER),
    # A text in FROM is a table (or, in DuckDB, a file it reads); as an alias, a name: neither is data.
    ("SELECT street_code, COUNT(DISTINCT taxpayer_id) AS n FROM :t GROUP BY 1", TABLE),
    ("SELECT street_code, COUNT(DISTINCT taxpayer_id) AS n FROM tax.declarations AS :t GROUP BY 1", TABLE),
])
def test_finding_a_placeholder_that_stands_for_sql_rather_than_a_value_is_refused_at_load(sql, parameters):
    # FINDING: the loader took a placeholder anywhere in the template, so a product's parameter could choose a
    # GROUP BY / ORDER BY column by position, or a table, though the module promises a value is "data, never SQL".
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(_with_probe(sql, parameters), source="p.yaml")
    assert "stands for" in str(caught.value) and caught.value.metadata["line"]


def test_pin_placeholders_as_values_still_load():
    sql = ("SELECT street_code, SUM(revenue) - :n AS r FROM tax.declarations WHERE period >= :d "
           "GROUP BY 1 HAVING SUM(revenue) > -:n LIMIT :n")
    product = parse_policy(_with_probe(sql, NUMBER + "      d: {type: date, min: 2024-01-01, max: 2026-12-01}\n"))
    bound = bind_product(product.products["probe"], {"n": "2", "d": "2025-01-01"})
    assert "- 2" in bound and "> -2" in bound and "LIMIT 2" in bound


# -- the catalog's description of products ---------------------------------------------------------

@pytest.mark.parametrize("version", ["'²'", "99999999999999999999999"])
def test_finding_a_catalog_product_version_that_is_no_small_whole_number_is_a_config_error(tmp_path, version):
    # FINDING: str.isdigit() takes "²" (and int() then raised ValueError), and a number past int64 made the
    # DatasetProduct message raise: either crashed the sandbox's start with a stack trace, not a ConfigError.
    from dsbroker.errors import ConfigError
    from sandbox.catalog import load_catalog
    from tests.conftest import POLICIES

    text = (POLICIES.parent / "sandbox" / "demo" / "catalog.yaml").read_text(encoding="utf-8")
    old = "enterprise-counts-by-size:\n        version: 1\n"
    assert old in text, "the demo catalog changed"
    path = tmp_path / "catalog.yaml"
    path.write_text(text.replace(old, f"enterprise-counts-by-size:\n        version: {version}\n"), encoding="utf-8")
    columns = [(c, "VARCHAR") for c in ("taxpayer_id", "period", "district_code", "street_code", "industry_code",
                                        "industry_section", "registration_type", "size_class", "revenue", "vat_paid",
                                        "cit_paid", "iit_withheld", "employees")]
    with pytest.raises(ConfigError, match="version must be a whole number"):
        load_catalog(path, {"tax.declarations"}, lambda _table: columns)


# -- windows over a product's released cells -------------------------------------------------------

def test_pin_a_withheld_industry_leaks_through_neither_its_share_nor_its_growth(client, direct):
    # Section M's division 75 is withheld by the dominance rule in the demo data. Were the window computed on
    # every cell, a released share (revenue / the year's total) would give the total away, and with it 75's
    # revenue; a released growth next to a withheld year would give that year's revenue.
    result = client.run_product(GRANT, "industry-structure-yoy", {"section": "M"})
    withheld = {(row[0], row[1]) for row in result.rows if row[2] is None}
    assert ("75", 2024) in withheld, "the demo data changed"
    for industry, year, _revenue, share, growth in result.rows:
        if any(y == year for _, y in withheld):
            assert share is None, "a share in a year with a withheld cell would give the year's total away"
        if (industry, year) in withheld or (industry, year - 1) in withheld:
            assert growth is None


def test_finding_a_list_value_no_caller_can_give_is_refused_at_load():
    # FINDING: a text_list member holding a comma is split in two by the binding: the loader took such a value,
    # which no call could ever name, and lint then reported the product's first value as a guard refusal.
    # (An empty value was already refused.)
    text = SHIPPED.replace(
        'values: ["320102001", "320102002", "320102003", "320102004", "320102005", "320102006", "320102007"]',
        'values: ["320102001,320102002", "320102003"]')
    assert text != SHIPPED
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(text, source="p.yaml")
    assert "cannot be given" in str(caught.value) and caught.value.metadata["line"]


@pytest.mark.parametrize("value", ["2\n", "+2", " 2", "2 ", "2.0", "1e0", "0x2", "２", "٢", "2\x00", "NULL", "true"])
def test_finding_an_integer_is_ascii_digits_and_nothing_after_them(value):
    # FINDING (the first value): the whole-number pattern ended in "$", which matches before a trailing newline,
    # so "2\n" was taken as 2: harmless in the SQL, but the access log recorded a value other than the one bound.
    product = parse_policy(_with_probe("SELECT street_code, SUM(revenue) AS r FROM tax.declarations GROUP BY 1 "
                                       "HAVING COUNT(DISTINCT taxpayer_id) > :n", NUMBER)).products["probe"]
    assert "> 2" in bind_product(product, {"n": "2"})
    with pytest.raises(ProductError) as caught:
        bind_product(product, {"n": value})
    assert (caught.value.reason, caught.value.metadata["parameter"]) == ("PRODUCT_PARAMETER_INVALID", "n")


# -- a product's version across the grant's versions -----------------------------------------------

def test_finding_a_product_version_pinned_by_the_caller_never_runs_another_text(deployment, caplog):
    # FINDING: nothing compared a product across the grant's versions, so the owner could sign a new grant version
    # whose product keeps its version number but runs another text, and a caller pinning version 1
    # (ProductCall.version: "refused rather than run as a different query") got a different query. The broker
    # now does not install such a version (it warns, and serves the stored one).

    with deployment.client() as client:
        first = client.run_product(GRANT, "street-revenue-monthly", STREETS, version=1)
    text = SHIPPED.replace("version: 1", "version: 2", 1).replace(
        "SUM(cit_paid) AS cit_paid\n", "SUM(cit_paid) AS cit_paid, SUM(iit_withheld) AS iit_withheld\n", 1)
    assert parse_policy(text).products["street-revenue-monthly"].version == 1, "the product keeps its version"
    (deployment.policies / f"{GRANT}.yaml").write_text(sign(text), encoding="utf-8")
    deployment.broker.stop()
    with caplog.at_level("WARNING", logger="broker.workflow.policy_registry"):
        deployment.broker = start_broker(deployment.settings)
    assert "changes product street-revenue-monthly but keeps its version" in caplog.text
    with deployment.client() as client:
        again = client.run_product(GRANT, "street-revenue-monthly", STREETS, version=1)
    assert again.columns == first.columns and again.policy_version == 1, "version 1 of the product is the text it was"


def test_pin_a_new_grant_version_that_raises_the_products_version_is_installed(deployment):
    text = SHIPPED.replace("version: 1", "version: 2", 1).replace(
        "street-revenue-monthly:\n    version: 1", "street-revenue-monthly:\n    version: 2").replace(
        "SUM(cit_paid) AS cit_paid\n", "SUM(cit_paid) AS cit_paid, SUM(iit_withheld) AS iit_withheld\n", 1)
    (deployment.policies / f"{GRANT}.yaml").write_text(sign(text), encoding="utf-8")
    deployment.broker.stop()
    deployment.broker = start_broker(deployment.settings)
    with deployment.client() as client:
        with pytest.raises(DsbrokerError) as caught:
            client.run_product(GRANT, "street-revenue-monthly", STREETS, version=1)
        assert caught.value.reason == "PRODUCT_VERSION_MISMATCH"
        again = client.run_product(GRANT, "street-revenue-monthly", STREETS, version=2)
    assert again.columns[-1] == "iit_withheld" and again.policy_version == 2
