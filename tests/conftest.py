"""Shared fixtures: one demo data file per run, real servers on port 0, tokens."""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import duckdb
import grpc
import pytest

from broker.client.sdk import BrokerClient
from broker.dev.keys import KeyLayout, approve_for_development, broker_settings, init_keys, sandbox_settings
from broker.dev.launch import development_token
from dsbroker.policy.model import Policy, load_policy, parse_policy
from broker.server import start_broker
from broker.settings import BrokerSettings
from sandbox.settings import SandboxSettings
from dsbroker.identity.tls import ClientTls, open_channel
from sandbox.demo.data import DEMO_DATASETS, make_demo_data
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.server import start_sandbox

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
GRANT = "xuanwu-fgw-2026-007"
XUANWU = "320102"
ANALYST = "analyst"
# The shipped grant's dominance rule (the default, written out) and its disclosure line, for tests that
# change them in a copy of the grant.
SHIPPED_DOMINANCE = "dominance: {n: 2, k: 85}"
DISCLOSURE = "disclosure: {min_entities: 10, dominance: {n: 2, k: 85}}"


def dominance_off(reason: str) -> str:
    """What a grant writes, in ``disclosure: {...}``, to turn its dominance rule off for ``reason``."""
    return f'dominance: off, dominance_off_reason: "{reason}"'


def shipped_grant_text(*, without_dominance: str | None = None) -> str:
    """The shipped grant's text; with ``without_dominance`` (a reason), a test-only variant of it with the
    dominance rule off, for a test that pins cells the rule would withhold or a feature it refuses
    (totals, encrypted results) and is about something else."""
    text = (POLICIES / f"{GRANT}.yaml").read_text(encoding="utf-8")
    if without_dominance is None:
        return text
    assert SHIPPED_DOMINANCE in text, f"the shipped grant no longer holds {SHIPPED_DOMINANCE!r}"
    return text.replace(SHIPPED_DOMINANCE, dominance_off(without_dominance))


def policy_without_dominance(reason: str) -> Policy:
    """The shipped grant, loaded, with its dominance rule off for ``reason`` (see shipped_grant_text)."""
    return parse_policy(shipped_grant_text(without_dominance=reason), source=f"{GRANT} (test variant)")


def asks_totals(sql: str) -> bool:
    """Whether ``sql`` asks for totals (ROLLUP, CUBE, GROUPING SETS), which the dominance rule refuses."""
    text = " ".join(sql.upper().split())
    return any(form in text for form in ("ROLLUP", "CUBE", "GROUPING SETS"))


@functools.cache
def dev_keys() -> KeyLayout:
    """Development keys for the whole run (made once; removed at exit)."""
    scratch = tempfile.mkdtemp(prefix="dsbroker-test-keys-")
    atexit.register(shutil.rmtree, scratch, True)
    return init_keys(Path(scratch), clients=(ANALYST, "other-analyst"))


@functools.cache
def log_key():
    """A broker's access-log key for tests that write a log directly (the log seals what it writes)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate()


def writing_log(path, **options):
    """An access log at ``path`` that this test writes as a broker would, with :func:`log_key`."""
    from broker.access_log.log import AccessLog

    return AccessLog(path, signing_key=log_key(), **options)


def sign(text: str) -> str:
    """A policy text signed by the development reviewer and owner."""
    return approve_for_development(dev_keys(), text)


def revocation(policy_id: str, reason: str = "the report is published", *, through_version: int | None = None,
               signer: str = "city-tax") -> str:
    """A revocation of ``policy_id`` signed by a development signer (the owner by default)."""
    from broker.dev.keys import load_private_key, signer_key_id
    from dsbroker.policy.statements import sign_revocation

    return sign_revocation(load_private_key(dev_keys().signer_key(signer)), key_id=signer_key_id(signer), by=signer,
                           policy_id=policy_id, reason=reason, through_version=through_version)


@functools.cache
def signed_policies() -> Path:
    """The repository's policies, signed by the development reviewer and owner (made once)."""
    directory = dev_keys().root / "policies"
    directory.mkdir()
    for path in POLICIES.glob("*.yaml"):
        (directory / path.name).write_text(sign(path.read_text(encoding="utf-8")), encoding="utf-8")
    return directory


def client_tls(name: str = ANALYST) -> ClientTls:
    """How a client with certificate ``name`` reaches the test broker."""
    keys = dev_keys()
    return ClientTls(str(keys.platform_ca), str(keys.client_cert(name)), str(keys.client_key(name)))


