"""Refused calls, recorded one by one up to a cap per client each second, and counted past it.

Every refusal the call conventions, authentication and the per-caller limit make is written to the
access log, and each record is flushed to disk before the refusal leaves. Without a cap one client
could make the broker flush a record for every call it sends (523 a second from one certificate, all
with forged tokens), and a refusal is known before the token verifies only by what the transport
tells: the client certificate, or the peer address without mutual TLS. That is the key here.

Up to ``per_second`` refusals a second per key are recorded one by one, as before. Past that, until
the second ends, the client's refused calls get RESOURCE_EXHAUSTED ``TOO_MANY_FAILED_CALLS`` (with a
QuotaFailure naming the key) instead of their own reason, and are counted: when the second is over
(at the client's next refusal, at the next sweep, or when the broker stops) one record per event
holds how many there were, with their reasons and methods. Every refusal is accounted for in the
log, only not each in a record of its own. Calls that verify are never held up by the cap.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from broker.access_log.log import AccessLog, AccessRecord
from dsbroker.errors import AccessLogError, QuotaError

log = logging.getLogger(__name__)

REASON = "TOO_MANY_FAILED_CALLS"
SWEEP_SECONDS = 1.0


@dataclass
class _Tally:
    """The refusals of one event counted, not recorded, in one client's second."""

    refused: int = 0
    reasons: Counter = field(default_factory=Counter)
    methods: Counter = field(default_factory=Counter)
    client: str = ""
    first: float = 0.0
    last: float = 0.0


@dataclass
class _Second:
    """One client's refusals in one second: how many were recorded, and the tallies past the cap."""

    index: int
    recorded: int = 0
    tallies: dict[str, _Tally] = field(default_factory=dict)


class RefusalCap:
    """Writes refusal records for the access log, at most ``per_second`` a second per client key."""

    def __init__(self, access_log: AccessLog, *, per_second: int, clock: Callable[[], float] = time.time) -> None:
        """``clock`` gives seconds since the epoch (tests pass one they move); a second is one whole
        second of it."""
        self.access_log = access_log
        self.per_second = per_second
        self.clock = clock
        self._seconds: dict[str, _Second] = {}
        self._unwritten: list[tuple[str, _Second]] = []  # counts the log refused once, written at the next flush
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="refusal-cap", daemon=True)
        self._sweeper.start()

    def record(self, key: str, record: AccessRecord) -> None:
        """Record ``record`` (a refusal of the client ``key``) or, past the cap, count it and raise the
        QuotaError that answers the call instead."""
        now = self.clock()
        with self._lock:
            current = self._seconds.get(key)
            ended = None
            if current is None or current.index != int(now):
                ended = current
                current = self._seconds[key] = _Second(int(now))
            over = current.recorded >= self.per_second
            if over:
                tally = current.tallies.setdefault(record.event, _Tally(first=now))
                tally.refused += 1
                tally.reasons[record.reason] += 1
                tally.methods[str(record.detail.get("method", ""))] += 1
                tally.client, tally.last = record.client, now
            else:
                current.recorded += 1
        if ended is not None:
            self._write(key, ended)
        if over:
            raise QuotaError(f"more than {self.per_second} refused calls a second from this client; until the "
                             "second is over its refused calls are counted, not recorded one by one",
                             reason=REASON, subject=f"clients/{key}")
        self.access_log.append(dataclasses.replace(record, detail={**record.detail, "caller": key}))

    def flush(self, *, everything: bool = False) -> None:
        """Write the counts of every second that is over (with ``everything``, of the current one too)."""
        now = int(self.clock())
        with self._lock:
            ended = [(key, second) for key, second in self._seconds.items() if everything or second.index < now]
            for key, _ in ended:
                del self._seconds[key]
            ended += self._unwritten
            self._unwritten = []
        failed: AccessLogError | None = None
        for key, second in ended:
            try:
                self._write(key, second)
            except AccessLogError as error:  # kept in _unwritten; the others are still written
                failed = error
        if failed is not None:
            raise failed

    def close(self) -> None:
        """Stop sweeping and write every count still held (before the access log closes)."""
        self._closed.set()
        self._sweeper.join()
        self.flush(everything=True)

    def _write(self, key: str, second: _Second) -> None:
        """Write a second's counts; if the log refuses, keep them for the next flush and say so."""
        while second.tallies:
            event, tally = next(iter(second.tallies.items()))
            try:
                self._append_tally(key, event, tally)
            except AccessLogError:
                with self._lock:
                    self._unwritten.append((key, second))
                raise
            del second.tallies[event]

    def _append_tally(self, key: str, event: str, tally: _Tally) -> None:
        self.access_log.append(AccessRecord(
            event=event, decision="deny", reason=REASON, client=tally.client,
            detail={"caller": key, "refused": tally.refused, "reasons": dict(tally.reasons),
                    "methods": dict(tally.methods), "first": _stamp(tally.first), "last": _stamp(tally.last)}))

    def _sweep(self) -> None:
        while not self._closed.wait(SWEEP_SECONDS):
            try:
                self.flush()
            except AccessLogError:  # kept in _unwritten, tried again at the next sweep
                log.warning("the access log refused a count of refused calls; trying again")


def _stamp(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="microseconds")
