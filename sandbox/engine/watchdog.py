"""One thread that interrupts queries whose deadline has passed (instead of a timer thread per query)."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Callable


class Watchdog:
    """Calls a query's ``interrupt`` once its deadline passes, unless it was disarmed first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="query-watchdog", daemon=True)
        self._thread.start()

    def arm(self, timeout_s: float, interrupt: Callable[[], None]) -> int:
        """Schedule ``interrupt`` after ``timeout_s``; returns a token for :meth:`disarm`."""
        token = next(self._ids)
        with self._wake:
            self._armed[token] = interrupt
            entry = (time.monotonic() + timeout_s, token)
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:  # the thread sleeps until the earliest deadline: wake it only for a new one
                self._wake.notify()
        return token

    def disarm(self, token: int) -> bool:
        """Cancel the interrupt; False when it already fired."""
        with self._wake:
            return self._armed.pop(token, None) is not None

    def close(self) -> None:
        """Stop the thread; pending interrupts are dropped."""
        with self._wake:
            self._closed = True
            self._armed.clear()
            self._wake.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                deadline, token = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                heapq.heappop(self._heap)
                interrupt = self._armed.pop(token, None)
            if interrupt is not None:
                interrupt()
