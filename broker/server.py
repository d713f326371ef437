"""Starts the broker: policies, access log, sandbox channel, auth, servicers, health."""

from __future__ import annotations

import logging

from broker.access_log import AccessLog, AccessRecord
from broker.auth import AuthenticationError, AuthInterceptor, DevelopmentAuthenticator
from broker.errors import ConfigError
from broker.pipeline import QueryPipeline
from broker.policy import load_policies
from broker.sandbox_client import SandboxClient
from broker.servicers.query import QueryServicer
from broker.serving import Running, add_health, bind, build_server
from broker.settings import BrokerSettings, require_loopback
from broker.v1 import query_service_pb2, query_service_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = query_service_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name


def start_broker(settings: BrokerSettings) -> Running:
    """Load policies, open the access log and start serving; port 0 picks a free port."""
    require_loopback(settings.listen, "the broker")
    if settings.auth != "development":
        raise ConfigError(f"auth {settings.auth!r} is not available in this version; use 'development'")
    policies = load_policies(settings.policies)
    access_log = AccessLog(settings.access_log)
    sandbox = SandboxClient(settings.sandbox, max_message_bytes=settings.max_message_bytes)

    def record_auth_failure(method: str, client: str, error: AuthenticationError) -> None:
        access_log.append(AccessRecord(event="auth.failure", decision="deny", client=client,
                                       reason=error.reason, detail={"method": method}))

    server = build_server(
        max_workers=settings.max_workers, max_message_bytes=settings.max_message_bytes,
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
        # Order: errors (outermost, in build_server), then authentication.
        interceptors=[AuthInterceptor(DevelopmentAuthenticator(), on_failure=record_auth_failure)])
    pipeline = QueryPipeline(policies, sandbox, access_log)
    query_service_pb2_grpc.add_QueryServiceServicer_to_server(
        QueryServicer(pipeline, default_deadline_seconds=settings.default_deadline_seconds), server)
    health = add_health(server, [SERVICE_NAME])
    port = bind(server, settings.listen)
    server.start()
    log.info("broker serving %d grant(s) on port %d; sandbox at %s", len(policies), port, settings.sandbox)
    return Running(server, health, port, settings.grace_seconds, on_stop=[sandbox.close, access_log.close])
