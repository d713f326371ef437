"""``sandbox serve`` on the owner's PostgreSQL, end to end on the real server: the demo data loaded by ``dsbroker
data make --into`` (COPY, and the sandbox's role with the lockdown's grants), a sandbox and a broker over gRPC on
port 0 for each engine, and the same queries answered alike (the threshold, the dominance rule, the auditor,
lookups, noise, encrypted cells); a role that could do more, or settings that name no state directory, stop the
start with a clear error that never shows the password; and ``catalog draft`` reads either engine's columns."""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.cli.main import main
from broker.client.encryption_key import EncryptionKey
from broker.client.sdk import BrokerClient
from broker.dev.keys import sandbox_settings, to_toml
from broker.server import start_broker
from dsbroker.errors import ConfigError, DsbrokerError
from sandbox.catalog import load_catalog
from sandbox.demo.data import DEMO_DATASETS
from sandbox.server import start_sandbox
from sandbox.settings import SandboxSettings
from tests.conftest import (DISCLOSURE, GRANT, POSTGRES_DSN, broker_settings_for, client_tls, dev_keys,
                            postgres_admin, shipped_grant_text, sign, token_for)

DEMO_CATALOG = Path(__file__).resolve().parent.parent / "sandbox" / "demo" / "catalog.yaml"
ENCRYPTED_GRANT, NOISE_GRANT = f"{GRANT}-encrypted", f"{GRANT}-noise"
ENGINES = ("duckdb", "postgres")
TIMEOUT_S = 60.0  # generous: the machine is shared
# A threshold of 3 (the grants below) keeps some cells of the small data and withholds others.
QUERIES = [
    "SELECT street_code, industry_section, COUNT(DISTINCT taxpayer_id) AS n, SUM(vat_paid + cit_paid) / 100 AS tax "
    "FROM tax.declarations WHERE period BETWEEN DATE '2024-01-01' AND DATE '2024-12-31' GROUP BY 1, 2 "
    "ORDER BY tax DESC, 1, 2 LIMIT 40",
    "SELECT s.street_name, SUM(revenue) AS revenue FROM tax.declarations JOIN tax.streets s USING (street_code) "
    "GROUP BY s.street_name ORDER BY 1",
    "SELECT date_trunc('quarter', period) AS q, AVG(employees) AS staff FROM tax.declarations GROUP BY 1 ORDER BY 1",
    # Differencing: a street's total over three sections, then over two of them; the auditor judges the second.
    "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations WHERE industry_section IN ('C', 'D', 'F') "
    "GROUP BY 1 ORDER BY 1",
    "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations WHERE industry_section IN ('C', 'F') "
    "GROUP BY 1 ORDER BY 1",
    "SELECT street_code, industry_section, SUM(vat_paid) AS vat FROM tax.declarations "
    "WHERE industry_section IN ('C', 'D', 'F') GROUP BY 1, 2 ORDER BY 1, 2",
]
ENCRYPTED_SQL = ("SELECT street_code, COUNT(DISTINCT taxpayer_id) AS n, SUM(vat_paid) AS vat FROM tax.declarations "
                 "WHERE industry_section IN ('C', 'I') GROUP BY street_code")
NOISY_SQL = "SELECT street_code, SUM(revenue) AS revenue FROM tax.declarations GROUP BY street_code"
NOISE_YAML = ("disclosure:\n  min_entities: 3\n  noise: {epsilon: 1.0, budget: 3.0, rows_per_entity: 24, "
              "bounds: {revenue: [0, 100000000000]}}")


@dataclasses.dataclass
class Owner:
    """The small demo data in a DuckDB file and in a fresh PostgreSQL database, with the sandbox's role there."""

    path: Path
    database: str
    role: str
    admin: object

    def dsn(self, role: str | None = None, **parameters: str) -> str:
        """A libpq string for the database as ``role`` (the sandbox's by default)."""
        extra = "".join(f" {name}={value}" for name, value in parameters.items())
        return f"host=127.0.0.1 port=5432 dbname={self.database} user={role or self.role}{extra}"


