"""The broker's view of the owners' catalog: fetched from the sandbox, kept briefly, never values."""

from __future__ import annotations

import threading
import time

from dsbroker.errors import CatalogUnknownDataset, DsbrokerError, shown
from broker.query.sandbox_client import SandboxClient
from dsbroker.v1 import catalog_pb2 as pb

CATALOG_SECONDS = 60.0
DEFAULT_DIALECT = "duckdb"


class Catalog:
    """The datasets the sandbox publishes, refreshed at most every ``ttl`` seconds."""

    def __init__(self, sandbox: SandboxClient, *, ttl: float = CATALOG_SECONDS) -> None:
        self.sandbox = sandbox
        self.ttl = ttl
        self._datasets: dict[str, pb.Dataset] = {}
        self._fetched = float("-inf")
        self._lock = threading.Lock()

    def datasets(self) -> list[pb.Dataset]:
        """Every published dataset, ordered by name."""
        with self._lock:
            if time.monotonic() - self._fetched > self.ttl:
                self._datasets = {d.name: d for d in self.sandbox.list_datasets()}
                self._fetched = time.monotonic()
            return [self._datasets[name] for name in sorted(self._datasets)]

    def column_types(self) -> dict[str, dict[str, str]] | None:
        """The engine type of every published column, per dataset; None when the sandbox cannot be asked.

        The guard checks filter literals and measures against them before a query reaches the sandbox,
        which checks them again with its own."""
        try:
            datasets = self.datasets()
        except DsbrokerError:
            return None
        return {dataset.name: {column.name: column.type for column in dataset.columns} for dataset in datasets}

    def engine_dialect(self, dataset: str) -> str:
        """The SQL dialect of the engine that serves ``dataset``, as its sandbox publishes it: what the guard
        writes the cell query in (the sandbox runs only the SQL its own guard writes, byte for byte). DuckDB's
        when the sandbox does not say or cannot be asked (it then refuses a plan in another dialect)."""
        try:
            datasets = self.datasets()
        except DsbrokerError:
            return DEFAULT_DIALECT
        described = next((d for d in datasets if d.name == dataset), None)
        return described.engine_dialect if described is not None and described.engine_dialect else DEFAULT_DIALECT

    def dataset(self, name: str) -> pb.Dataset:
        """One dataset's description; NOT_FOUND when no sandbox publishes it."""
        for dataset in self.datasets():
            if dataset.name == name:
                return dataset
        raise CatalogUnknownDataset(f"no dataset {shown(name)} in the catalog", table=name)
