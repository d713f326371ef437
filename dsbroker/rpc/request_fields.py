"""The fields a caller sets, checked where they come in: one rule for each kind of field, in one place.

Every servicer, the broker's and the sandbox's, reads its request through these, so that a field no
handler expected (free text of 40 MB, an enum number no proto declares, a page token this server
never issued, a resource name whose digits are not ASCII, a Timestamp outside the range it may hold)
is INVALID_ARGUMENT with a ``google.rpc.BadRequest`` naming the field: never INTERNAL, never stored
whole, never echoed. Messages name the field and the rule, never the value.

- **Free text** that is stored or sent back (reasons, comments, purposes, example queries) is held to
  :data:`MAX_TEXT` characters; a few structured texts (a policy document, an owner's statement) have a
  bound of their own, given where they are read, and the same check.
- **Page sizes** must not be negative; 0 is the default, and anything above the maximum is the maximum.
- **Page tokens** are opaque to callers: the base64url of a short JSON list this server wrote. One that
  does not decode to the list of types the method issues, or holds an integer outside 0..2**63-1, was
  never issued here.
- **Resource names** (AIP-122) are ``collection/id``, the id in lower-case letters, digits and dashes,
  or ``collection/number`` with ASCII digits only and at most 2**63-1.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from typing import Any, Iterable

from google.protobuf.descriptor import EnumDescriptor

from dsbroker.errors import RequestFieldError

MAX_TEXT = 4000  # characters: the bound of every free text a caller sets
MAX_PAGE_TOKEN_CHARS = 1024
MAX_TOKEN_TEXT = 256  # characters of a text inside a page token (an id, a time)
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


def page_size(value: int, *, default: int, maximum: int) -> int:
    """The page size a caller asked for: 0 is ``default``, more than ``maximum`` is ``maximum``."""
    if value < 0:
        raise RequestFieldError("page_size must not be negative", field="page_size", reason="PAGE_SIZE_INVALID")
    return min(value or default, maximum)


def page_token(*values: str | int) -> str:
    """The next page's token: where the page ended (texts and non-negative integers), for this server only."""
    return base64.urlsafe_b64encode(json.dumps(list(values), separators=(",", ":")).encode()).decode()


def read_page_token(token: str, *types: type) -> tuple | None:
    """The values :func:`page_token` wrote into ``token``, of ``types`` in order (None for an empty token);
    PAGE_TOKEN_INVALID for anything this server did not issue."""
    if not token:
        return None
    try:
        if len(token) > MAX_PAGE_TOKEN_CHARS:
            raise ValueError("too long")
        values = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError("not the list this method issues")
        for value, kind in zip(values, types, strict=True):
            if kind is int and not (type(value) is int and 0 <= value <= INT64_MAX):
                raise ValueError("not a position")
            if kind is str and not (type(value) is str and len(value) <= MAX_TOKEN_TEXT):
                raise ValueError("not a name")
        return tuple(values)
    except (ValueError, UnicodeError, binascii.Error, RecursionError):
        raise RequestFieldError("page_token is not one this server issued", field="page_token",
                                reason="PAGE_TOKEN_INVALID") from None


def resource_id(name: str, collection: str, field: str = "name") -> str:
    """The id in ``{collection}/{id}`` (a bare id is accepted too); RESOURCE_NAME_INVALID when malformed."""
    resource = name.removeprefix(f"{collection}/")
    if not _RESOURCE_ID.fullmatch(resource):
        raise _name_error(f"{collection}/{{id}}", field)
    return resource


def resource_number(name: str, collection: str, field: str = "name") -> int:
    """The number in ``{collection}/{number}`` (1 to 2**63-1, ASCII digits); RESOURCE_NAME_INVALID otherwise."""
    number = name.removeprefix(f"{collection}/")
    if not _RESOURCE_NUMBER.fullmatch(number) or int(number) > INT64_MAX:
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