@pytest.fixture(scope="module")
def owner(tmp_path_factory):
    admin = postgres_admin()
    run = uuid.uuid4().hex[:10]
    made = Owner(tmp_path_factory.mktemp("pg-serve") / "owner-data.duckdb", f"dsbroker_serve_{run}",
                 f"dsbroker_sandbox_{run}", admin)
    admin.execute(f"CREATE DATABASE {made.database}")
    try:
        into = POSTGRES_DSN.rsplit("/", 1)[0] + f"/{made.database}"
        loaded = CliRunner().invoke(main, ["data", "make", "--out", str(made.path), "--into", into, "--role",
                                           made.role, "--taxpayers", "3000", "--months", "24"])
        assert loaded.exit_code == 0, loaded.output
        yield made
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {made.database} WITH (FORCE)")
        admin.execute(f"DROP ROLE IF EXISTS {made.role}")
        admin.close()


def _grants(directory: Path) -> str:
    """The shipped grant at a threshold of 3 and two variants of it: encrypted results, and noise."""
    directory.mkdir()
    shipped = shipped_grant_text().replace("min_entities: 10", "min_entities: 3")
    encrypted = shipped_grant_text(without_dominance="the test compares encrypted cells across engines").replace(
        "min_entities: 10", "min_entities: 3").replace("results: [aggregate]", "results: [aggregate, encrypted]")
    noisy = shipped_grant_text().replace(DISCLOSURE, NOISE_YAML)
    for grant, text in ((GRANT, shipped), (ENCRYPTED_GRANT, encrypted), (NOISE_GRANT, noisy)):
        (directory / f"{grant}.yaml").write_text(sign(text.replace(f"id: {GRANT}", f"id: {grant}")), encoding="utf-8")
    return str(directory)


def _sandbox_settings(owner: Owner, engine: str, state: Path, **overrides) -> SandboxSettings:
    where = ({"data": str(owner.path)} if engine == "duckdb"
             else {"engine": "postgres", "postgres_dsn": owner.dsn(), "state_dir": str(state)})
    return SandboxSettings(**{"listen": "127.0.0.1:0", "datasets": DEMO_DATASETS, "catalog": str(DEMO_CATALOG),
                              "released_cells": str(state / "released.sqlite"),
                              "execution_ledger": str(state / "executions.sqlite"),
                              "policy_ledger": str(state / "policies.sqlite"),
                              "privacy_ledger": str(state / "privacy.sqlite"),
                              **where, **sandbox_settings(dev_keys()), **overrides})


@dataclasses.dataclass
class Deployment:
    """Per engine, a requester's client of a broker over a sandbox of that engine, and the sandbox's state."""

    clients: dict[str, BrokerClient]
    states: dict[str, Path]
    sandboxes: dict = dataclasses.field(default_factory=dict)  # engine -> the running sandbox


@pytest.fixture(scope="module")
def deployment(owner, tmp_path_factory):
    """A sandbox and its broker per engine, each with ledgers of its own."""
    running, made = [], Deployment({}, {})
    try:
        for engine in ENGINES:
            state = made.states[engine] = tmp_path_factory.mktemp(f"state-{engine}")
            settings = _sandbox_settings(owner, engine, state)
            if engine == "postgres":  # the ledgers' own settings empty: they go to state_dir
                settings = dataclasses.replace(settings, released_cells="", execution_ledger="", policy_ledger="",
                                               privacy_ledger="")
            sandbox = made.sandboxes[engine] = start_sandbox(settings)
            running.append(sandbox)
            broker = start_broker(broker_settings_for(sandbox.port, state / "broker" / "access-log.sqlite",
                                                      policies=_grants(state / "policies")))
            running.append(broker)
            made.clients[engine] = BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(), tls=client_tls())
        yield made
    finally:
        for client in made.clients.values():
            client.close()
        for server in reversed(running):
            server.stop()


