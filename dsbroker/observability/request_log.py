"""One JSON line per call on stderr, through Python logging (logger ``dsbroker.requests``).

The line is written off the calling thread: the logger's handler only puts the record on a bounded
queue, and a listener thread formats and writes it (stdlib ``QueueHandler`` and ``QueueListener``), so a
slow stderr never holds a worker or a lock on the hot path. Past :data:`QUEUE_RECORDS` waiting lines,
new ones are dropped and counted (:func:`lines_dropped`) rather than letting memory grow.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import logging.handlers
import queue
import sys
import threading
from typing import Any

REQUEST_LOGGER = "dsbroker.requests"
QUEUE_RECORDS = 10_000
# The LogRecord attribute the call's fields travel in (``extra={FIELDS: {...}}``).
FIELDS = "dsbroker_fields"
_UNICODE_LINE_ENDS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})

request_log = logging.getLogger(REQUEST_LOGGER)
_installed = threading.Lock()
_listener: logging.handlers.QueueListener | None = None
_dropped = 0


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time (UTC, ISO 8601), level, logger, message, and its call's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (non-ASCII kept as it is)."""
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        line.update(getattr(record, FIELDS, None) or {})
        # json escapes the ASCII line ends, not U+2028, U+2029 or U+0085, which readers that split on Unicode
        # line ends (Python's splitlines, JavaScript) take for one: escaped, a line is one line for any reader.
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).translate(_UNICODE_LINE_ENDS)


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    """Puts records on a bounded queue; drops (and counts) one that finds it full."""

    def enqueue(self, record: logging.LogRecord) -> None:
        global _dropped
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            _dropped += 1  # an approximate count under contention is enough for a diagnostic


def install_request_log() -> None:
    """Write :data:`REQUEST_LOGGER`'s lines as JSON to stderr, once per process (later calls do nothing).

    The lines do not propagate to the root logger: its handlers (the CLI's text format) would print
    them a second time."""
    global _listener
    with _installed:
        if _listener is not None:
            return
        lines: queue.Queue[logging.LogRecord] = queue.Queue(QUEUE_RECORDS)
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(JsonFormatter())
        _listener = logging.handlers.QueueListener(lines, stderr)
        _listener.start()
        atexit.register(_listener.stop)
        request_log.addHandler(_DroppingQueueHandler(lines))
        request_log.setLevel(logging.INFO)
        request_log.propagate = False


def log_call(fields: dict[str, Any]) -> None:
    """Log one call's line with ``fields``; nothing until :func:`install_request_log` turned the log on."""
    if _listener is not None:
        request_log.info("call", extra={FIELDS: fields})


def lines_dropped() -> int:
    """Lines dropped because the queue was full, since the process started."""
    return _dropped
