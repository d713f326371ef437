"""CatalogService: the owners' catalog, for any authenticated caller (metadata only)."""

from __future__ import annotations

import grpc

from dsbroker.identity.auth import require_principal
from broker.catalog import Catalog
from broker.v1 import catalog_service_pb2 as pb
from broker.v1 import catalog_service_pb2_grpc as pb_grpc


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    """Lists and describes datasets."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def ListDatasets(self, request: pb.ListDatasetsRequest, context: grpc.ServicerContext) -> pb.ListDatasetsResponse:
        require_principal()
        return pb.ListDatasetsResponse(datasets=self.catalog.datasets())

    def GetDataset(self, request: pb.GetDatasetRequest, context: grpc.ServicerContext) -> pb.GetDatasetResponse:
        require_principal()
        return pb.GetDatasetResponse(dataset=self.catalog.dataset(request.name))
