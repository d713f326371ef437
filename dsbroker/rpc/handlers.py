"""One helper shared by the server interceptors: swap a unary handler's behaviour, keeping its (de)serialisers."""

from __future__ import annotations

from typing import Any, Callable

import grpc


def with_unary_behavior(handler: grpc.RpcMethodHandler,
                        behavior: Callable[[Any, grpc.ServicerContext], Any]) -> grpc.RpcMethodHandler:
    """A unary-unary handler that runs ``behavior`` in place of ``handler.unary_unary``."""
    return grpc.unary_unary_rpc_method_handler(behavior, request_deserializer=handler.request_deserializer,
                                               response_serializer=handler.response_serializer)
