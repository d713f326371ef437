"""Start ``dsbroker`` servers as real processes on free loopback ports, and stop them with SIGTERM.

Used by the demo, the end-to-end tests and the benchmark.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

STARTUP_SECONDS = 30.0


class ServerProcess:
    """A ``dsbroker`` server in a child process, ready (health SERVING) once constructed."""

    def __init__(self, args: list[str], *, name: str, log_path: Path | None = None) -> None:
        self.name = name
        self._scratch = tempfile.TemporaryDirectory(prefix=f"dsbroker-{name}-")
        port_file = Path(self._scratch.name) / "port"
        self.log_path = log_path or Path(self._scratch.name) / "server.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "broker.cli.main", *args, "--listen", "127.0.0.1:0", "--port-file", str(port_file)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.port = self._wait_for_port(port_file)
        self.target = f"127.0.0.1:{self.port}"
        self._wait_until_serving()

    def _wait_for_port(self, port_file: Path) -> int:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}:\n"
                                   + self.log_path.read_text(errors="replace")[-2000:])
            if port_file.exists() and port_file.read_text().strip():
                return int(port_file.read_text())
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start within {STARTUP_SECONDS:.0f}s; see {self.log_path}")

    def _wait_until_serving(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = stub.Check(health_pb2.HealthCheckRequest(), timeout=STARTUP_SECONDS, wait_for_ready=True)
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

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()
