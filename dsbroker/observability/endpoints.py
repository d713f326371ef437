"""The operator's ports beside a server's own: Prometheus metrics over HTTP, and health for probes.

- **Metrics** (``metrics_listen``): prometheus-client's HTTP exposition of the server's own registry. It
  carries counts and times under bounded labels, never SQL, a value or an identity, so it may listen
  where the operator's Prometheus can reach it.
- **Health** (``health_listen``): the standard ``grpc.health.v1.Health`` service, the same servicer as
  on the server's TLS port (so both report the same statuses), in plaintext for probes that hold no
  client certificate. Plaintext is allowed on loopback only: an orchestrator's probe on the host (or a
  sidecar in the pod) reaches it; anything else must use the TLS port.

Both are off unless configured (empty): a fixed default port would collide when a broker and a sandbox
share a host, as in the demo, and a server opens no port the operator did not ask for.
"""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from prometheus_client import start_http_server

from dsbroker.errors import ConfigError
from dsbroker.identity.tls import require_loopback
from dsbroker.observability.metrics import ServerMetrics

log = logging.getLogger(__name__)

PROBE_WORKERS = 2


def host_port(listen: str, setting: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) split; ConfigError naming ``setting`` otherwise."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{setting} must be HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


def check_listen(*, metrics_listen: str, health_listen: str, what: str) -> None:
    """Refuse a malformed address, or plaintext health off loopback, before a server opens anything."""
    if metrics_listen:
        host_port(metrics_listen, "metrics_listen")
    if health_listen:
        host_port(health_listen, "health_listen")
        require_loopback(health_listen, f"{what}'s health_listen")


@dataclass
class OperationsEndpoints:
    """The metrics and probe ports a server opened (0: not configured); :meth:`close` shuts them."""

    metrics_port: int = 0
    health_port: int = 0
    _metrics_server: WSGIServer | None = None
    _probe_server: grpc.Server | None = None

    @classmethod
    def start(cls, metrics: ServerMetrics, health_servicer: health.HealthServicer, *, metrics_listen: str,
              health_listen: str, what: str) -> OperationsEndpoints:
        """Open the ports configured (empty: none); ConfigError when one cannot be had."""
        check_listen(metrics_listen=metrics_listen, health_listen=health_listen, what=what)
        endpoints = cls()
        try:
            if health_listen:
                endpoints._probe_server = grpc.server(futures.ThreadPoolExecutor(
                    max_workers=PROBE_WORKERS, thread_name_prefix="probe"), maximum_concurrent_rpcs=PROBE_WORKERS * 4)
                health_pb2_grpc.add_HealthServicer_to_server(health_servicer, endpoints._probe_server)
                try:
                    endpoints.health_port = endpoints._probe_server.add_insecure_port(health_listen)
                except RuntimeError:
                    endpoints.health_port = 0
                if not endpoints.health_port:
                    raise ConfigError(f"health_listen: cannot listen on {health_listen!r}: address in use or invalid")
                endpoints._probe_server.start()
            if metrics_listen:
                host, port = host_port(metrics_listen, "metrics_listen")
                try:
                    endpoints._metrics_server, _ = start_http_server(port, addr=host, registry=metrics.registry)
                except OSError as error:
                    raise ConfigError(f"metrics_listen: cannot listen on {metrics_listen!r} ({error.strerror})") \
                        from None
                endpoints.metrics_port = endpoints._metrics_server.server_port
        except BaseException:
            endpoints.close()
            raise
        if endpoints.metrics_port or endpoints.health_port:
            log.info("%s: metrics on port %s, plaintext health on port %s", what, endpoints.metrics_port or "-",
                     endpoints.health_port or "-")
        return endpoints

    def close(self) -> None:
        """Stop serving metrics and probes."""
        if self._probe_server is not None:
            self._probe_server.stop(None)
            self._probe_server = None
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
