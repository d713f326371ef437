"""Literals as the guard reads them: numbers within bounds, and dates in the one form every engine reads.

A literal that the engine cannot read fails only where the engine evaluates it, and DuckDB evaluates
a cast of a literal row by row, after the other conditions: ``WHERE street_code = 'X' AND period =
'20250101'`` failed if and only if some row passed ``street_code = 'X'``. So a date is accepted only in
the ISO form DuckDB and PostgreSQL both read (``2025-01-01``, and for timestamps ``2025-01-01 12:30`` or
``2025-01-01 12:30:05.123456``), checked here, never by a looser parser. A number may have at most 60
characters, in ASCII digits, and lie within ±1e38 (or be zero, or no nearer zero than 1e-38): its size is read from its
exponent before it is ever built, so ``1e9999999`` costs nothing to refuse.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re

MAX_NUMBER_CHARACTERS = 60
MAX_EXPONENT = 38
# ASCII digits only, and the whole text (fullmatch): Python's \d takes any Unicode digit ('２０２５', which
# int() reads as 2025) and $ matches before a final newline, and DuckDB reads neither.
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_TIMESTAMP = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
                        r"(?: ([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?)?")
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def read_date(text: str) -> dt.date | None:
    """``text`` as a date if it is one in the form ``YYYY-MM-DD``; None otherwise."""
    match = _DATE.fullmatch(text)
    if match is None:
        return None
    try:
        return dt.date(*(int(part) for part in match.groups()))
    except ValueError:
        return None


def read_timestamp(text: str) -> dt.datetime | None:
    """``text`` as a timestamp in the form ``YYYY-MM-DD[ HH:MM[:SS[.ffffff]]]``; None otherwise."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        return dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                           int((fraction or "0").ljust(6, "0")))
    except ValueError:
        return None


def number_in_range(text: str) -> bool:
    """Whether ``text`` is a finite number of at most 60 characters within the bounds above."""
    if len(text) > MAX_NUMBER_CHARACTERS or not _NUMBER.fullmatch(text):
        return False  # Decimal reads '１２' and '1_000' too; the engine may not
    try:
        value = decimal.Decimal(text)  # cheap whatever the exponent: nothing is expanded
    except decimal.InvalidOperation:
        return False
    return value.is_finite() and (value.is_zero() or -MAX_EXPONENT <= value.adjusted() < MAX_EXPONENT)
