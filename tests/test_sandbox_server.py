"""The sandbox's start: it serves only the tables the owner names, and lists only those."""

from __future__ import annotations

import pytest

from dsbroker.errors import ConfigError
from broker.dev.keys import sandbox_settings
from sandbox.settings import SandboxSettings
from sandbox.demo.data import DEMO_DATASETS
from sandbox.server import start_sandbox
from sandbox.v1 import sandbox_service_pb2 as pb
from sandbox.v1 import sandbox_service_pb2_grpc as pb_grpc
from dsbroker.identity.tls import open_channel
from tests.conftest import shared_data
from tests.conftest import dev_keys, sandbox_client_tls


def listed(running) -> list[str]:
    with open_channel(f"127.0.0.1:{running.port}", tls=sandbox_client_tls(), options=[]) as channel:
        response = pb_grpc.SandboxServiceStub(channel).ListDatasets(pb.ListDatasetsRequest(), timeout=10)
    return [dataset.name for dataset in response.datasets]


def test_without_datasets_the_sandbox_refuses_to_start(demo_db):
    # It used to serve, and list, every table in the file: the company names in tax.taxpayers too.
    with pytest.raises(ConfigError, match="datasets"):
        start_sandbox(SandboxSettings(listen="127.0.0.1:0", **shared_data(demo_db), **sandbox_settings(dev_keys())))


def test_the_sandbox_serves_and_lists_only_the_tables_it_is_told_to(sandbox):
    assert sorted(listed(sandbox)) == sorted(DEMO_DATASETS) and "tax.taxpayers" not in DEMO_DATASETS


def test_the_catalog_lists_in_pages_in_name_order(sandbox):
    # Every List method pages one way (dsbroker/rpc/pagination.py); the broker reads every page.
    seen, token = [], ""
    with open_channel(f"127.0.0.1:{sandbox.port}", tls=sandbox_client_tls(), options=[]) as channel:
        stub = pb_grpc.SandboxServiceStub(channel)
        while True:
            page = stub.ListDatasets(pb.ListDatasetsRequest(page_size=1, page_token=token), timeout=10)
            assert len(page.datasets) == 1
            seen += [dataset.name for dataset in page.datasets]
            token = page.next_page_token
            if not token:
                break
    assert seen == sorted(DEMO_DATASETS) == listed(sandbox)
