"""Starts the sandbox: engine, servicer, health and limits (no broker servicer is imported here)."""

from __future__ import annotations

import logging
import math
import socket
import time
from pathlib import Path
from typing import Callable

from dsbroker.records.checkpoints import load_or_create_signing_key, load_public_key
from dsbroker.errors import ConfigError
from dsbroker.rpc.call_context import CallConventionsInterceptor
from dsbroker.policy.signing import Trust
from dsbroker.observability.endpoints import OperationsEndpoints, check_listen
from dsbroker.observability.metrics import ServerMetrics
from dsbroker.observability.observing import ObservingInterceptor
from dsbroker.observability.readiness import Dependency, Readiness, RecheckingHealthServicer
from dsbroker.observability.request_log import install_request_log
from dsbroker.rpc.serving import Running, add_health, bind, build_server, server_tls
from dsbroker.rpc.status import ErrorInterceptor
from dsbroker.settings import owner_timezone
from sandbox.settings import SandboxSettings
from sandbox.catalog import Catalog, catalog_path_for, load_catalog
from sandbox.ledgers.checkpoint_witness import CheckpointWitness
from sandbox.engine.configured import open_engine, state_path
from sandbox.engine.interface import Engine
from sandbox.ledgers.executions import ExecutionLedger
from sandbox.checks.lookups import LookupChecker
from dsbroker.identity.tokens import authenticator_from_settings
from dsbroker.identity.tls import CertificateAuthorities
from sandbox.checks.plan import PlanGuardChecker
from sandbox.checks.policy import PlanPolicyChecker
from sandbox.ledgers.policies import PolicyLedger
from sandbox.checks.policy_standing import PolicyStanding
from sandbox.ledgers.privacy import PrivacyLedger
from sandbox.ledgers.released_cells import ReleasedCellLedger
from sandbox.servicer import SandboxServicer
from sandbox.v1 import sandbox_service_pb2, sandbox_service_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = sandbox_service_pb2.DESCRIPTOR.services_by_name["SandboxService"].full_name
EXECUTE_PLAN = f"/{SERVICE_NAME}/ExecutePlan"
# What makes the sandbox unable to answer: health reports NOT_SERVING until a plan runs again (or, for the
# engine, a probe's recheck finds it answering).
ENGINE_FAILURES = frozenset({"ENGINE_UNREACHABLE", "ENGINE_NOT_LOCKED_DOWN", "DATA_FILE_MISSING"})
LEDGER_FAILURES = frozenset({"EXECUTION_LEDGER_UNAVAILABLE", "RELEASED_CELLS_UNAVAILABLE",
                             "POLICY_LEDGER_UNAVAILABLE", "WITNESS_LEDGER_UNAVAILABLE"})
RECHECK_TIMEOUT_SECONDS = 2.0


