"""Spark's own servers on this machine, from the pyspark package (its ``bin/spark-submit`` and ``spark-class``),
for the tests and the bench: a Spark Connect server, and a standalone cluster of one master and one worker.

Each runs as a child process in a process group of its own, bound to 127.0.0.1, is waited for until it listens
(a deadline, never a fixed sleep), and is stopped with its group when the ``with`` block ends, also when the
block fails. Spark Connect takes no port 0, so a free port is picked first (:func:`free_port`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Mapping

CONNECT_SERVER = "org.apache.spark.sql.connect.service.SparkConnectServer"
READY_S = 120.0  # a JVM's start on a busy 2-core machine takes tens of seconds
STOP_S = 30.0


def spark_home() -> Path:
    """The pyspark package's directory, which holds Spark's jars and scripts."""
    import pyspark

    return Path(pyspark.__file__).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (for servers that cannot bind port 0 themselves)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def connect_server(settings: Mapping[str, str], *, directory: Path, master: str = "local[2]",
                   port: int | None = None) -> Iterator[str]:
    """A Spark Connect server on 127.0.0.1 with ``settings`` (its operator's ``--conf``s), its warehouse and log
    in ``directory``; yields its URL (sc://127.0.0.1:port)."""
    port = port or free_port()
    confs = {"spark.connect.grpc.binding.address": "127.0.0.1", "spark.connect.grpc.binding.port": str(port),
             "spark.sql.warehouse.dir": str(directory / "warehouse"), **settings}
    command = [str(spark_home() / "bin" / "spark-submit"), "--class", CONNECT_SERVER, "--name",
               "dsbroker Spark Connect", "--master", master]
    for key, value in confs.items():
        command += ["--conf", f"{key}={value}"]
    with _process(command + ["spark-internal"], directory / "connect-server.log", directory, port):
        yield f"sc://127.0.0.1:{port}"


@contextlib.contextmanager
def standalone_cluster(directory: Path, *, cores: int, memory: str, port: int | None = None) -> Iterator[str]:
    """A standalone Spark cluster on 127.0.0.1: a master on ``port`` and one worker offering ``cores`` and
    ``memory`` (e.g. "6g"); logs in ``directory``; yields the master's URL (spark://127.0.0.1:port, a free
    port unless ``port`` is given: the master would quietly take the next port if 7077 were taken)."""
    port = port or free_port()
    master_url = f"spark://127.0.0.1:{port}"
    spark_class = str(spark_home() / "bin" / "spark-class")
    master = [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
              "--webui-port", str(free_port())]
    worker_port = free_port()
    worker = [spark_class, "org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1",
              "--port", str(worker_port), "--webui-port", str(free_port()), "--cores", str(cores), "--memory",
              memory, "--work-dir", str(directory / "work")]
    with _process(master, directory / "master.log", directory, port), \
            _process(worker, directory / "worker.log", directory, worker_port):
        yield master_url


@contextlib.contextmanager
def _process(command: list[str], log: Path, directory: Path, port: int) -> Iterator[subprocess.Popen]:
    """``command`` as a child in a process group of its own, until it listens on ``port``; stopped after."""
    directory.mkdir(parents=True, exist_ok=True)
    # SPARK_LOCAL_IP: the servers and the executors they start bind to loopback, never to the host's address.
    env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOG_DIR": str(directory),
           "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=directory, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_listening(process, Path(command[0]).name, port, log)
        yield process
    finally:
        _stop(process)


def _wait_listening(process: subprocess.Popen, name: str, port: int, log: Path) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited ({process.returncode}) before it listened on {port}: {_tail(log)}")
        with socket.socket() as probe:
            probe.settimeout(1.0)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"nothing listened on {port} within {READY_S:.0f} s: {_tail(log)}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the child's own process group, SIGKILL when it has not exited after :data:`STOP_S`."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_S)


def _tail(log: Path) -> str:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.exists() else []
    return " | ".join(lines[-5:]) or "no output"
