"""The one place where exceptions become gRPC statuses, and statuses become exceptions.

Servers install :class:`ErrorInterceptor`; it answers a :class:`DsbrokerError`
with its code, message and a ``google.rpc.ErrorInfo`` detail, and any other
exception with a bare INTERNAL status (the traceback goes to the server's own
log, never to the caller). Clients call :func:`error_from_rpc_error` to get
the :class:`DsbrokerError` back. It is also the one place an error's status code (a name in
:data:`dsbroker.errors.REASONS`) becomes a ``grpc.StatusCode``: :func:`grpc_code`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from dsbroker.observability.call_facts import note_call
from dsbroker.errors import CODES, ERROR_DOMAIN, MAX_METADATA_BYTES, DsbrokerError, clipped
from dsbroker.rpc.handlers import with_unary_behavior

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the operator's log has the details"
DETAIL_TYPES = (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.QuotaFailure,
                error_details_pb2.PreconditionFailure)
GRPC_CODES = {code.name: code for code in grpc.StatusCode}
if not set(CODES) <= set(GRPC_CODES):  # the registry names codes; each must be one of gRPC's
    raise ImportError(f"status codes gRPC lacks: {sorted(set(CODES) - set(GRPC_CODES))}")


def grpc_code(name: str) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of a status code's name (:attr:`DsbrokerError.code_name`, a reason's ``code``);
    UNKNOWN for a name gRPC does not have."""
    return GRPC_CODES.get(name, grpc.StatusCode.UNKNOWN)


def answered_code(context: grpc.ServicerContext, *, failed: bool) -> str:
    """The name of the status code a call ended with: the one :class:`ErrorInterceptor` set on ``context``,
    else OK (or UNKNOWN when the call ``failed`` with none set)."""
    code = context.code()  # type: ignore[attr-defined]  # grpcio 1.38+; missing from the type stubs
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN" if failed else "OK"


def to_grpc_status(error: DsbrokerError) -> grpc.Status:
    """Build the gRPC status (with an ErrorInfo detail) that answers ``error``.

    An INVALID_ARGUMENT error that names its field (``field`` metadata) but brings no BadRequest of its
    own gets one naming that field, so every refusal of a request field says which field in the standard
    detail, whichever module raised it."""
    code = grpc_code(error.code_name)
    details = list(error.rich_details())
    field = error.metadata.get("field")
    if (code == grpc.StatusCode.INVALID_ARGUMENT and field
            and not any(isinstance(d, error_details_pb2.BadRequest) for d in details)):
        details.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=error.message)]))
    packed = []
    for message in (error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata),
                    *details):
        detail = any_pb2.Any()
        detail.Pack(message)
        packed.append(detail)
    status = status_pb2.Status(code=code.value[0], message=error.message, details=packed)
    return rpc_status.to_status(status)


def error_from_rpc_error(rpc_error: grpc.RpcError) -> DsbrokerError:
    """Rebuild a :class:`DsbrokerError` from a failed call, keeping code, reason and metadata.

    The code stays the one the server sent, and the reason too, whether or not :data:`dsbroker.errors.REASONS`
    declares it: a newer server may give reasons this version does not know, and a status without an
    ErrorInfo gets its code's name as reason (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``)."""
    call = rpc_error if isinstance(rpc_error, grpc.Call) or hasattr(rpc_error, "trailing_metadata") else None
    code = call.code() if call is not None else grpc.StatusCode.UNKNOWN
    message = call.details() if call is not None else str(rpc_error)
    reason, metadata, details = code.name, {}, []
    try:
        status = rpc_status.from_call(call) if call is not None else None  # type: ignore[arg-type]
    except (ValueError, DecodeError):  # details that disagree with the status line, or do not parse
        log.warning("a failed call's status details do not read; kept its code and message only")
        status = None
    for detail in status.details if status else ():
        for detail_type in DETAIL_TYPES:
            if detail.Is(detail_type.DESCRIPTOR):
                unpacked = detail_type()
                try:
                    detail.Unpack(unpacked)
                except DecodeError:
                    log.warning("a failed call's %s detail does not parse; left out", detail_type.__name__)
                    continue
                if isinstance(unpacked, error_details_pb2.ErrorInfo):
                    reason, metadata = unpacked.reason, dict(unpacked.metadata)
                else:
                    details.append(unpacked)
    error = DsbrokerError(message or code.name, reason=reason, code=code.name, details=details)
    # Set after construction: a sender's metadata may use any key, "reason" and "code" included.
    error.metadata = {k: clipped(str(v), MAX_METADATA_BYTES) for k, v in metadata.items()}
    return error


class ErrorInterceptor(grpc.ServerInterceptor):
    """Turns exceptions raised by unary handlers into gRPC statuses with ErrorInfo."""

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                          handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        return with_unary_behavior(handler, _answering_errors(handler.unary_unary, handler_call_details.method))


def _answering_errors(behavior: Callable[[Any, grpc.ServicerContext], Any],
                      method: str) -> Callable[[Any, grpc.ServicerContext], Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except DsbrokerError as error:
            note_call(reason=error.reason)  # the reason the caller gets is the one its log line gives
            context.abort_with_status(to_grpc_status(error))
        except Exception:  # noqa: BLE001 - the last line of defence; handlers never call context.abort
            log.exception("unexpected error in %s", method)
            note_call(reason="INTERNAL")
            context.abort_with_status(to_grpc_status(DsbrokerError(INTERNAL_MESSAGE)))

    return wrapped

