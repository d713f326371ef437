"""Start ``dsbroker`` servers as real processes on free loopback ports, and stop them with SIGTERM.

Used by the demo, the end-to-end tests and the benchmark.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.dev.keys import (DEV_AUDIENCE, DEV_ISSUER, IDP_KEY_ID, KeyLayout, broker_settings, load_private_key,
                         sandbox_settings, to_toml)
from dsbroker.private_files import open_private, write_private
from dsbroker.identity.tls import ClientTls, open_channel, thumbprint
from dsbroker.identity.tokens import issue_token
from sandbox.demo.data import DEMO_DATASETS

# What a sandbox serves: its DuckDB file, or the settings of another engine (engine, postgres_dsn or spark_tables, ...).
DataSource = Path | dict[str, object]
# A sandbox on Spark starts a JVM and a session first: 15 s alone on 2 cores, 35 s on a busy machine, and the
# demo's three on Spark start at once (each counts from its own launch).
STARTUP_SECONDS = 180.0


class ServerProcess:
    """A ``dsbroker`` server in a child process, ready (health SERVING) once constructed, or once
    :meth:`wait_ready` returns when constructed with ``wait=False``."""

    def __init__(self, args: list[str], *, name: str, tls: ClientTls | None, log_path: Path | None = None,
                 module: str = "broker.cli.main", wait: bool = True) -> None:
        """``tls`` is how to reach the server for its health check (None: it serves plaintext); ``module``
        is what ``python -m`` runs with ``args`` (the benchmark runs a broker of its own); ``wait=False``
        returns once the process is launched, so that several start at once (then call :meth:`wait_ready`)."""
        self.name = name
        self.tls = tls
        self._scratch = tempfile.TemporaryDirectory(prefix=f"dsbroker-{name}-")
        self._port_file = Path(self._scratch.name) / "port"
        self.log_path = log_path or Path(self._scratch.name) / "server.log"
        self._log = open_private(self.log_path, "ab")
        self._deadline = time.monotonic() + STARTUP_SECONDS
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args, "--listen", "127.0.0.1:0", "--port-file", str(self._port_file)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.port = 0
        self.target = ""
        if wait:
            self.wait_ready()

    def wait_ready(self) -> ServerProcess:
        """Wait until the server listens and reports SERVING, at most :data:`STARTUP_SECONDS` from its launch."""
        self.port = self._wait_for_port()
        self.target = f"127.0.0.1:{self.port}"
        self._wait_until_serving()
        return self

    def _wait_for_port(self) -> int:
        while time.monotonic() < self._deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}:\n"
                                   + self.log_path.read_text(errors="replace")[-2000:])
            if self._port_file.exists() and self._port_file.read_text().strip():
                return int(self._port_file.read_text())
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start within {STARTUP_SECONDS:.0f}s; see {self.log_path}")

    def _wait_until_serving(self) -> None:
        with open_channel(self.target, tls=self.tls, options=[]) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = stub.Check(health_pb2.HealthCheckRequest(), wait_for_ready=True,
                                  timeout=max(1.0, self._deadline - time.monotonic()))
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError(f"{self.name} reports {response.status}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait for a graceful exit (SIGKILL past ``timeout``); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        self._scratch.cleanup()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()


@contextlib.contextmanager
def development_servers(*, data: DataSource, policies: Path, state: Path, layout: KeyLayout, client: str,
                        access_log: Path | None = None, token_binding: str = "subject",
                        partitions: dict[str, DataSource] | None = None,
                        datasets: tuple[str, ...] = DEMO_DATASETS, sandbox_options: dict | None = None,
                        broker_options: dict | None = None):
    """A sandbox and a broker as processes, over mutual TLS with the development keys in ``layout``.

    Yields (sandbox, broker, tls) where ``tls`` reaches the broker as client certificate ``client``.
    Their TOML configurations and logs, the access log (unless ``access_log`` says otherwise), its
    key (``access-log.key`` and ``.pub``, made first so that every sandbox pins it and witnesses the
    log's checkpoints) and the sandbox's execution, policy and released-cell ledgers
    (``sandbox-executions.sqlite``, ``sandbox-policies.sqlite``, ``sandbox-released.sqlite``) are written under
    ``state``. ``data`` is the sandbox's DuckDB file, or the settings of another engine (``engine``,
    ``postgres_dsn`` or ``spark_tables``, ``catalog``, ...). ``partitions`` maps sandbox ids to data files (or
    engine settings, as ``data``): a sandbox each (ledgers ``<id>-...``), which the broker knows as partitions.
    The sandboxes start at once, and the broker once they all serve. The sandboxes hold tokens to the forwarded
    certificates with the same ``token_binding`` as the broker. Every sandbox serves ``datasets`` (by default the
    demo's, without its company names). ``sandbox_options`` are further settings of the (first) sandbox,
    ``broker_options`` of the broker.
    """
    from dsbroker.records.checkpoints import load_or_create_signing_key, public_key_path

    state.mkdir(parents=True, exist_ok=True)
    log_key = state / "access-log.key"
    load_or_create_signing_key(log_key)
    sandbox_tls = ClientTls(str(layout.owner_ca), str(layout.broker_to_sandbox_cert), str(layout.broker_to_sandbox_key))
    broker_tls = ClientTls(str(layout.platform_ca), str(layout.client_cert(client)), str(layout.client_key(client)))
    with contextlib.ExitStack() as stack:
        def start_sandbox(name: str, source: DataSource, ledger: Path, **extra) -> ServerProcess:
            config = state / f"{name}.toml"
            # Another engine has no data file to keep the ledgers beside: they go to a state directory of its own.
            where = {"data": str(source)} if isinstance(source, Path) else {"state_dir": str(state / name), **source}
            write_private(config, to_toml({**where, "datasets": list(datasets),
                                           "execution_ledger": str(ledger),
                                           "policy_ledger": str(state / f"{name}-policies.sqlite"),
                                           "released_cells": str(state / f"{name}-released.sqlite"),
                                           "token_binding": token_binding, **extra,
                                           "broker_log_keys": [str(public_key_path(log_key))],
                                           **sandbox_settings(layout)}))
            return stack.enter_context(ServerProcess(["sandbox", "serve", "--config", str(config)], name=name,
                                                     tls=sandbox_tls, log_path=state / f"{name}.log", wait=False))

        # The sandboxes start at once (a Spark one takes seconds to start its JVM), the broker once they serve.
        sandbox = start_sandbox("sandbox", data, state / "sandbox-executions.sqlite", **(sandbox_options or {}))
        parts = {sandbox_id: start_sandbox(sandbox_id, path, state / f"{sandbox_id}-executions.sqlite",
                                           sandbox_id=sandbox_id)
                 for sandbox_id, path in (partitions or {}).items()}
        for started in (sandbox, *parts.values()):
            started.wait_ready()
        broker_config = state / "broker.toml"
        write_private(broker_config, to_toml({
            "policies": str(policies), "access_log": str(access_log or state / "access-log.sqlite"),
            "access_log_key": str(log_key),
            "store": str(state / "broker-state.sqlite"), "sandbox": sandbox.target,
            "partitions": [f"{sandbox_id}={part.target}" for sandbox_id, part in parts.items()],
            **broker_settings(layout, token_binding=token_binding), **(broker_options or {})}))
        broker = stack.enter_context(ServerProcess(["serve", "--config", str(broker_config)], name="broker",
                                                   tls=broker_tls, log_path=state / "broker.log"))
        yield sandbox, broker, broker_tls


def development_token(layout: KeyLayout, *, subject: str, department: str, district: str,
                      roles: tuple[str, ...] = ("requester",), ttl: dt.timedelta = dt.timedelta(hours=1),
                      certificate: Path | None = None) -> str:
    """A token from the development identity provider in ``layout``; with ``certificate`` (a PEM file), bound
    to that client certificate (RFC 8705 cnf x5t#S256)."""
    bound = thumbprint(x509.load_pem_x509_certificate(certificate.read_bytes())) if certificate else None
    return issue_token(load_private_key(layout.idp_key), key_id=IDP_KEY_ID, issuer=DEV_ISSUER,
                       audience=DEV_AUDIENCE, subject=subject, department=department, district=district,
                       roles=roles, ttl=ttl, certificate_thumbprint=bound)