def start_sandbox(settings: SandboxSettings, *, engine_clock: Callable[[], float] = time.monotonic) -> Running:
    """Open the engine and start serving; returns the running server (port 0 picks a free port).

    ``engine_clock`` (monotonic seconds) is what the engine measures queries' time limits with."""
    tls = server_tls(settings, "the sandbox", client_ca_required=True)
    check_listen(metrics_listen=settings.metrics_listen, health_listen=settings.health_listen, what="the sandbox")
    if not settings.datasets:
        # Deny by default: a file may hold tables nobody meant to publish (the demo's company names).
        raise ConfigError("no datasets configured: set datasets to the tables this sandbox serves, as schema.table "
                          "(e.g. datasets = [\"tax.declarations\", \"tax.streets\"]); it serves and lists no other")
    if not settings.trust:
        raise ConfigError("no trust file configured: the sandbox runs only plans whose policy is signed by keys "
                          "in it (set trust; 'dsbroker keys init' makes a development one)")
    if settings.token_binding == "subject" and not settings.requester_ca:
        # Without the CA the sandbox could not tell a requester's certificate from one the broker made
        # with the requester's name in it.
        raise ConfigError("token_binding = \"subject\" needs requester_ca (the CA of the requesters' certificates)")
    noise_budgets = _noise_budgets(settings)
    trust = Trust.load(settings.trust)
    paths = {name: state_path(settings, configured, name) for name, configured in (
        ("policies.sqlite", settings.policy_ledger), ("privacy.sqlite", settings.privacy_ledger),
        ("released.sqlite", settings.released_cells), ("executions.sqlite", settings.execution_ledger))}
    if settings.state_dir:
        Path(settings.state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)  # the ledgers are the owner's
    # The sandbox sees the broker's TLS certificate, not the requester's: it checks tokens against the
    # requester's certificate the broker forwards in each plan (and, with requester_ca, its chain).
    authenticator = authenticator_from_settings(settings, binding=settings.token_binding)
    requester_ca = CertificateAuthorities(settings.requester_ca) if settings.requester_ca else None
    engine = open_engine(settings, clock=engine_clock)
    datasets = set(settings.datasets)
    missing = datasets - engine.tables()
    if missing:
        engine.close()
        raise ConfigError(f"configured datasets not served by the {settings.engine} engine ({engine.name}): "
                          f"{', '.join(sorted(missing))}")
    plans = PlanGuardChecker(authenticator, requester_ca=requester_ca, engine_dialect=engine.dialect,
                             column_types={table: dict(engine.columns(table)) for table in datasets})
    try:
        catalog = load_catalog(catalog_file(settings), datasets, engine.columns, engine_dialect=engine.dialect)
    except ConfigError:
        engine.close()
        raise
    _advise_statistics(engine, catalog)
    policy_ledger = PolicyLedger(paths["policies.sqlite"])
    try:
        standing = PolicyStanding(trust, policy_ledger, directory=settings.statements or None,
                                  one_body_per_version=settings.one_body_per_version)
    except ConfigError:
        policy_ledger.close()
        engine.close()
        raise
    policies = PlanPolicyChecker(trust, standing=standing, owner_timezone=owner_timezone(settings.owner_timezone))
    ledger = PrivacyLedger(paths["privacy.sqlite"], dataset_budgets=noise_budgets)
    released = ReleasedCellLedger(paths["released.sqlite"]) if settings.audit_released_cells else None
    if released is None:
        log.warning("the released-cell auditor is off: exact answers are not checked against cells released before")
    ledger_file = paths["executions.sqlite"]
    executions = ExecutionLedger(ledger_file, sandbox_id=settings.sandbox_id or f"{socket.gethostname()}:{engine.name}")
    witness = _witness(settings, ledger_file, executions.sandbox_id)
    metrics = ServerMetrics("sandbox")
    health = RecheckingHealthServicer()
    readiness = Readiness(health, [SERVICE_NAME], [
        Dependency("engine", ENGINE_FAILURES, frozenset({EXECUTE_PLAN}), recheck=lambda: _engine_answers(engine)),
        Dependency("ledgers", LEDGER_FAILURES, frozenset({EXECUTE_PLAN}))])
    health.readiness = readiness
    if settings.request_log:
        install_request_log()
    server = build_server(max_workers=settings.max_workers, max_message_bytes=settings.max_message_bytes,
                          max_concurrent_rpcs=settings.max_concurrent_rpcs,
                          observer=ObservingInterceptor(metrics, server="sandbox", log_lines=settings.request_log,
                                                        on_answer=readiness.judge),
                          interceptors=[ErrorInterceptor(), CallConventionsInterceptor()])
    sandbox_service_pb2_grpc.add_SandboxServiceServicer_to_server(
        SandboxServicer(engine, datasets, catalog=catalog, policies=policies, plans=plans,
                        lookups=LookupChecker.for_engine(engine, datasets), max_rows=settings.max_rows,
                        max_execution_seconds=settings.max_execution_seconds, executions=executions,
                        witness=witness, ledger=ledger, data_version=engine.data_version(),
                        released=released, metrics=metrics), server)
    add_health(server, [SERVICE_NAME], reflection=settings.reflection, servicer=health)
    port = bind(server, settings.listen, tls)
    endpoints = OperationsEndpoints.start(metrics, health, metrics_listen=settings.metrics_listen,
                                          health_listen=settings.health_listen, what="the sandbox")
    server.start()
    log.info("sandbox serving %s from %s (%s) on port %d", ", ".join(sorted(datasets)), engine.name, settings.engine,
             port)
    return Running(server, health, port, settings.grace_seconds,
                   on_stop=[engine.close, ledger.close, executions.close, witness.close,
                            policy_ledger.close, *([released.close] if released is not None else [])],
                   metrics=metrics, endpoints=endpoints, readiness=readiness)


