"""The outermost interceptor: times every unary call, counts it by method and code, writes its log line.

It sits outside the error interceptor so that the code it reports is the status the caller receives
(the error interceptor has set it on the context by the time the call unwinds through here). Health
and reflection calls are counted but not logged: an orchestrator's probes every few seconds would
bury the lines an operator looks for.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import grpc

from dsbroker.identity.auth import UNAUTHENTICATED_METHODS
from dsbroker.observability.call_facts import CallFacts, current_call
from dsbroker.observability.metrics import ServerMetrics
from dsbroker.observability.request_log import log_call
from dsbroker.rpc.handlers import with_unary_behavior
from dsbroker.rpc.status import answered_code

OnAnswer = Callable[[CallFacts, str], None]


class ObservingInterceptor(grpc.ServerInterceptor):
    """Times, counts and logs each call; ``on_answer(facts, code)`` hears of each one too (the server's
    readiness). ``server`` names the side in the log line (``broker`` or ``sandbox``)."""

    def __init__(self, metrics: ServerMetrics, *, server: str, log_lines: bool,
                 on_answer: OnAnswer = lambda *_: None) -> None:
        self.metrics = metrics
        self.server = server
        self.log_lines = log_lines
        self.on_answer = on_answer

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                          handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # unknown methods (gRPC answers UNIMPLEMENTED) would make the method label unbounded
        behavior, method = handler.unary_unary, handler_call_details.method
        logged = self.log_lines and not method.startswith(UNAUTHENTICATED_METHODS)

        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            facts = CallFacts(method=method)
            reset = current_call.set(facts)
            started = time.perf_counter()
            failed = False
            try:
                return behavior(request, context)
            except BaseException:
                failed = True
                raise
            finally:
                current_call.reset(reset)
                seconds = time.perf_counter() - started
                code = answered_code(context, failed=failed)
                self.metrics.rpc(method, code, seconds, facts.reason)
                self.on_answer(facts, code)
                if logged:
                    log_call({"server": self.server, **facts.as_dict(), "code": code,
                              "duration_ms": round(seconds * 1000, 3)})

        return with_unary_behavior(handler, observed)