def sandbox_client_tls() -> ClientTls:
    """How the broker (and only the broker) reaches the test sandbox."""
    keys = dev_keys()
    return ClientTls(str(keys.owner_ca), str(keys.broker_to_sandbox_cert), str(keys.broker_to_sandbox_key))


def broker_settings_for(sandbox_port: int, log_path: Path, **overrides) -> BrokerSettings:
    """Broker settings for a test: port 0, mutual TLS both ways, the test identity provider, the access
    log at ``log_path`` (unless ``access_log`` overrides it) and the state store beside it.

    The cap on refusals recorded per client and second is out of reach unless a test sets it: it counts
    per second of the wall clock, and no test may depend on how many calls the machine makes in one
    (tests/test_refusal_cap.py sets it, with a clock of its own)."""
    return BrokerSettings(**{"listen": "127.0.0.1:0", "policies": str(signed_policies()),
                             "max_refusals_per_client": 1_000_000,
                             "sandbox": f"127.0.0.1:{sandbox_port}",
                             "access_log": str(log_path),
                             "store": str(log_path.with_name(log_path.stem + "-state.sqlite")),
                             **broker_settings(dev_keys()), **overrides})


def policies_with(directory: Path, old: str = "", new: str = "", *, without_dominance: str | None = None) -> str:
    """A policies directory in ``directory`` holding the shipped grant with ``old`` replaced by ``new``,
    signed; returns the directory. With ``without_dominance`` (a reason) the grant is the test-only variant
    whose dominance rule is off (see shipped_grant_text)."""
    text = shipped_grant_text(without_dominance=without_dominance)
    assert old in text, f"the shipped grant no longer holds {old!r}"
    policies = directory / "policies"
    policies.mkdir()
    (policies / f"{GRANT}.yaml").write_text(sign(text.replace(old, new)), encoding="utf-8")
    return str(policies)


def sized_declarations_file(path: Path, sizes: dict[tuple[str, str], int]) -> Path:
    """A data file (:func:`declarations_file`) with ``sizes[(street, size_class)]`` taxpayers in each cell, one
    declaration each in January 2025, the n-th with revenue 1,000 + n; a size class ``none`` is NULL."""
    rows = [(f"{street}-{size}-{n}", dt.date(2025, 1, 1), street, 1_000 + n, 100)
            for (street, size), count in sizes.items() for n in range(count)]
    declarations_file(path, rows)
    with duckdb.connect(str(path)) as connection:  # the size class is the part after the street
        connection.execute("UPDATE tax.declarations SET size_class = NULLIF(split_part(taxpayer_id, '-', 2), 'none')")
    return path


def sized_engine(directory: Path, sizes: dict[tuple[str, str], int]):
    """A DuckDB engine over :func:`sized_declarations_file` in ``directory``, closed when the generator is."""
    from sandbox.engine.duckdb_engine import DuckDBEngine

    engine = DuckDBEngine(sized_declarations_file(directory / "cells.duckdb", sizes))
    yield engine
    engine.close()


def create_declarations_table(connection) -> None:
    """Schema ``tax`` and an empty tax.declarations with the demo's columns, on a DuckDB connection."""
    connection.execute("CREATE SCHEMA tax")
    connection.execute("CREATE TABLE tax.declarations (taxpayer_id VARCHAR, period DATE, district_code VARCHAR, "
                       "street_code VARCHAR, industry_code VARCHAR, industry_section VARCHAR, "
                       "registration_type VARCHAR, size_class VARCHAR, revenue BIGINT, vat_paid BIGINT, "
                       "cit_paid BIGINT, iit_withheld BIGINT, employees INTEGER)")


def declarations_file(path: Path, rows) -> Path:
    """A data file whose tax.declarations (the demo's columns) holds ``rows`` of (taxpayer_id, period,
    street_code, revenue, vat_paid), all in Xuanwu; the other columns hold one fixed value."""
    with duckdb.connect(str(path)) as connection:
        create_declarations_table(connection)
        values = [(taxpayer, period, XUANWU, street, revenue, vat) for taxpayer, period, street, revenue, vat in rows]
        for start in range(0, len(values), 500):  # one statement per 500 rows: executemany runs one per row
            batch = values[start:start + 500]
            connection.execute("INSERT INTO tax.declarations VALUES "
                               + ", ".join(["(?, ?, ?, ?, '64', 'I', '173', 'small', ?, ?, 0, 0, 1)"] * len(batch)),
                               [value for row in batch for value in row])
    return path


