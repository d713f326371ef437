"""The fields a caller sets, checked where they come in: one rule for each kind of field, in one place.

Every servicer, the broker's and the sandbox's, reads its request through these, so that a field no
handler expected (free text of 40 MB, an enum number no proto declares, a page token this server
never issued, a resource name whose digits are not ASCII, a Timestamp outside the range it may hold)
is INVALID_ARGUMENT with a ``google.rpc.BadRequest`` naming the field: never INTERNAL, never stored
whole, never echoed. Messages name the field and the rule, never the value.

- **Free text** that is stored or sent back (reasons, comments, purposes, example queries) is held to
  :data:`MAX_TEXT` characters; a few structured texts (a policy document, an owner's statement) have a
  bound of their own, given where they are read, and the same check.
- **Page sizes and page tokens** are read by :mod:`dsbroker.rpc.pagination`, one way for every List method.
- **Resource names** (AIP-122) are ``collection/id``, the id in lower-case letters, digits and dashes,
  or ``collection/number`` with ASCII digits only and at most 2**63-1: one name per resource, so a bare id
  is not one (the SDK and the CLI take the bare id a department writes and build the name).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Iterable

from google.protobuf.descriptor import EnumDescriptor

from dsbroker.errors import RequestFieldError

MAX_TEXT = 4000  # characters: the bound of every free text a caller sets
INT64_MAX = 2 ** 63 - 1
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
TIMESTAMP_MIN_SECONDS, TIMESTAMP_MAX_SECONDS = -62_135_596_800, 253_402_300_799
_RESOURCE_ID = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
_RESOURCE_NUMBER = re.compile(r"[1-9][0-9]{0,18}")  # ASCII only: str.isdigit() takes "²" too


def bounded_text(value: str, field: str, *, required: bool = False, limit: int = MAX_TEXT) -> str:
    """``value`` with surrounding white space removed, held to ``limit`` characters (FIELD_TOO_LONG) and,
    when ``required``, not blank (FIELD_REQUIRED)."""
    if len(value) > limit:
        raise RequestFieldError(f"{field} is longer than {limit} characters", field=field, reason="FIELD_TOO_LONG")
    text = value.strip()
    if required and not text:
        raise RequestFieldError(f"{field} is required", field=field, reason="FIELD_REQUIRED")
    return text


def bounded_list(values: Iterable[str], field: str, *, most: int, limit: int = MAX_TEXT) -> list[str]:
    """Each text of a repeated field held as :func:`bounded_text` holds one, and at most ``most`` of them."""
    values = list(values)
    if len(values) > most:
        raise RequestFieldError(f"{field} holds at most {most} values", field=field)
    return [bounded_text(value, f"{field}[{index}]", limit=limit) for index, value in enumerate(values)]


def resource_id(name: str, collection: str, field: str = "name") -> str:
    """The id in ``{collection}/{id}``; RESOURCE_NAME_INVALID when malformed (a bare id too)."""
    resource = name.removeprefix(f"{collection}/")
    if resource == name or not _RESOURCE_ID.fullmatch(resource):
        raise _name_error(f"{collection}/{{id}}", field)
    return resource


def resource_number(name: str, collection: str, field: str = "name") -> int:
    """The number in ``{collection}/{number}`` (1 to 2**63-1, ASCII digits); RESOURCE_NAME_INVALID otherwise."""
    number = name.removeprefix(f"{collection}/")
    if number == name or not _RESOURCE_NUMBER.fullmatch(number) or int(number) > INT64_MAX:
        raise _name_error(f"{collection}/{{number}}", field)
    return int(number)


def enum_value(value: int, enum: EnumDescriptor, field: str) -> int:
    """``value`` if ``enum`` declares it (proto3 keeps numbers it does not know); ENUM_VALUE_INVALID otherwise."""
    if value not in enum.values_by_number:
        raise RequestFieldError(f"{field} is not a value of {enum.name}", field=field, reason="ENUM_VALUE_INVALID")
    return value


def timestamp_field(request: Any, field: str) -> dt.datetime | None:
    """The UTC time in ``request.<field>`` (None when unset); TIMESTAMP_INVALID outside what a Timestamp may
    hold (years 1 to 9999, nanos 0 to 999,999,999), which Python's datetime could not hold either."""
    if not request.HasField(field):
        return None
    stamp = getattr(request, field)
    if not (TIMESTAMP_MIN_SECONDS <= stamp.seconds <= TIMESTAMP_MAX_SECONDS and 0 <= stamp.nanos <= 999_999_999):
        raise RequestFieldError(f"{field} must be between 0001-01-01 and 9999-12-31 with nanos from 0 to 999999999",
                                field=field, reason="TIMESTAMP_INVALID")
    moment: dt.datetime = stamp.ToDatetime(tzinfo=dt.timezone.utc)
    return moment


def _name_error(form: str, field: str) -> RequestFieldError:
    return RequestFieldError(f"{field} must be {form}", field=field, reason="RESOURCE_NAME_INVALID")
