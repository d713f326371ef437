"""Building, running and stopping a gRPC server the same way for the broker and the sandbox."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from typing import Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from broker.errors import ConfigError
from broker.rpc_status import ErrorInterceptor

log = logging.getLogger(__name__)


def message_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel and server options that set message-size limits deliberately."""
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)]


def build_server(*, max_workers: int, max_message_bytes: int, max_concurrent_rpcs: int | None = None,
                 interceptors: Iterable[grpc.ServerInterceptor] = ()) -> grpc.Server:
    """A server whose outermost interceptor turns errors into statuses (see rpc_status)."""
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[ErrorInterceptor(), *interceptors],
        options=message_options(max_message_bytes),
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )


def bind(server: grpc.Server, listen: str) -> int:
    """Bind a plaintext port and return the port actually bound (useful with port 0)."""
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError:
        port = 0
    if not port:
        raise ConfigError(f"cannot listen on {listen!r}: address in use or invalid")
    return port


def add_health(server: grpc.Server, services: Iterable[str]) -> health.HealthServicer:
    """Serve the standard health service, SERVING for each service and overall."""
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ("", *services):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


class Running:
    """A started server with its health servicer; stops gracefully on SIGTERM or SIGINT."""

    def __init__(self, server: grpc.Server, health_servicer: health.HealthServicer, port: int,
                 grace_seconds: float, on_stop: Iterable = ()) -> None:
        self.server = server
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
        self._stopped.set()

    def wait_for_signal(self) -> None:
        """Block until SIGTERM or SIGINT, then stop gracefully."""
        def handle(signum, _frame):
            log.info("received %s; shutting down", signal.Signals(signum).name)
            threading.Thread(target=self.stop, daemon=True).start()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        self._stopped.wait()
