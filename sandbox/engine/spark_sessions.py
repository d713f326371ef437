"""The two kinds of session the Spark engine runs on, each with its statement check and its cancel.

- :class:`OwnSession`: a session of the sandbox's own, on ``spark.master`` (``local[N]`` or a cluster's master).
  The sandbox sets its lockdown when it starts it, drops the functions that reach the JVM or the files from its
  registry, parses every text with Spark's own parser as one query, and cancels a late query's job group.
- :class:`ConnectSession`: a session on a Spark Connect server (``sc://host:port``). The server's settings are
  its operator's, so the engine verifies them at start instead of setting them
  (:func:`sandbox.engine.spark_lockdown.connect_problems`); the client has no parser and no function registry
  to reach, so every text is sent as the one subquery of ``SELECT * FROM (...)`` (the server's parser reads it
  as one query or refuses it: a ``SET``, ``ADD JAR`` or second statement never runs as a statement), and the
  plan the server makes of it is read before it runs (:func:`sandbox.engine.spark_lockdown.denied_in_plan`);
  a late query is interrupted by the tag it runs under (Spark Connect has no job groups).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable

from dsbroker.errors import DsbrokerError
from sandbox.engine.interface import EngineLimits
from sandbox.engine.spark_lockdown import check_query, drop_functions, session_settings

log = logging.getLogger(__name__)

# A newline on each side: a trailing ``--`` comment in the text cannot swallow the closing parenthesis.
_ONE_QUERY = "SELECT * FROM (\n{sql}\n)"
# How long a call waits out an unreachable server: pyspark's default retries for at least 10 minutes, past any
# query's deadline (the watchdog's interrupt would not reach the server either); these wait about 6 s.
CONNECT_RETRIES = 4
CONNECT_BACKOFF_MS = (100, 4000)  # the first wait, and the longest: each four times the one before


class OwnSession:
    """A locked-down session of the sandbox's own on ``master`` (the process's session when one runs)."""

    remote = False

    def __init__(self, master: str, limits: EngineLimits) -> None:
        from pyspark.sql import SparkSession

        self.owned = SparkSession.getActiveSession() is None
        builder = SparkSession.Builder().master(master).appName("dsbroker-sandbox")
        for key, value in session_settings(limits, master).items():
            builder = builder.config(key, value)
        self.session = builder.getOrCreate()
        # The engine logs each failure itself, once and briefly; Spark would log it again with a stack trace.
        self.session.sparkContext.setLogLevel("FATAL")
        drop_functions(self.session)

    def statement(self, sql: str) -> str:
        """``sql`` when Spark's own parser reads it as one query; NotAQuery otherwise."""
        check_query(self.session, sql)
        return sql

    def plan(self, frame: Any) -> str:
        """The analyzed plan of ``frame`` (already analyzed when the frame was made), as text."""
        return str(frame._jdf.queryExecution().analyzed().toString())

    def begin(self, name: str) -> Callable[[], object]:
        """Run the thread's next jobs in the job group ``name``; returns the cancel of that group."""
        context = self.session.sparkContext
        context.setJobGroup(name, "a sandbox plan", interruptOnCancel=True)
        return lambda: context.cancelJobGroup(name)

    def end(self, name: str) -> None:
        """The thread's next query starts outside the group."""
        self.session.sparkContext.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]  # clears it


class ConnectSession:
    """A session of its own on the Spark Connect server ``remote`` (or ``session``, one the caller opened there,
    which the engine checks as its own and does not stop)."""

    remote = True

    def __init__(self, remote: str, session: Any = None, *, address: str = "") -> None:
        """``address`` (host:port, without the URL's token) names the server in the error when it cannot be
        reached (ENGINE_UNREACHABLE)."""
        from pyspark.sql import SparkSession
        from pyspark.sql.connect.client.retries import DefaultPolicy

        self.owned = session is None
        # create(), never getOrCreate(): that would hand back any Connect session of the process, to any server.
        self.session = session if session is not None else SparkSession.Builder().remote(remote).create()
        if self.owned:
            first, longest = CONNECT_BACKOFF_MS
            self.session.client.set_retry_policies([DefaultPolicy(
                max_retries=CONNECT_RETRIES, initial_backoff=first, backoff_multiplier=4.0, max_backoff=longest)])
        try:
            with warnings.catch_warnings():  # pyspark warns as its retries run out; the error below says it
                warnings.simplefilter("ignore")
                log.info("Spark Connect server runs Spark %s", self.session.version)  # the first call: it answers
        except Exception as error:  # gRPC's message names the address only
            log.warning("Spark Connect server unreachable (%s)", type(error).__name__)
            if self.owned:
                self.session.stop()
            raise DsbrokerError(f"cannot reach the Spark Connect server {address or 'spark_remote'}",
                                reason="ENGINE_UNREACHABLE") from None

    def statement(self, sql: str) -> str:
        """``sql`` as the one subquery of a query: the server's parser reads the whole as one query or refuses it."""
        return _ONE_QUERY.format(sql=sql)

    def plan(self, frame: Any) -> str:
        """The server's parsed, analyzed, optimized and physical plans of ``frame``, as text (nothing runs)."""
        return str(frame._explain_string(extended=True))

    def begin(self, name: str) -> Callable[[], object]:
        """Tag the thread's next operations ``name``; returns the interrupt of every operation with the tag."""
        self.session.addTag(name)
        return lambda: self.session.interruptTag(name)

    def end(self, name: str) -> None:
        """The thread's next query runs without the tag."""
        self.session.removeTag(name)
