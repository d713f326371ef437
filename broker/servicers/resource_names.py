"""Resource names (AIP-122) in and out: ``accessRequests/{id}``, ``policies/{id}``."""

from __future__ import annotations

import datetime as dt
import re

import grpc
from google.protobuf import timestamp_pb2

from broker.errors import DsbrokerError

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


def resource_id(name: str, collection: str) -> str:
    """The id in ``{collection}/{id}`` (a bare id is accepted too); INVALID_ARGUMENT when malformed."""
    resource = name.removeprefix(f"{collection}/")
    if not _ID.fullmatch(resource):
        raise DsbrokerError(f"name must be {collection}/{{id}}", reason="RESOURCE_NAME_INVALID",
                            code=grpc.StatusCode.INVALID_ARGUMENT, field="name")
    return resource


def timestamp(text: str) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp from a stored ISO 8601 time."""
    stamp = timestamp_pb2.Timestamp()
    if text:
        stamp.FromDatetime(dt.datetime.fromisoformat(text))
    return stamp
