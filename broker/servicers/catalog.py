"""CatalogService: the owners' catalog, for any authenticated caller (metadata only)."""

from __future__ import annotations

import grpc

from dsbroker.identity.auth import require_principal
from dsbroker.rpc.pagination import Pages
from broker.catalog import Catalog
from broker.v1 import catalog_service_pb2 as pb
from broker.v1 import catalog_service_pb2_grpc as pb_grpc

PAGES = Pages("datasets", (str,), default_size=100, max_size=1000)  # after the name, in name order


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    """Lists and describes datasets."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def ListDatasets(self, request: pb.ListDatasetsRequest, context: grpc.ServicerContext) -> pb.ListDatasetsResponse:
        require_principal()
        page = PAGES.read(request.page_size, request.page_token)
        datasets = [d for d in self.catalog.datasets() if page.after is None or d.name > page.after[0]]
        listed, token = page.cut(datasets[:page.limit], key=lambda dataset: (dataset.name,))
        return pb.ListDatasetsResponse(datasets=listed, next_page_token=token)

    def GetDataset(self, request: pb.GetDatasetRequest, context: grpc.ServicerContext) -> pb.GetDatasetResponse:
        require_principal()
        return pb.GetDatasetResponse(dataset=self.catalog.dataset(request.name))