def pytest_configure(config):
    """pytest-xdist's workers inherit COLUMNS=80 and LINES=24 from execnet, and the CLI's console reads them when
    it is made (at import), which would fix every CLI test's tables at 80 columns whatever the test asks for; a
    CLI started from a terminal has neither unless its user set them. Before any test module imports the CLI."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.pop("COLUMNS", None)
        os.environ.pop("LINES", None)


@pytest.fixture(scope="session", autouse=True)
def cli_without_the_users_settings(tmp_path_factory):
    """The CLI as on a fresh machine, in English: no profile, time zone or language of whoever runs the tests
    (a test that wants a profile makes its own DSBROKER_CONFIG; the Chinese tests set their locale)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DSBROKER_CONFIG", str(tmp_path_factory.mktemp("cli-config") / "profiles.toml"))
        patch.setenv("DSBROKER_LANG", "en")
        for name in ("DSBROKER_PROFILE", "DSBROKER_TZ"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory) -> Path:
    """A demo data file (20,000 taxpayers, about 460,000 declarations), made once per run."""
    path = tmp_path_factory.mktemp("data") / "demo.duckdb"
    make_demo_data(path, taxpayers=20_000)
    return path


@pytest.fixture(scope="session")
def direct(demo_db):
    """A plain DuckDB connection to the demo file: the unrestricted reference."""
    connection = duckdb.connect(str(demo_db), read_only=True)
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def policy():
    return load_policy(POLICIES / f"{GRANT}.yaml")


# Why a test uses the grant with its dominance rule off. The rule refuses totals (ROLLUP: secondary
# suppression reasons about plain sums) and encrypted results (the sandbox cannot withhold one ciphertext).
TOTALS = "the test is about totals (ROLLUP) and secondary suppression, which the dominance rule refuses"
ENCRYPTED = "the test is about encrypted results, which the dominance rule refuses"


@pytest.fixture(scope="session")
def totals_policy():
    """The test-only variant of the shipped grant for tests of totals (:data:`TOTALS`)."""
    return policy_without_dominance(TOTALS)


@pytest.fixture(scope="session")
def encrypted_policy():
    """The test-only variant of the shipped grant for tests of encrypted results (:data:`ENCRYPTED`)."""
    return policy_without_dominance(ENCRYPTED)


@pytest.fixture(scope="session")
def sandbox(demo_db):
    # The released-cell auditor is off in the run's shared sandbox: its tests pin the exact cells of the
    # per-query rules, and with one ledger for the whole run what the auditor withholds would depend on
    # which tests ran before. Its own tests (test_released_cell_auditor.py) give each test a fresh ledger.
    # One body per version is off too (shared_data says why).
    running = start_sandbox(SandboxSettings(listen="127.0.0.1:0", **shared_data(demo_db), datasets=DEMO_DATASETS,
                                            **sandbox_settings(dev_keys())))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def broker(sandbox, tmp_path_factory):
    log = tmp_path_factory.mktemp("state") / "access-log.sqlite"
    running = start_broker(broker_settings_for(sandbox.port, log))
    running.access_log_path = log  # tests read the log the broker writes
    yield running
    running.stop()


@pytest.fixture(scope="session")
def totals_broker(sandbox, tmp_path_factory):
    """A broker of its own, on the shared sandbox, serving the test-only variant of the shipped grant (same
    id) whose dominance rule is off: for end-to-end tests of totals (:data:`TOTALS`)."""
    state = tmp_path_factory.mktemp("totals")
    log = state / "access-log.sqlite"
    running = start_broker(broker_settings_for(sandbox.port, log, policies=policies_with(
        state, without_dominance=TOTALS)))
    running.access_log_path = log
    yield running
    running.stop()


@pytest.fixture
def totals_client(totals_broker):
    with BrokerClient(f"127.0.0.1:{totals_broker.port}", token=token_for(), tls=client_tls()) as c:
        yield c


def token_for(department: str = "xuanwu-fgw", district: str = XUANWU, roles=("requester",),
              subject: str = ANALYST) -> str:
    """A signed token from the test identity provider."""
    return development_token(dev_keys(), subject=subject, department=department, district=district,
                             roles=tuple(roles))


@pytest.fixture
def client(broker):
    with BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(), tls=client_tls()) as c:
        yield c


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