@pytest.fixture(scope="module")
def clients(deployment):
    return deployment.clients


def test_the_postgres_sandboxs_ledgers_are_in_its_state_directory(deployment):
    assert {p.name for p in deployment.states["postgres"].iterdir()} >= {
        "released.sqlite", "executions.sqlite", "policies.sqlite", "privacy.sqlite"}


def test_the_readiness_recheck_of_a_failing_engine_finds_either_engine_answering(deployment):
    # What a probe's health check runs (at most every few seconds) while the engine is marked failing.
    for engine, sandbox in deployment.sandboxes.items():
        assert sandbox.readiness.dependencies["engine"].recheck() is True, engine


def test_the_catalog_says_which_dialect_the_guard_writes(clients):
    dialects = {engine: {d.name: d.engine_dialect for d in client.datasets()} for engine, client in clients.items()}
    assert set(dialects["postgres"].values()) == {"postgres"}
    assert set(dialects["duckdb"].values()) == {"duckdb"}


def test_the_same_queries_release_the_same_cells_on_both_engines(clients):
    """In order, on each engine's own released-cell ledger: the threshold, dominance and the auditor withhold the
    same cells, and every other cell is the same value."""
    withheld: dict[str, int] = {}
    for sql in QUERIES:
        duck, pg = (clients[engine].query(GRANT, sql, timeout=TIMEOUT_S) for engine in ENGINES)
        assert duck.rows, sql
        assert (pg.columns, pg.rows, pg.withheld, pg.truncated) == (duck.columns, duck.rows, duck.withheld,
                                                                    duck.truncated), sql
        assert pg.disclosure_rules == duck.disclosure_rules, sql
        for rule in duck.disclosure_rules:
            withheld[rule["rule"]] = withheld.get(rule["rule"], 0) + rule.get("cells_withheld", 0)
    assert withheld["min_entities"] > 0 and withheld["dominance"] > 0 and withheld["audit"] > 0, withheld


def test_the_owners_view_of_the_released_cells_is_the_same_on_both_engines(owner, deployment, tmp_path):
    """``dsbroker sandbox released`` on each engine's own ledger (after the same queries on both): the summaries
    of what the released cells determine agree, block for block, so the auditor's block query reads the same
    partition on PostgreSQL."""
    deployment.clients["duckdb"].query(GRANT, QUERIES[0], timeout=TIMEOUT_S)
    deployment.clients["postgres"].query(GRANT, QUERIES[0], timeout=TIMEOUT_S)
    summaries = {}
    for engine in ENGINES:
        state = deployment.states[engine]
        settings = _sandbox_settings(owner, engine, state)
        if engine == "postgres":
            settings = dataclasses.replace(settings, released_cells="", execution_ledger="", policy_ledger="",
                                           privacy_ledger="")
        config = tmp_path / f"{engine}.toml"
        config.write_text(to_toml({k: v for k, v in dataclasses.asdict(settings).items() if v not in ("", None)}),
                          encoding="utf-8")
        shown = CliRunner().invoke(main, ["sandbox", "released", "--config", str(config), "--json"])
        assert shown.exit_code == 0, shown.output
        summaries[engine] = [{k: v for k, v in summary.items() if k != "seconds"} for summary in
                             json.loads(shown.output)]
    assert summaries["postgres"] == summaries["duckdb"]
    declarations = next(s for s in summaries["duckdb"] if s["dataset"] == "tax.declarations")
    assert declarations["cells"] > 0 and declarations["blocks"] > 0


