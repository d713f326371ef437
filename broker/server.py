"""Starts the broker: transport, identity, policies, access log, sandbox channel, servicers, health."""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import Callable

from broker.access_log.log import AccessLog, AccessRecord
from broker.access_log.calls import CallAuditInterceptor
from dsbroker.records.checkpoints import load_or_create_signing_key, load_public_key
from broker.access_log.checkpoint_witnesses import CheckpointWitnesses
from dsbroker.identity.auth import AuthenticationError, AuthInterceptor, current_principal
from dsbroker.rpc.call_context import (CallConventionsInterceptor, CallerLimitInterceptor, current_client_key,
                                 current_request_id)
from dsbroker.errors import ConfigError, DsbrokerError
from broker.query.pipeline import QueryPipeline
from broker.workflow.policy_registry import STATEMENTS_DIRECTORY, PolicyRegistry
from broker.workflow.policy_sync import PolicySync
from broker.access_log.refusal_cap import RefusalCap
from broker.query.sandbox_client import SandboxClient
from broker.query.secure_sum import SecureSum
from broker.catalog import Catalog
from dsbroker.policy.signing import Trust
from broker.servicers.access_requests import AccessRequestServicer
from broker.servicers.audit import AuditServicer
from broker.servicers.catalog import CatalogServicer
from broker.servicers.policies import PolicyServicer
from broker.servicers.query import QueryServicer
from broker.workflow.store import open_store
from broker.workflow.review import Workflow
from dsbroker.observability.endpoints import OperationsEndpoints, check_listen
from dsbroker.observability.metrics import ServerMetrics
from dsbroker.observability.observing import ObservingInterceptor
from dsbroker.observability.readiness import Dependency, Readiness, RecheckingHealthServicer
from dsbroker.observability.request_log import install_request_log
from dsbroker.rpc.serving import Running, add_health, bind, build_server, server_tls
from dsbroker.rpc.status import ErrorInterceptor
from broker.settings import BrokerSettings, access_log_key_path
from dsbroker.settings import owner_timezone
from dsbroker.identity.tls import ClientTls
from dsbroker.identity.tokens import authenticator_from_settings
from broker.v1 import (access_request_service_pb2, access_request_service_pb2_grpc, audit_service_pb2,
                       audit_service_pb2_grpc, catalog_service_pb2, catalog_service_pb2_grpc, policy_service_pb2,
                       policy_service_pb2_grpc, query_service_pb2, query_service_pb2_grpc)

log = logging.getLogger(__name__)
# The broker is no use while it cannot write its log: every query's DECISION record must be written first.
ACCESS_LOG_DEPENDENCY = Dependency("access_log", frozenset({"ACCESS_LOG_UNAVAILABLE", "ACCESS_LOG_TAMPERED"}))
SERVICE_NAME = query_service_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name
SERVICE_NAMES = [SERVICE_NAME] + [
    module.DESCRIPTOR.services_by_name[name].full_name for module, name in (
        (catalog_service_pb2, "CatalogService"), (access_request_service_pb2, "AccessRequestService"),
        (policy_service_pb2, "PolicyService"), (audit_service_pb2, "AuditService"))]