POSTGRES_DSN = os.environ.get("DSBROKER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_schema_dsn(schema: str) -> str:
    """A DSN for the test PostgreSQL server whose tables land in ``schema``."""
    return f"{POSTGRES_DSN}?options=-csearch_path%3D{schema}"


def postgres_admin():
    """An autocommit connection to the test PostgreSQL server; skips the test when none answers,
    unless DSBROKER_REQUIRE_POSTGRES=1 (CI sets it), which fails it instead."""
    import psycopg

    try:
        return psycopg.connect(POSTGRES_DSN, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as error:
        if os.environ.get("DSBROKER_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required (DSBROKER_REQUIRE_POSTGRES=1) but {POSTGRES_DSN} does not answer: "
                        f"{error}")
        pytest.skip(f"no PostgreSQL server at {POSTGRES_DSN} (set DSBROKER_REQUIRE_POSTGRES=1 to fail instead)")


def copy_to_postgres(local: duckdb.DuckDBPyConnection, server, schema: str = "tax") -> list[str]:
    """Copy every table of ``schema`` in the DuckDB connection ``local`` into the same schema (made here) on
    the PostgreSQL connection ``server``, as ``dsbroker data make --into`` does; returns the tables copied."""
    from sandbox.demo.postgres import copy_schema

    return list(copy_schema(local, server, schema))


@pytest.fixture(params=["sqlite", "postgres"])
def store_location(request, tmp_path):
    """Where a store lives: a SQLite file, or a fresh schema on the real PostgreSQL server.

    The PostgreSQL half skips when no server answers, unless DSBROKER_REQUIRE_POSTGRES=1 (CI sets it).
    """
    if request.param == "sqlite":
        yield str(tmp_path / "state.sqlite")
        return
    admin = postgres_admin()
    schema = f"dsbroker_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield postgres_schema_dsn(schema)
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture
def engines(tmp_path):
    """Opens a DuckDB engine over crafted declarations (optionally edited by SQL); closes them all afterwards."""
    opened = []

    def make(name: str, rows: list[tuple], *edits: str) -> DuckDBEngine:
        directory = tmp_path / name
        directory.mkdir()
        path = declarations_file(directory / "owner-data.duckdb", rows)
        if edits:
            with duckdb.connect(str(path)) as connection:
                for edit in edits:
                    connection.execute(edit)
        engine = DuckDBEngine(path)
        opened.append(engine)
        return engine

    yield make
    for engine in opened:
        engine.close()


def call_raw(port: int, path: str, request, *, token: str | None, deadline: bool = True):
    """Call ``path`` on the broker with ``request`` as the analyst, without the SDK; returns (request id,
    status code). The deadline is generous (a loaded machine) unless ``deadline`` is False: none at all."""
    request_id = f"raw-{uuid.uuid4().hex[:12]}"
    metadata = [("x-request-id", request_id)] + ([("authorization", f"Bearer {token}")] if token else [])
    with open_channel(f"127.0.0.1:{port}", tls=client_tls(), options=[]) as channel:
        stub = channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=lambda b: b)
        try:
            stub(request, metadata=metadata, timeout=30 if deadline else None)
            return request_id, grpc.StatusCode.OK
        except grpc.RpcError as error:
            return request_id, error.code()


def shared_data(path: Path) -> dict:
    """Sandbox settings for a data file many tests share (the run's demo data): the released-cell auditor off, and
    one body per version off. Their ledgers would sit beside the shared file, and what the auditor withholds would
    then depend on which tests ran before; and the tests serve variants of the shipped grant under one id and
    version (products-only, dominance off, ...), which one body per version refuses once two have been seen. The
    auditor's own tests (test_released_cell_auditor.py) and those of one body per version (test_policy_versions.py,
    test_attack_round14.py) give each test ledgers of its own."""
    return {"data": str(path), "audit_released_cells": False, "one_body_per_version": False}


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """The small demo data (3,000 taxpayers, 24 months) in a DuckDB file, with its served tables as Parquet
    beside it (``<schema>.<table>.parquet`` in ``parquet/``), for the engines that read files."""
    from sandbox.demo.parquet import export_parquet

    path = tmp_path_factory.mktemp("small-demo") / "small.duckdb"
    make_demo_data(path, taxpayers=3_000, months=24)
    export_parquet(path, path.parent / "parquet", served=DEMO_DATASETS)
    return path


def parquet_tables(small: Path, served=DEMO_DATASETS) -> dict[str, str]:
    """The ``spark_tables`` of the small demo data's Parquet (:func:`small_demo`)."""
    return {table: str(small.parent / "parquet" / f"{table}.parquet") for table in served}


@pytest.fixture(scope="session")
def spark_engine(small_demo):
    """One local Spark session for the whole run (starting one costs seconds), serving the small demo data."""
    from sandbox.engine.interface import EngineLimits
    from sandbox.engine.spark_engine import SparkEngine

    engine = SparkEngine(parquet_tables(small_demo), EngineLimits(memory_limit="1GB", threads=2, pool_size=2),
                         master="local[2]")
    yield engine
    engine.close()
