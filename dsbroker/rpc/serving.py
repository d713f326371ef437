"""Building, running and stopping a gRPC server the same way for the broker and the sandbox."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from types import FrameType
from typing import Iterable, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection as reflection_service

from dsbroker.errors import ConfigError
from dsbroker.observability.endpoints import OperationsEndpoints
from dsbroker.observability.metrics import ServerMetrics
from dsbroker.observability.readiness import Readiness, RecheckingHealthServicer
from dsbroker.rpc.status import ErrorInterceptor
from dsbroker.identity.tls import ServerTls, require_loopback

log = logging.getLogger(__name__)


def message_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel and server options that set message-size limits deliberately."""
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)]


def build_server(*, max_workers: int, max_message_bytes: int, max_concurrent_rpcs: int,
                 interceptors: Iterable[grpc.ServerInterceptor],
                 observer: grpc.ServerInterceptor | None = None) -> grpc.Server:
    """A server with ``interceptors``, outermost first; the first must be :class:`ErrorInterceptor`, which
    turns every error of the ones inside it and of the servicers into a status (see dsbroker.rpc.status).
    ``observer`` (dsbroker.observability.observing) goes outside them all, to see the status the caller gets.

    ``max_concurrent_rpcs`` bounds calls in flight; past it gRPC answers RESOURCE_EXHAUSTED
    at once instead of queueing without limit.
    """
    chain = list(interceptors)
    if not chain or not isinstance(chain[0], ErrorInterceptor):
        raise TypeError("a server's outermost interceptor is the ErrorInterceptor")
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=([observer] if observer is not None else []) + chain,
        options=message_options(max_message_bytes),
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )


class TransportSettings(Protocol):
    """The transport settings both servers have (``dsbroker.settings.TRANSPORT_HELP``)."""

    @property
    def listen(self) -> str: ...
    @property
    def plaintext(self) -> bool: ...
    @property
    def tls_cert(self) -> str: ...
    @property
    def tls_key(self) -> str: ...
    @property
    def tls_client_ca(self) -> str: ...


def server_tls(settings: TransportSettings, what: str, *, client_ca_required: bool) -> ServerTls | None:
    """The TLS a server is configured for, or None for plaintext (loopback only, and only when asked for)."""
    if settings.plaintext:
        if settings.tls_cert or settings.tls_key:
            raise ConfigError(f"{what}: set either plaintext = true or tls_cert/tls_key, not both")
        require_loopback(settings.listen, what)
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise ConfigError(f"{what} needs tls_cert and tls_key (see 'dsbroker keys init'), or plaintext = true "
                          "on a loopback address for development")
    if client_ca_required and not settings.tls_client_ca:
        raise ConfigError(f"{what} needs tls_client_ca: only the broker, with a certificate from that CA, may call it")
    tls = ServerTls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    tls.credentials()  # read the files now, so a missing one stops the start with a clear message
    return tls


def bind(server: grpc.Server, listen: str, tls: ServerTls | None) -> int:
    """Bind a TLS (or plaintext) port and return the port actually bound (useful with port 0)."""
    try:
        port = server.add_secure_port(listen, tls.credentials()) if tls else server.add_insecure_port(listen)
    except RuntimeError:
        port = 0
    if not port:
        raise ConfigError(f"cannot listen on {listen!r}: address in use or invalid")
    return port


def add_health(server: grpc.Server, services: Iterable[str], *, reflection: bool = False,
               servicer: health.HealthServicer | None = None) -> health.HealthServicer:
    """Serve the standard health service (``servicer``, by default a new one), SERVING for each service and
    overall; and reflection if asked."""
    services = tuple(services)
    servicer = servicer or RecheckingHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ("", *services):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if reflection:
        reflection_service.enable_server_reflection(
            (*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection_service.SERVICE_NAME), server)
    return servicer


class Running:
    """A started server with its health servicer; stops gracefully on SIGTERM or SIGINT."""

    def __init__(self, server: grpc.Server, health_servicer: health.HealthServicer, port: int,
                 grace_seconds: float, on_stop: Iterable = (), *, metrics: ServerMetrics | None = None,
                 endpoints: OperationsEndpoints | None = None, readiness: Readiness | None = None) -> None:
        """``metrics``, ``endpoints`` and ``readiness`` are the server's operations side: its registry, the
        metrics and probe ports (closed last, after ``on_stop``: probes see NOT_SERVING while calls finish),
        and the dependencies its health follows."""
        self.server = server
        self.metrics = metrics
        self.endpoints = endpoints or OperationsEndpoints()
        self.readiness = readiness
        self.on_stop = tuple(on_stop)
        self.health = health_servicer
        self.port = port
        self.grace_seconds = grace_seconds
        self._stopped = threading.Event()

    def stop(self) -> None:
        """Report NOT_SERVING, let running calls finish within the grace period, then stop."""
        if self._stopped.is_set():
            return
        self.health.enter_graceful_shutdown()
        self.server.stop(self.grace_seconds).wait()
        for callback in self.on_stop:
            callback()
        self.endpoints.close()
        self._stopped.set()

    def wait_for_signal(self) -> None:
        """Block until SIGTERM or SIGINT, then stop gracefully."""
        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s; shutting down", signal.Signals(signum).name)
            threading.Thread(target=self.stop, daemon=True).start()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        self._stopped.wait()
