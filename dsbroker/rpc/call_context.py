"""Per-call conventions: a request id, a required deadline, and a cap on each caller's calls in flight.

- **Request id.** Taken from the ``x-request-id`` metadata (or made up), held in
  :data:`current_request_id` for the access log, and sent back as initial metadata so a caller can
  quote it to an operator.
- **Deadline.** Every call must carry one; it becomes the query's time limit in the sandbox.
- **Calls per caller.** One department's script cannot take every worker: past the cap, a caller
  gets RESOURCE_EXHAUSTED with a QuotaFailure, and other callers are unaffected.
- **A body that decodes.** gRPC itself answers a request that does not decode as the method's
  message (INTERNAL, before any interceptor runs), which would leave no record; the conventions
  interceptor decodes instead, and refuses such a call as INVALID_ARGUMENT where it can be recorded.
"""

from __future__ import annotations

import contextvars
import re
import threading
import uuid
from collections import Counter
from typing import Any, Callable

import grpc
from google.rpc import error_details_pb2

from dsbroker.identity.auth import UNAUTHENTICATED_METHODS, current_principal
from dsbroker.errors import DsbrokerError, QuotaError
from dsbroker.observability.call_facts import note_call
from dsbroker.rpc.handlers import with_unary_behavior
from dsbroker.identity.tls import peer_certificate

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# gRPC reports "no deadline" as a time remaining of about 292 billion years.
NO_DEADLINE_SECONDS = 10 * 365 * 24 * 3600

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# Who is calling as far as the transport tells, before any token verifies: the key the broker caps
# refusals by (broker.access_log.refusal_cap).
current_client_key: contextvars.ContextVar[str] = contextvars.ContextVar("client_key", default="")


def client_key(context: grpc.ServicerContext) -> str:
    """The client certificate's thumbprint (mutual TLS), else the peer's address without its port."""
    certificate = peer_certificate(context)
    if certificate is not None:
        return f"certificate:{certificate.thumbprint}"
    peer = context.peer() or "unknown"
    host, _, port = peer.rpartition(":")
    return f"address:{host if port.isdigit() and host else peer}"


def time_limit(context: grpc.ServicerContext) -> float:
    """Seconds left before the caller's deadline (the interceptor has already refused calls without one)."""
    remaining = context.time_remaining()
    if remaining is None or remaining > NO_DEADLINE_SECONDS:
        raise _deadline_required()
    return max(remaining, 0.0)


OnRefusal = Callable[[str, grpc.ServicerContext, DsbrokerError], None]


class Undecodable:
    """Stands in for a request body that did not decode, so that the call reaches code that records it."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


def _decoding(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, returning :class:`Undecodable` where it would raise (gRPC would answer on its own)."""
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - protobuf raises DecodeError, others what they like
            return Undecodable(len(data))
    return decode


class CallConventionsInterceptor(grpc.ServerInterceptor):
    """Sets the request id and refuses calls without a deadline or with a body that does not decode.
    Sits just inside the error interceptor.

    ``on_refusal(method, context, error)`` records refusals (the broker's access log).
    """

    def __init__(self, on_refusal: OnRefusal = lambda *_: None) -> None:
        self.on_refusal = on_refusal

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                         handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler_call_details.method.startswith(
                UNAUTHENTICATED_METHODS):
            return handler
        behavior = handler.unary_unary

        method = handler_call_details.method

        def with_conventions(request: Any, context: grpc.ServicerContext) -> Any:
            reset_client = current_client_key.set(client_key(context))
            try:
                return conventions(request, context)
            finally:
                current_client_key.reset(reset_client)

        def conventions(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                request_id = _request_id(context)
            except DsbrokerError as error:
                self.on_refusal(method, context, error)
                raise
            note_call(request_id=request_id)
            context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
            reset = current_request_id.set(request_id)
            try:
                try:
                    time_limit(context)
                    if isinstance(request, Undecodable):
                        raise _undecodable(request, method)
                except DsbrokerError as error:
                    self.on_refusal(method, context, error)
                    raise
                return behavior(request, context)
            finally:
                current_request_id.reset(reset)

        return grpc.unary_unary_rpc_method_handler(
            with_conventions, request_deserializer=_decoding(handler.request_deserializer),
            response_serializer=handler.response_serializer)


class CallerLimitInterceptor(grpc.ServerInterceptor):
    """Caps the calls one caller (token subject) has in flight. Sits inside the auth interceptor.

    ``on_refusal(method, context, error)`` records refusals (the broker's access log).
    """

    def __init__(self, max_calls_per_caller: int, on_refusal: OnRefusal = lambda *_: None) -> None:
        self.max_calls = max_calls_per_caller
        self.on_refusal = on_refusal
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                         handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary

        def limited(request: Any, context: grpc.ServicerContext) -> Any:
            principal = current_principal.get()
            if principal is None:
                return behavior(request, context)
            caller = f"{principal.department}/{principal.subject}"
            with self._lock:
                refused = self._in_flight[caller] >= self.max_calls
                if not refused:
                    self._in_flight[caller] += 1
            if refused:
                error = QuotaError(f"at most {self.max_calls} calls per caller may be in flight; wait for one "
                                   "to finish", reason="TOO_MANY_CALLS", subject=f"callers/{caller}")
                self.on_refusal(handler_call_details.method, context, error)
                raise error
            try:
                return behavior(request, context)
            finally:
                with self._lock:
                    self._in_flight[caller] -= 1
                    if not self._in_flight[caller]:
                        del self._in_flight[caller]

        return with_unary_behavior(handler, limited)


def body_request_id(value: str, field: str = "request_id") -> str:
    """The request id a message body carries (``field``), held to the header's rules; empty: the call's own.

    It reaches the access log and the sandbox's metadata, so it is checked as strictly as the header.
    """
    return _checked_request_id(value, field) if value else current_request_id.get()


def _request_id(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata():
        if key == REQUEST_ID_HEADER:
            assert isinstance(value, str)  # gRPC gives text headers (all but -bin ones) as str
            return _checked_request_id(value, f"metadata.{REQUEST_ID_HEADER}")
    return str(uuid.uuid4())


def _checked_request_id(value: str, field: str) -> str:
    if not REQUEST_ID_PATTERN.fullmatch(value):
        raise DsbrokerError(f"{field.removeprefix('metadata.')} must be 1 to 128 letters, digits or . _ : -",
                            reason="REQUEST_ID_INVALID", details=[_bad_request(field, "1 to 128 of [A-Za-z0-9._:-]")])
    return value


def _undecodable(request: Undecodable, method: str) -> DsbrokerError:
    return DsbrokerError(f"the request body ({request.size} bytes) does not decode as the message of "
                         f"{method.rsplit('/', 1)[-1]}", reason="REQUEST_UNDECODABLE",
                         details=[_bad_request("body", "a serialized protobuf message of the method's request type")])


def _deadline_required() -> DsbrokerError:
    return DsbrokerError("this call needs a deadline (grpc timeout); it becomes the query's time limit",
                         reason="DEADLINE_REQUIRED", details=[_bad_request("deadline", "set a deadline on the call")])


def _bad_request(field: str, description: str) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=description)])