def test_explain_shows_the_sql_the_postgres_sandbox_runs(clients):
    explained = clients["postgres"].explain(GRANT, QUERIES[2])
    answered = clients["postgres"].query(GRANT, QUERIES[2], timeout=TIMEOUT_S)
    assert explained.rewritten_sql == answered.rewritten_sql
    assert explained.rewritten_sql != clients["duckdb"].explain(GRANT, QUERIES[2]).rewritten_sql  # its own dialect


def test_encrypted_cells_decrypt_to_the_same_answer_on_both_engines(clients):
    key = EncryptionKey.generate()
    duck, pg = (clients[engine].query(ENCRYPTED_GRANT, ENCRYPTED_SQL, encryption_key=key, timeout=TIMEOUT_S)
                for engine in ENGINES)
    assert duck.rows and sorted(map(repr, pg.rows)) == sorted(map(repr, duck.rows))


def test_a_noise_grant_is_answered_on_postgres_and_a_repeat_is_the_stored_answer(clients):
    first = clients["postgres"].query(NOISE_GRANT, NOISY_SQL, timeout=TIMEOUT_S)
    again = clients["postgres"].query(NOISE_GRANT, NOISY_SQL, timeout=TIMEOUT_S)
    assert first.rows and first.noise is not None and first.noise["epsilon_spent"] > 0
    assert again.rows == first.rows and again.noise["repeated_answer"]


def test_a_role_that_could_read_more_stops_the_start(owner, tmp_path):
    try:
        with _database(owner) as connection:  # the companies' names, which the sandbox does not serve
            connection.execute(f"GRANT SELECT ON tax.taxpayers TO {owner.role}")
        with pytest.raises(DsbrokerError) as caught:
            start_sandbox(_sandbox_settings(owner, "postgres", tmp_path))
        assert caught.value.reason == "ENGINE_NOT_LOCKED_DOWN"
        assert "SELECT on tables not served: tax.taxpayers" in caught.value.message
    finally:
        with _database(owner) as connection:
            connection.execute(f"REVOKE SELECT ON tax.taxpayers FROM {owner.role}")


CELL_STATISTICS = ("CREATE STATISTICS IF NOT EXISTS tax.declarations_dsbroker_cells (ndistinct) ON taxpayer_id, "
                   "period, street_code, industry_code, industry_section, registration_type, size_class "
                   "FROM tax.declarations")


def test_the_sandbox_names_the_planner_statistics_a_database_lacks_and_data_make_gives_them(owner, tmp_path, caplog):
    """Without ndistinct statistics over the entity and the group columns, PostgreSQL expects a group per row in the
    guarded plans' per-taxpayer cells and sorts where it could hash (sandbox.engine.postgres_statistics): the
    sandbox starts anyway and logs the statement for the owner; ``data make --into`` gave the demo data them."""
    from sandbox.demo.postgres import give_planner_statistics

    def started_advice() -> str:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sandbox.server"):
            start_sandbox(_sandbox_settings(owner, "postgres", tmp_path / uuid.uuid4().hex)).stop()
        return caplog.text

    assert CELL_STATISTICS not in started_advice(), "data make --into made them"
    with _database(owner) as connection:
        connection.execute("DROP STATISTICS tax.declarations_dsbroker_cells")
    try:
        advice = started_advice()
        assert CELL_STATISTICS in advice and "tax.declarations has no ndistinct statistics" in advice
    finally:
        with _database(owner) as connection:
            assert give_planner_statistics(str(owner.path), connection, served=DEMO_DATASETS) == [CELL_STATISTICS]
            assert give_planner_statistics(str(owner.path), connection, served=DEMO_DATASETS) == []
    assert CELL_STATISTICS not in started_advice()


