"""Resource names and times on the way out: a stored time as a protobuf Timestamp.

Names and times on the way in are read by :mod:`dsbroker.rpc.request_fields`.
"""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2


def timestamp(text: str) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp from a stored ISO 8601 time."""
    stamp = timestamp_pb2.Timestamp()
    if text:
        stamp.FromDatetime(dt.datetime.fromisoformat(text))
    return stamp