def _engine_answers(engine: Engine) -> bool:
    """Whether the engine runs a query that reads nothing (the readiness recheck of a failing engine)."""
    return engine.execute("SELECT 1", timeout_s=RECHECK_TIMEOUT_SECONDS, max_rows=1).rows == [(1,)]


def _advise_statistics(engine: Engine, catalog: Catalog) -> None:
    """On PostgreSQL, log for each dataset the planner statistics its owner has not given it: without them the
    guarded plans sort where they could hash (:mod:`sandbox.engine.postgres_statistics`). Advice only: plans
    change, answers do not."""
    if engine.dialect != "postgres":
        return  # DuckDB and Spark aggregate by hashing, whatever they estimate
    from sandbox.engine.postgres_engine import PostgresEngine
    from sandbox.engine.postgres_statistics import catalog_grouping

    if not isinstance(engine, PostgresEngine):
        return

    for table, statement in engine.missing_statistics(catalog_grouping(catalog)).items():
        log.warning("%s has no ndistinct statistics over its entity and group columns, so PostgreSQL will sort "
                    "where it could hash its per-entity cells; its owner can run once: %s; ANALYZE %s",
                    table, statement, table)


def catalog_file(settings: SandboxSettings) -> Path | None:
    """The owner's catalog file: as configured, else beside a DuckDB data file when one is there, else none (the
    datasets are then published by name only)."""
    if settings.catalog:
        return Path(settings.catalog)
    beside = catalog_path_for(settings.data) if settings.engine == "duckdb" and settings.data else None
    if beside is not None and beside.is_file():
        return beside
    log.warning("no catalog configured%s: datasets are published by name only, with nothing requestable "
                "('dsbroker catalog draft' writes one for the owner to fill in)",
                f" or beside {settings.data}" if beside is not None else "")
    return None


def _noise_budgets(settings: SandboxSettings) -> dict[str, float]:
    """The owner's ``noise_budgets`` as dataset -> epsilon: each a dataset this sandbox serves, once, with a positive
    finite number (a misspelt name would leave the real dataset on its grants' budgets unnoticed)."""
    budgets: dict[str, float] = {}
    for entry in settings.noise_budgets:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)):
            raise ConfigError("noise_budgets must be a table of dataset = epsilon (e.g. [noise_budgets] "
                              "\"tax.declarations\" = 6.0)")
        dataset, epsilon = entry
        if dataset not in settings.datasets:
            raise ConfigError(f"noise_budgets names {dataset!r}, which is not one of the datasets served")
        if dataset in budgets:
            raise ConfigError(f"noise_budgets gives {dataset!r} twice")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) \
                or epsilon <= 0:
            raise ConfigError(f"noise_budgets gives {dataset!r} a budget that is not a positive number of epsilon")
        budgets[dataset] = float(epsilon)
    return budgets


def _witness(settings: SandboxSettings, ledger_file: Path, sandbox_id: str) -> CheckpointWitness:
    """The witness of the broker's log checkpoints: it pins ``broker_log_keys`` and countersigns with
    ``witness_key`` (made on first start, beside the ledger unless configured)."""
    broker_keys = [load_public_key(path) for path in settings.broker_log_keys]
    if not broker_keys:
        log.warning("broker_log_keys is not set: this sandbox witnesses none of the broker's log checkpoints")
    key_path = Path(settings.witness_key) if settings.witness_key else ledger_file.with_name(
        ledger_file.name + ".witness.key")
    return CheckpointWitness(ledger_file, broker_keys=broker_keys, witness_id=sandbox_id,
                             witness_key=load_or_create_signing_key(key_path) if broker_keys else None)
