"""``sandbox serve`` with engine = "spark", end to end: the small demo data as Parquet (``data make --parquet``), a
sandbox on the run's local Spark session and one on the DuckDB file, each behind a broker over gRPC on port 0
with the signed grants, and the same queries answered alike (the threshold, the dominance rule, the auditor,
noise, encrypted cells); settings that cannot serve Spark stop the start with a clear error."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.cli.main import main
from broker.client.encryption_key import EncryptionKey
from broker.client.sdk import BrokerClient
from broker.dev.keys import sandbox_settings, to_toml
from broker.server import start_broker
from dsbroker.errors import ConfigError
from sandbox.demo.data import DEMO_DATASETS
from sandbox.server import start_sandbox
from sandbox.settings import SandboxSettings
from tests.conftest import (ANALYST, GRANT, broker_settings_for, client_tls, dev_keys, parquet_tables,
                            signed_policies, token_for)
from tests.test_sandbox_postgres import (DEMO_CATALOG, ENCRYPTED_GRANT, ENCRYPTED_SQL, NOISE_GRANT, NOISY_SQL,
                                         QUERIES, TIMEOUT_S, _grants)

ENGINES = ("duckdb", "spark")


def _settings(small: Path, engine: str, state: Path, **overrides) -> SandboxSettings:
    # The run's Spark session has these limits (tests/conftest.py's spark_engine); the lockdown checks them.
    where = ({"data": str(small)} if engine == "duckdb" else
             {"engine": "spark", "spark_master": "local[2]", "spark_tables": tuple(parquet_tables(small).items()),
              "state_dir": str(state), "memory_limit": "1GB", "threads": 2})
    return SandboxSettings(**{"listen": "127.0.0.1:0", "datasets": DEMO_DATASETS, "catalog": str(DEMO_CATALOG),
                              "released_cells": str(state / "released.sqlite"),
                              "execution_ledger": str(state / "executions.sqlite"),
                              "policy_ledger": str(state / "policies.sqlite"),
                              "privacy_ledger": str(state / "privacy.sqlite"),
                              **where, **sandbox_settings(dev_keys()), **overrides})


@pytest.fixture(scope="module")
def clients(small_demo, spark_engine, tmp_path_factory):
    """Per engine, a requester's client of a broker over a sandbox of that engine (the Spark one on the run's
    session, which ``spark_engine`` started)."""
    running, made = [], {}
    try:
        for engine in ENGINES:
            state = tmp_path_factory.mktemp(f"state-{engine}")
            sandbox = start_sandbox(_settings(small_demo, engine, state))
            running.append(sandbox)
            broker = start_broker(broker_settings_for(sandbox.port, state / "broker" / "access-log.sqlite",
                                                      policies=_grants(state / "policies")))
            running.append(broker)
            made[engine] = BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(), tls=client_tls())
        yield made
    finally:
        for client in made.values():
            client.close()
        for server in reversed(running):
            server.stop()


def test_the_catalog_says_the_guard_writes_spark_sql(clients):
    assert {d.engine_dialect for d in clients["spark"].datasets()} == {"spark"}


def test_the_same_queries_release_the_same_cells_on_both_engines(clients):
    """In order, on each engine's own released-cell ledger: the threshold, dominance and the auditor withhold the
    same cells, and every other cell is the same value."""
    withheld: dict[str, int] = {}
    for sql in QUERIES:
        duck, spark = (clients[engine].query(GRANT, sql, timeout=TIMEOUT_S) for engine in ENGINES)
        assert duck.rows, sql
        assert (spark.columns, spark.rows, spark.withheld, spark.truncated) == (
            duck.columns, duck.rows, duck.withheld, duck.truncated), sql
        assert spark.disclosure_rules == duck.disclosure_rules, sql
        for rule in duck.disclosure_rules:
            withheld[rule["rule"]] = withheld.get(rule["rule"], 0) + rule.get("cells_withheld", 0)
    assert withheld["min_entities"] > 0 and withheld["dominance"] > 0 and withheld["audit"] > 0, withheld


def test_explain_shows_the_spark_sql_the_sandbox_runs(clients):
    explained = clients["spark"].explain(GRANT, QUERIES[2])
    answered = clients["spark"].query(GRANT, QUERIES[2], timeout=TIMEOUT_S)
    assert explained.rewritten_sql == answered.rewritten_sql
    assert explained.rewritten_sql != clients["duckdb"].explain(GRANT, QUERIES[2]).rewritten_sql


def test_encrypted_cells_decrypt_to_the_same_answer_on_both_engines(clients):
    key = EncryptionKey.generate()
    duck, spark = (clients[engine].query(ENCRYPTED_GRANT, ENCRYPTED_SQL, encryption_key=key, timeout=TIMEOUT_S)
                   for engine in ENGINES)
    assert duck.rows and sorted(map(repr, spark.rows)) == sorted(map(repr, duck.rows))


def test_a_noise_grant_is_answered_on_spark_and_a_repeat_is_the_stored_answer(clients):
    first = clients["spark"].query(NOISE_GRANT, NOISY_SQL, timeout=TIMEOUT_S)
    again = clients["spark"].query(NOISE_GRANT, NOISY_SQL, timeout=TIMEOUT_S)
    assert first.rows and first.noise is not None and first.noise["epsilon_spent"] > 0
    assert again.rows == first.rows and again.noise["repeated_answer"]


@pytest.mark.parametrize("overrides, message", [
    ({"state_dir": "", "released_cells": ""}, "set state_dir"),
    ({"spark_tables": ()}, "spark_tables gives no Parquet path for"),
    ({"datasets": ("tax.declarations",)}, "spark_tables lists tables that are not datasets"),
    ({"data": "/tmp/owner.duckdb"}, "leave them empty"),
    ({"spark_remote": "sc://127.0.0.1:15002"}, "spark_master and spark_remote are both set"),
    ({"spark_master": "", "spark_remote": "http://127.0.0.1:15002"}, "spark_remote must be a Spark Connect URL"),
    ({"spark_master": "", "spark_remote": "sc://127.0.0.1"}, "spark_remote must be a Spark Connect URL"),
])
def test_settings_that_cannot_serve_spark_stop_the_start_with_a_clear_error(small_demo, tmp_path, overrides,
                                                                            message):
    with pytest.raises(ConfigError, match=message):
        start_sandbox(dataclasses.replace(_settings(small_demo, "spark", tmp_path), **overrides))


def test_data_make_writes_the_served_tables_as_parquet_and_the_setting_that_serves_them(tmp_path):
    made = CliRunner().invoke(main, ["data", "make", "--parquet", str(tmp_path / "lake"), "--taxpayers", "200",
                                     "--months", "2"])
    assert made.exit_code == 0, made.output
    written = sorted(path.name for path in (tmp_path / "lake").iterdir())
    assert written == sorted(f"{table}.parquet" for table in DEMO_DATASETS)  # never tax.taxpayers, the names
    assert "[spark_tables]" in made.output and '"tax.declarations" = ' in made.output
    assert json.loads(made.output.strip().splitlines()[-1])["declarations"] > 0


def test_catalog_draft_reads_the_spark_sessions_columns(small_demo, spark_engine, tmp_path):
    config = tmp_path / "sandbox.toml"
    config.write_text(to_toml({"engine": "spark", "spark_master": "local[2]", "memory_limit": "1GB", "threads": 2,
                               "datasets": list(DEMO_DATASETS), "spark_tables": parquet_tables(small_demo)}),
                      encoding="utf-8")
    out = tmp_path / "catalog.yaml"
    drafted = CliRunner().invoke(main, ["catalog", "draft", "--config", str(config), "--dataset", "tax.declarations",
                                        "--out", str(out)])
    assert drafted.exit_code == 0, drafted.output
    text = out.read_text(encoding="utf-8")
    assert "revenue:" in text and "# bigint" in text and "Spark session" in text


def test_the_demos_spark_sandbox_reads_its_parquet_in_place_and_serves_duckdbs_cells(small_demo, tmp_path):
    """``dsbroker demo --engine spark`` (its sandbox settings, :func:`broker.dev.demo._in_spark`): the served tables
    written as Parquet, and a ``sandbox serve`` process on a Spark session of its own behind a broker, both processes
    as the demo starts them, which answers with the cells a DuckDB sandbox over the same data releases."""
    from broker.dev.demo import CATALOG, SPARK_MEMORY, _in_spark
    from broker.dev.launch import development_servers

    # A copy: this process's DuckDB sandboxes hold small_demo open locked down (no file system), and DuckDB hands
    # a second connection to the same file that same database.
    owner = tmp_path / "owner.duckdb"
    shutil.copy(small_demo, owner)
    lake = tmp_path / "lake"
    settings = _in_spark(owner, lake, "sandbox")
    assert settings == {"engine": "spark", "catalog": str(CATALOG), "memory_limit": SPARK_MEMORY,
                        "spark_tables": {table: str(lake / f"{table}.parquet") for table in DEMO_DATASETS}}
    answers = {}
    for engine, source in (("duckdb", owner), ("spark", settings)):
        with development_servers(data=source, policies=signed_policies(), state=tmp_path / engine,
                                 layout=dev_keys(), client=ANALYST) as (_sandbox, broker, tls):
            with BrokerClient(broker.target, token=token_for(), tls=tls) as client:
                dialect = client.dataset("tax.declarations").engine_dialect
                answers[engine] = dialect, client.query(GRANT, QUERIES[0], timeout=TIMEOUT_S)
    # spark_tables is a TOML table of the sandbox's config; the ledgers are in a state directory, with no data file
    with (tmp_path / "spark" / "sandbox.toml").open("rb") as file:
        config = tomllib.load(file)
    assert config["spark_tables"] == settings["spark_tables"] and "data" not in config and config["state_dir"]
    (duck_dialect, duck), (spark_dialect, spark) = answers["duckdb"], answers["spark"]
    assert (duck_dialect, spark_dialect) == ("duckdb", "spark")
    assert duck.rows and duck.withheld
    assert (spark.columns, spark.rows, spark.withheld) == (duck.columns, duck.rows, duck.withheld)