def start_broker(settings: BrokerSettings, *, clock: Callable[[], dt.datetime] | None = None,
                 access_log: AccessLog | None = None, refusal_clock: Callable[[], float] = time.time) -> Running:
    """Check the configuration, load policies, open the access log and start serving; port 0 picks a free port.

    ``clock`` replaces the wall clock (tests fix the time for validity and quotas); ``access_log``
    replaces the configured one (the benchmark measures the broker without it); ``refusal_clock``
    (seconds since the epoch) is the clock of the cap on refusals recorded per client and second.
    """
    tls = server_tls(settings, "the broker", client_ca_required=False)
    check_listen(metrics_listen=settings.metrics_listen, health_listen=settings.health_listen, what="the broker")
    if settings.max_refusals_per_client < 1:
        raise ConfigError("max_refusals_per_client must be at least 1")
    if settings.token_binding != "none" and not settings.tls_client_ca:
        raise ConfigError("token_binding needs client certificates: set tls_client_ca")
    authenticator = authenticator_from_settings(settings, binding=settings.token_binding)
    owner_tz = owner_timezone(settings.owner_timezone)
    clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
    trust = Trust.load(settings.trust) if settings.trust else None
    if settings.access_log_sql_bytes < 1024:
        raise ConfigError("access_log_sql_bytes must be at least 1024")
    sandbox_tls = _sandbox_tls(settings)
    sandbox = SandboxClient(settings.sandbox, tls=sandbox_tls, max_message_bytes=settings.max_message_bytes)
    partitions = SecureSum({name: SandboxClient(address, tls=sandbox_tls, max_message_bytes=settings.max_message_bytes)
                            for name, address in _partitions(settings.partitions).items()})
    # Every sandbox, the partitions too, witnesses the log's checkpoints.
    witnesses = CheckpointWitnesses({settings.sandbox: sandbox, **partitions.sandboxes},
                                    lambda: access_log.checkpoints(),
                                    lambda after, upto: access_log.record_hashes(after, upto),
                                    on_fork=lambda why: access_log.alarm(why))
    metrics = ServerMetrics("broker")
    health = RecheckingHealthServicer()
    readiness = Readiness(health, SERVICE_NAMES, [ACCESS_LOG_DEPENDENCY])
    health.readiness = readiness

    def on_batch(records: int, seconds: float, error: BaseException | None) -> None:
        metrics.access_log_batch(records, seconds)
        if error is None:
            readiness.clear(ACCESS_LOG_DEPENDENCY.name)
        else:
            readiness.fail(ACCESS_LOG_DEPENDENCY.name, getattr(error, "reason", "ACCESS_LOG_UNAVAILABLE"))

    if access_log is None:
        access_log = AccessLog(settings.access_log,
                               signing_key=load_or_create_signing_key(access_log_key_path(settings)),
                               peer_keys=[load_public_key(path) for path in settings.access_log_peer_keys],
                               checkpoint_every=settings.checkpoint_every,
                               checkpoint_seconds=settings.checkpoint_seconds,
                               max_sql_bytes=settings.access_log_sql_bytes, on_checkpoint=witnesses.submit,
                               on_batch=on_batch)
    store = open_store(settings.store)
    sync = PolicySync({"sandbox": sandbox, **partitions.sandboxes})
    policies = PolicyRegistry(store, access_log, owner_timezone=owner_tz, clock=clock, trust=trust,
                              publish=sync.publish, statements_dir=Path(settings.policies) / STATEMENTS_DIRECTORY)
    installed = policies.install_files(settings.policies) if Path(settings.policies).is_dir() else 0
    # The sandboxes keep the owner's revocations for good: a broker on a new store learns them again here,
    # and hands each sandbox whatever it holds itself (statements, and each policy's current version).
    policies.recover(sync.collect(), source="sandboxes")
    sync.publish(policies.all_statements(), policies.current_documents())
    catalog = Catalog(sandbox)
    workflow = Workflow(store, catalog, access_log, trust=trust, owner_timezone=owner_tz, clock=clock,
                        policies_dir=settings.policies)

    # Refusals are recorded through the cap: past it, a client's refusals are counted and it is answered
    # TOO_MANY_FAILED_CALLS (raised here, in place of the refusal).
    refusals = RefusalCap(access_log, per_second=settings.max_refusals_per_client, clock=refusal_clock)

    def record_auth_failure(method: str, client: str, error: AuthenticationError) -> None:
        refusals.record(current_client_key.get(), AccessRecord(
            event="auth.failure", decision="deny", client=client, reason=error.reason,
            request_id=current_request_id.get(), detail={"method": method}))

    def record_refused_call(method: str, context, error: DsbrokerError) -> None:
        principal = current_principal.get()
        refusals.record(current_client_key.get(), AccessRecord(
            event="call.refused", decision="deny", client=context.peer(), reason=error.reason,
            subject=principal.subject if principal else "", department=principal.department if principal else "",
            token_id=principal.token_id if principal else "", request_id=current_request_id.get(),
            detail={"method": method}))

    if settings.request_log:
        install_request_log()
    server = build_server(
        max_workers=settings.max_workers, max_message_bytes=settings.max_message_bytes,
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
        # Outside the chain: the status each call ends with, timed, counted and logged (one JSON line).
        observer=ObservingInterceptor(metrics, server="broker", log_lines=settings.request_log,
                                      on_answer=readiness.judge),
        # The whole chain, outermost first: errors become statuses; request id and deadline; authentication;
        # the per-caller cap, which needs to know the caller; last the record of calls that wrote none of
        # their own. The second to fourth record their own refusals.
        interceptors=[ErrorInterceptor(),
                      CallConventionsInterceptor(on_refusal=record_refused_call),
                      AuthInterceptor(authenticator, on_failure=record_auth_failure),
                      CallerLimitInterceptor(settings.max_calls_per_caller, on_refusal=record_refused_call),
                      CallAuditInterceptor(access_log)])
    query_service_pb2_grpc.add_QueryServiceServicer_to_server(
        QueryServicer(QueryPipeline(policies, sandbox, access_log, owner_timezone=owner_tz, clock=clock,
                                    partitions=partitions, column_types=catalog.column_types,
                                    engine_dialect=catalog.engine_dialect, metrics=metrics)), server)
    catalog_service_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(catalog), server)
    access_request_service_pb2_grpc.add_AccessRequestServiceServicer_to_server(AccessRequestServicer(workflow), server)
    policy_service_pb2_grpc.add_PolicyServiceServicer_to_server(PolicyServicer(policies), server)
    audit_service_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(access_log), server)
    add_health(server, SERVICE_NAMES, reflection=settings.reflection, servicer=health)
    port = bind(server, settings.listen, tls)
    endpoints = OperationsEndpoints.start(metrics, health, metrics_listen=settings.metrics_listen,
                                          health_listen=settings.health_listen, what="the broker")
    server.start()
    log.info("broker serving (%d policy file(s) installed) on port %d over %s; sandbox at %s", installed, port,
             "plaintext" if tls is None else ("mutual TLS" if tls.client_ca else "TLS"), settings.sandbox)
    # Order matters: the counted refusals are written, the log signs its last checkpoint, the witnesses
    # get it, then the channels close.
    return Running(server, health, port, settings.grace_seconds,
                   on_stop=[refusals.close, access_log.finish, witnesses.close, access_log.close, sandbox.close,
                            partitions.close, store.close], metrics=metrics, endpoints=endpoints, readiness=readiness)


def _partitions(entries: tuple[str, ...]) -> dict[str, str]:
    """The ``partitions`` setting as sandbox id -> address; ConfigError naming a malformed entry."""
    partitions: dict[str, str] = {}
    for entry in entries:
        name, _, address = entry.partition("=")
        if not name or ":" not in address or name in partitions:
            raise ConfigError(f"partitions: {entry!r} is not SANDBOX_ID=HOST:PORT, or repeats an id")
        partitions[name] = address
    return partitions


def _sandbox_tls(settings: BrokerSettings) -> ClientTls | None:
    if settings.sandbox_plaintext:
        return None
    if not (settings.sandbox_ca and settings.sandbox_cert and settings.sandbox_key):
        raise ConfigError("the broker reaches the sandbox over mutual TLS: set sandbox_ca, sandbox_cert and "
                          "sandbox_key, or sandbox_plaintext = true for a loopback development sandbox")
    return ClientTls(settings.sandbox_ca, settings.sandbox_cert, settings.sandbox_key, settings.sandbox_server_name)
