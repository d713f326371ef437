"""Resource names and times on the way out: each resource's one name (AIP-122), and a stored time as a
protobuf Timestamp.

Names and times on the way in are read by :mod:`dsbroker.rpc.request_fields`.
"""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2

from broker.workflow.policy_registry import POLICIES

ACCESS_RECORDS = "accessRecords"
ACCESS_REQUESTS = "accessRequests"


def policy_name(policy_id: str) -> str:
    """A policy's (grant's) resource name, ``policies/{id}``; empty for no policy."""
    return f"{POLICIES}/{policy_id}" if policy_id else ""


def access_request_name(request_id: str) -> str:
    """An access request's resource name, ``accessRequests/{id}``; empty for none."""
    return f"{ACCESS_REQUESTS}/{request_id}" if request_id else ""


def access_record_name(seq: int) -> str:
    """An access record's resource name, ``accessRecords/{seq}``."""
    return f"{ACCESS_RECORDS}/{seq}"


def timestamp(text: str) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp from a stored ISO 8601 time."""
    stamp = timestamp_pb2.Timestamp()
    if text:
        stamp.FromDatetime(dt.datetime.fromisoformat(text))
    return stamp
