"""Whether a server can do its job: its dependencies, and the health statuses they imply.

A server reports NOT_SERVING, overall and for each of its services, while any dependency it names
fails: the broker's access log (a query whose DECISION record cannot be written is refused, so a
broker that cannot write is no use to anyone), the sandbox's engine and ledgers. A dependency fails
when a call fails for a reason that blames it, and recovers with the next call that needed it and
succeeded; one with a ``recheck`` (the sandbox's engine) is also tried again when a probe asks and
it failed, at most every :data:`RECHECK_SECONDS`, so a sandbox that probes took out of service comes
back once its database does.

Transitions only touch the health servicer: a call that succeeds while everything is well costs a
dictionary look-up.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from grpc_health.v1 import health, health_pb2

from dsbroker.observability.call_facts import CallFacts

log = logging.getLogger(__name__)

RECHECK_SECONDS = 5.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class Dependency:
    """Something a server needs: the reasons of a failed call that blame it, the methods whose success
    shows it works again, and optionally a check that tries it directly (True: it works)."""

    name: str
    failing_reasons: frozenset[str]
    cleared_by: frozenset[str] = frozenset()
    recheck: Callable[[], bool] | None = None


class Readiness:
    """The dependencies of one server, and its health servicer's statuses for ``services`` and overall."""

    def __init__(self, health_servicer: health.HealthServicer, services: Iterable[str],
                 dependencies: Iterable[Dependency] = (), *, clock: Callable[[], float] = time.monotonic) -> None:
        self.health = health_servicer
        self.services = ("", *services)
        self.dependencies = {dependency.name: dependency for dependency in dependencies}
        self.clock = clock
        self._failing: dict[str, str] = {}  # dependency -> why
        self._rechecked: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def failing(self) -> dict[str, str]:
        """The dependencies that fail now, each with why."""
        return dict(self._failing)

    def fail(self, name: str, why: str) -> None:
        """Dependency ``name`` fails (``why`` is a reason, for the server's log)."""
        if name in self._failing:
            return
        with self._lock:
            if name in self._failing:
                return
            if not self._failing:  # under the lock: statuses are set in the order of the transitions
                self._set(NOT_SERVING)
            self._failing[name] = why
            self._rechecked[name] = self.clock()
        log.warning("%s fails (%s): health reports NOT_SERVING", name, why)

    def clear(self, name: str) -> None:
        """Dependency ``name`` works again."""
        if name not in self._failing:
            return
        with self._lock:
            if self._failing.pop(name, None) is None:
                return
            recovered = not self._failing
            if recovered:
                self._set(SERVING)
        log.warning("%s works again%s", name, ": health reports SERVING" if recovered else "")

    def judge(self, facts: CallFacts, code: str) -> None:
        """A call was answered with ``code``: blame or clear the dependencies it tells about."""
        for dependency in self.dependencies.values():
            if facts.reason in dependency.failing_reasons:
                self.fail(dependency.name, facts.reason)
            elif code == "OK" and facts.method in dependency.cleared_by:
                self.clear(dependency.name)

    def recheck(self) -> None:
        """Try each failing dependency that has a recheck, if it was not tried in the last RECHECK_SECONDS."""
        for name in list(self._failing):
            dependency = self.dependencies.get(name)
            if dependency is None or dependency.recheck is None:
                continue
            with self._lock:
                if self.clock() - self._rechecked.get(name, 0.0) < RECHECK_SECONDS:
                    continue
                self._rechecked[name] = self.clock()
            try:
                works = dependency.recheck()
            except Exception:  # noqa: BLE001 - a recheck that fails says the dependency still fails
                works = False
            if works:
                self.clear(name)

    def _set(self, status: Any) -> None:
        """Every service's status and the overall one (the health servicer's own lock; no I/O)."""
        for service in self.services:
            self.health.set(service, status)


class RecheckingHealthServicer(health.HealthServicer):
    """The standard health service, which first rechecks the failing dependencies a readiness names."""

    def __init__(self) -> None:
        super().__init__()
        self.readiness: Readiness | None = None

    def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 - the generated servicer's name
        """Answer a health check, after rechecking failing dependencies (rate limited)."""
        if self.readiness is not None and self.readiness.failing:
            self.readiness.recheck()
        return super().Check(request, context)
