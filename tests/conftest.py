"""Shared fixtures: one demo data file per run, real servers on port 0, tokens."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from broker.auth import development_token
from broker.client import BrokerClient
from broker.policy import load_policy
from broker.server import start_broker
from broker.settings import BrokerSettings, SandboxSettings
from sandbox.demo_data import make_demo_data
from sandbox.server import start_sandbox

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
GRANT = "xuanwu-fgw-2026-007"
XUANWU = "320102"


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


@pytest.fixture(scope="session")
def sandbox(demo_db):
    running = start_sandbox(SandboxSettings(listen="127.0.0.1:0", data=str(demo_db)))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def broker(sandbox, tmp_path_factory):
    log = tmp_path_factory.mktemp("state") / "access-log.sqlite"
    running = start_broker(BrokerSettings(listen="127.0.0.1:0", policies=str(POLICIES),
                                          sandbox=f"127.0.0.1:{sandbox.port}", access_log=str(log)))
    running.access_log_path = log  # tests read the log the broker writes
    yield running
    running.stop()


def token_for(department: str = "xuanwu-fgw", district: str = XUANWU, roles=("requester",)) -> str:
    return development_token(subject="analyst", department=department, district=district, roles=tuple(roles))


@pytest.fixture
def client(broker):
    with BrokerClient(f"127.0.0.1:{broker.port}", token=token_for()) as c:
        yield c