def test_one_statistics_object_takes_the_entity_and_at_most_seven_group_columns():
    from sandbox.engine.postgres_statistics import grouping_columns, grouping_statistics

    groups = [f"g{i}" for i in range(10)]
    assert grouping_columns("e", ["g0", "e", "g1"]) == ["e", "g0", "g1"]
    assert grouping_columns("e", groups) == ["e", *groups[:7]]
    assert grouping_statistics("s.t", "e", ["a"]) == ("CREATE STATISTICS IF NOT EXISTS s.t_dsbroker_cells (ndistinct) "
                                                      "ON e, a FROM s.t")
    # A name PostgreSQL would fold or misread is quoted, as the owner runs the statement as printed.
    assert grouping_statistics("s.t", "e", ["Street Code"]) == (
        'CREATE STATISTICS IF NOT EXISTS s.t_dsbroker_cells (ndistinct) ON e, "Street Code" FROM s.t')


def test_settings_that_cannot_serve_postgres_stop_the_start_with_a_clear_error(owner, tmp_path):
    with pytest.raises(ConfigError, match="set state_dir"):
        start_sandbox(dataclasses.replace(_sandbox_settings(owner, "postgres", tmp_path), state_dir="",
                                          released_cells=""))
    with pytest.raises(ConfigError, match="needs postgres_dsn"):
        start_sandbox(_sandbox_settings(owner, "postgres", tmp_path, postgres_dsn=""))
    with pytest.raises(ConfigError, match="engine must be one of"):
        start_sandbox(dataclasses.replace(_sandbox_settings(owner, "postgres", tmp_path), engine="oracle"))


def test_the_password_is_never_logged_or_shown(owner, tmp_path, caplog):
    secret = f"secret-{uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DsbrokerError) as caught:  # nothing listens there: the connection fails
        start_sandbox(_sandbox_settings(owner, "postgres", tmp_path, postgres_dsn=owner.dsn(
            password=secret, port="1", connect_timeout="3")))
    assert caught.value.reason == "ENGINE_UNREACHABLE"
    assert secret not in caught.value.message and secret not in caplog.text
    assert f"dbname={owner.database}" in caplog.text  # where it connects is logged


@pytest.mark.parametrize("engine", ENGINES)
def test_catalog_draft_reads_the_engines_columns_and_the_loader_refuses_it_until_filled(engine, owner, tmp_path):
    config = tmp_path / "sandbox.toml"
    where = (f'data = "{owner.path}"' if engine == "duckdb"
             else f'engine = "postgres"\npostgres_dsn = "{owner.dsn()}"')
    config.write_text(f'{where}\ndatasets = {list(DEMO_DATASETS)!r}\n'.replace("'", '"'), encoding="utf-8")
    out = tmp_path / "catalog.yaml"
    drafted = CliRunner().invoke(main, ["catalog", "draft", "--config", str(config), "--dataset", "tax.declarations",
                                        "--out", str(out)])
    assert drafted.exit_code == 0, drafted.output
    text = out.read_text(encoding="utf-8")
    assert "revenue:" in text and ("# bigint" in text or "# BIGINT" in text)
    columns = {"tax.declarations": [("taxpayer_id", "text"), ("revenue", "bigint")]}
    with pytest.raises(ConfigError, match="placeholder"):
        load_catalog(out, {"tax.declarations"}, lambda table: columns.get(table, []))
    again = CliRunner().invoke(main, ["catalog", "draft", "--config", str(config), "--out", str(out)])
    assert again.exit_code != 0 and "--force" in again.output


def _database(owner: Owner):
    import psycopg

    return psycopg.connect(owner.dsn(role="postgres"), autocommit=True)


def test_each_shipped_product_releases_the_same_cells_on_both_engines(clients):
    """The owner's data products, bound once and translated by the guard to each engine's dialect (dates, year())."""
    from tests.test_products import SHIPPED_CALLS

    for name, values in sorted(SHIPPED_CALLS.items()):
        duck, pg = (clients[engine].run_product(GRANT, name, values, timeout=TIMEOUT_S) for engine in ENGINES)
        assert duck.rows, name
        assert (pg.columns, pg.rows, pg.withheld) == (duck.columns, duck.rows, duck.withheld), name
