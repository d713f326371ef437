"""A lookup joined on a key of another name: ``tax.industries: {key: code, joins: industry_code, ...}``.

The grant names the lookup's key and, where the dataset's column has another name, the column it ``joins``;
the rest of the lookup rules hold as for a key of one name: the guard accepts only ``ON <dataset>.<joins> =
<lookup>.<key>`` (USING needs one name on both sides), the lookup's columns take the level of the dataset's
column, the sandbox checks that the dataset has that column, that both are of one type class and that the key
is unique, and the signature covers the field like every byte of the body. End to end over an owner's data
whose industry list is keyed ``code``, with the cells compared with the same join in plain DuckDB.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
import pytest

from broker.client.sdk import BrokerClient
from broker.server import start_broker
from dsbroker.errors import GuardError, PolicyFileError, PolicySignatureError
from dsbroker.guard import guard
from dsbroker.policy.model import Lookup, parse_policy
from dsbroker.policy.signing import Trust, verify_policy
from broker.dev.keys import sandbox_settings
from sandbox.checks.lookups import LookupChecker
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.server import start_sandbox
from sandbox.settings import SandboxSettings
from tests.conftest import (GRANT, POLICIES, XUANWU, broker_settings_for, client_tls, declarations_file, dev_keys,
                            sign, token_for)

SHIPPED = (POLICIES / f"{GRANT}.yaml").read_text(encoding="utf-8")
INDUSTRIES = "tax.industries: {key: industry_code, columns: [industry_name, section_name]}"
BY_CODE = "tax.industries: {key: code, joins: industry_code, columns: [industry_name]}"
GRANT_TEXT = SHIPPED.replace(INDUSTRIES, BY_CODE)
JOINED = ("SELECT i.industry_name, COUNT(DISTINCT d.taxpayer_id) AS n, SUM(d.revenue) AS revenue "
          "FROM tax.declarations d JOIN tax.industries i ON d.industry_code = i.code GROUP BY 1 ORDER BY 1")


@pytest.fixture(scope="module")
def by_code():
    return parse_policy(GRANT_TEXT)


def test_the_grant_names_the_column_the_key_joins(by_code):
    assert INDUSTRIES in SHIPPED
    lookup = by_code.lookups["tax.industries"]
    assert (lookup.key, lookup.joins, lookup.columns) == ("code", "industry_code", ("industry_name",))
    assert by_code.visible_columns()["industries.code"] == by_code.columns["industry_code"]
    shipped = parse_policy(SHIPPED).lookups["tax.streets"]
    assert shipped.joins == shipped.key == "street_code"
    # One lookup, two spellings: naming the key's own column in ``joins`` is the same grant.
    spelled = SHIPPED.replace("{key: street_code, columns", "{key: street_code, joins: street_code, columns")
    assert parse_policy(spelled).lookups == parse_policy(SHIPPED).lookups


@pytest.mark.parametrize("joins, named", [("vat_paid", "vat_paid"), ("taxpayer_id", "taxpayer_id"),
                                          ("district_code", "district_code")],
                         ids=["a measure", "the entity", "a hidden column"])
def test_a_lookup_joins_only_a_group_or_filter_column(joins, named):
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(SHIPPED.replace(INDUSTRIES, BY_CODE.replace("joins: industry_code", f"joins: {joins}")))
    assert f":28: lookups.tax.industries.joins: {named!r} must be a group or filter column" in str(caught.value)


def test_the_signature_covers_what_the_key_joins():
    trust = Trust.load(dev_keys().trust)
    signed = sign(GRANT_TEXT)
    assert verify_policy(signed, trust).lookups["tax.industries"].joins == "industry_code"
    with pytest.raises(PolicySignatureError):
        verify_policy(signed.replace("joins: industry_code", "joins: street_code"), trust)


def test_the_guard_joins_on_the_dataset_column_the_grant_names(by_code):
    guarded = guard(JOINED, by_code, district=XUANWU, department="xuanwu-fgw")
    assert "JOIN tax.industries ON declarations.industry_code = industries.code" in guarded.sql
    assert "JOIN tax.industries ON declarations.industry_code = industries.code" in guarded.coverage
    reversed_ = JOINED.replace("d.industry_code = i.code", "i.code = d.industry_code")
    assert guard(reversed_, by_code, district=XUANWU, department="xuanwu-fgw").sql == guarded.sql
    by_key = guard(JOINED.replace("i.industry_name", "i.code"), by_code, district=XUANWU, department="xuanwu-fgw")
    assert "industries.code AS __g0" in by_key.sql  # the key is a column of the lookup, at its join's level


@pytest.mark.parametrize("join, reason, column", [
    ("JOIN tax.industries i USING (code)", "JOIN_CONDITION_NOT_ALLOWED", "code"),
    ("JOIN tax.industries i USING (industry_code)", "JOIN_CONDITION_NOT_ALLOWED", "code"),
    ("JOIN tax.industries i ON d.industry_code = i.industry_code", "JOIN_CONDITION_NOT_ALLOWED", "code"),
    ("JOIN tax.industries i ON d.street_code = i.code", "JOIN_CONDITION_NOT_ALLOWED", "code"),
    ("JOIN tax.industries i ON d.code = i.code", "JOIN_CONDITION_NOT_ALLOWED", "code"),
    ("JOIN tax.industries i ON i.code = i.code", "JOIN_CONDITION_NOT_ALLOWED", "code"),
    ("JOIN tax.industries i ON d.industry_code = i.code AND i.industry_name = 'x'", "JOIN_CONDITION_NOT_ALLOWED",
     "code"),
    ("JOIN tax.streets s USING (street_code) JOIN tax.industries i ON s.industry_code = i.code",
     "JOIN_CONDITION_NOT_ALLOWED", "code"),
], ids=["USING the key", "USING the dataset's column", "the dataset's name on the lookup", "another column",
        "the key's name on the dataset", "the lookup with itself", "an extra condition", "through another lookup"])
def test_any_other_join_condition_is_refused_naming_the_key(by_code, join, reason, column):
    with pytest.raises(GuardError) as caught:
        guard(f"SELECT COUNT(*) AS n FROM tax.declarations d {join}", by_code, district=XUANWU, department="x")
    error = caught.value
    assert error.reason == reason and error.metadata["rule"] == "resolve_table"
    assert error.metadata["column"] == column and error.metadata["table"] == "tax.industries"
    assert "industry_code = <lookup>.code" in error.message  # the two columns the grant allows


def test_the_lookup_has_no_column_named_as_the_dataset_s(by_code):
    with pytest.raises(GuardError) as caught:
        guard("SELECT i.industry_code, COUNT(*) AS n FROM tax.declarations d JOIN tax.industries i "
              "ON d.industry_code = i.code GROUP BY 1", by_code, district=XUANWU, department="xuanwu-fgw")
    assert caught.value.reason == "COLUMN_NOT_GRANTED" and caught.value.metadata["column"] == "industry_code"


def _checker(dataset_type: str = "VARCHAR", key_type: str = "VARCHAR", unique: bool = True,
             dataset_columns: tuple[str, ...] = ("industry_code", "street_code", "registration_type")) -> LookupChecker:
    types = {"tax.declarations": {c: dataset_type if c == "industry_code" else "VARCHAR" for c in dataset_columns},
             "tax.industries": {"code": key_type, "industry_name": "VARCHAR"},
             "tax.streets": {"street_code": "VARCHAR", "street_name": "VARCHAR"},
             "tax.registration_types": {"registration_type": "VARCHAR", "type_name": "VARCHAR"}}
    return LookupChecker({t: set(c) for t, c in types.items()}, types=types,
                         unique=lambda table, key: unique or table != "tax.industries")


@pytest.mark.parametrize("checker, reason, table, column", [
    (_checker(dataset_columns=("street_code", "registration_type")), "LOOKUP_INVALID", "tax.declarations",
     "industry_code"),
    (_checker(key_type="INTEGER"), "LOOKUP_INVALID", "tax.industries", "code"),
    (_checker(unique=False), "LOOKUP_KEY_NOT_UNIQUE", "tax.industries", "code"),
], ids=["the dataset lacks the joined column", "types differ", "the key is not unique"])
def test_the_sandbox_checks_the_joined_column_the_types_and_the_key(by_code, checker, reason, table, column):
    (problem,) = checker.problems(by_code)
    assert (problem.reason, problem.metadata["table"], problem.metadata["column"]) == (reason, table, column)
    assert problem.metadata["policy"] == GRANT
    assert not _checker().problems(by_code)


# End to end: an owner whose industry list is keyed ``code``.
@pytest.fixture(scope="module")
def owner_data(tmp_path_factory):
    rows = [(f"9132010{n:05d}", dt.date(2025, 1 + n % 12, 1), "320102001", 1_000 + 7 * n, n) for n in range(600)]
    path = declarations_file(tmp_path_factory.mktemp("lookup_joins") / "owner.duckdb", rows)
    with duckdb.connect(str(path)) as connection:
        connection.execute("UPDATE tax.declarations SET industry_code = CASE WHEN revenue % 3 = 0 THEN '51' "
                           "WHEN revenue % 3 = 1 THEN '52' ELSE '64' END")
        connection.execute("CREATE TABLE tax.industries (code VARCHAR PRIMARY KEY, industry_name VARCHAR)")
        connection.execute("INSERT INTO tax.industries VALUES ('51', '批发业'), ('52', '零售业'), ('64', '互联网')")
        for table, key, extra in (("streets", "street_code", "street_name"),
                                  ("registration_types", "registration_type", "type_name")):
            connection.execute(f"CREATE TABLE tax.{table} ({key} VARCHAR PRIMARY KEY, {extra} VARCHAR)")
    return path


@pytest.fixture(scope="module")
def owner_client(owner_data, tmp_path_factory):
    state = tmp_path_factory.mktemp("lookup_joins_state")
    sandbox = start_sandbox(SandboxSettings(
        listen="127.0.0.1:0", data=str(owner_data), audit_released_cells=True,
        datasets=("tax.declarations", "tax.streets", "tax.industries", "tax.registration_types"),
        released_cells=str(state / "released.sqlite"), privacy_ledger=str(state / "privacy.sqlite"),
        execution_ledger=str(state / "executions.sqlite"), policy_ledger=str(state / "policies.sqlite"),
        **sandbox_settings(dev_keys())))
    policies = state / "policies"
    policies.mkdir()
    (policies / f"{GRANT}.yaml").write_text(sign(GRANT_TEXT), encoding="utf-8")
    broker = start_broker(broker_settings_for(sandbox.port, state / "log.sqlite", policies=str(policies)))
    client = BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(), tls=client_tls())
    yield client
    client.close()
    broker.stop()
    sandbox.stop()


def test_a_join_on_a_key_of_another_name_answers_as_the_join_in_duckdb(owner_client, owner_data):
    result = owner_client.query(GRANT, JOINED)
    with duckdb.connect(str(owner_data), read_only=True) as connection:
        expected = connection.execute(
            "SELECT i.industry_name, COUNT(DISTINCT d.taxpayer_id), SUM(d.revenue) FROM tax.declarations d "
            f"JOIN tax.industries i ON d.industry_code = i.code WHERE d.district_code = '{XUANWU}' GROUP BY 1 "
            "ORDER BY 1").fetchall()
    assert [tuple(row) for row in result.rows] == expected and len(expected) == 3 and not result.withheld


def test_an_outer_query_joins_the_released_cells_to_the_lookup_by_its_own_key(owner_client, owner_data):
    result = owner_client.query(GRANT, "WITH c AS (SELECT industry_code, SUM(revenue) AS r FROM tax.declarations "
                                       "GROUP BY 1) SELECT i.industry_name, c.r FROM c JOIN tax.industries i "
                                       "ON c.industry_code = i.code ORDER BY 1")
    with duckdb.connect(str(owner_data), read_only=True) as connection:
        expected = connection.execute("SELECT i.industry_name, SUM(d.revenue) FROM tax.declarations d JOIN "
                                      "tax.industries i ON d.industry_code = i.code GROUP BY 1 ORDER BY 1").fetchall()
    assert [tuple(row) for row in result.rows] == expected


def test_the_engine_s_column_types_check_the_join_on_the_other_name(owner_data, by_code):
    engine = DuckDBEngine(owner_data)
    try:
        checker = LookupChecker.for_engine(engine, ("tax.declarations", "tax.industries", "tax.streets",
                                                    "tax.registration_types"))
        assert not checker.problems(by_code)
        wrong = dataclasses.replace(by_code, lookups={**by_code.lookups, "tax.industries": Lookup(
            "tax.industries", "code", ("industry_name",), joins="revenue")})
        (problem,) = checker.problems(wrong, ["tax.industries"])
        assert problem.reason == "LOOKUP_INVALID" and problem.metadata["column"] == "code"
    finally:
        engine.close()
