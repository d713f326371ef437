"""Every call leaves a record: the interceptor that writes one for calls that did not write their own.

Queries, explains, request transitions and policy changes write their own, richer records; the
interceptors outside this one record refused tokens, deadlines and per-caller limits. Everything
else (reads of requests, policies and the catalog, an auditor's reads of the log, and any failure
that escaped its handler) is recorded here, after the handler ran and before its answer leaves,
so a read whose record cannot be written is refused like any other access.

Health checks and reflection are not recorded: they carry no identity, reveal no data or grant, and
a load balancer's probes every few seconds would bury the accesses auditors look for.
"""

from __future__ import annotations

import logging

import grpc

from broker.access_log.log import AccessLog, AccessRecord, records_written
from dsbroker.identity.auth import UNAUTHENTICATED_METHODS, current_principal
from dsbroker.rpc.call_context import current_request_id
from dsbroker.errors import DsbrokerError
from dsbroker.rpc.handlers import with_unary_behavior
from broker.v1 import audit_service_pb2

log = logging.getLogger(__name__)

AUDIT_SERVICE_PREFIX = f"/{audit_service_pb2.DESCRIPTOR.services_by_name['AuditService'].full_name}/"


class CallAuditInterceptor(grpc.ServerInterceptor):
    """Innermost interceptor: records each call that wrote no record of its own."""

    def __init__(self, access_log: AccessLog) -> None:
        self.access_log = access_log

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler_call_details.method.startswith(
                UNAUTHENTICATED_METHODS):
            return handler
        behavior, method = handler.unary_unary, handler_call_details.method

        def audited(request, context: grpc.ServicerContext):
            written: list[int] = []
            reset = records_written.set(written)
            try:
                response = behavior(request, context)
            except Exception as error:
                if not written:
                    self._record_quietly(method, context, error)
                raise
            finally:
                records_written.reset(reset)
            if not written:
                self._record(method, context, None)
            return response

        return with_unary_behavior(handler, audited)

    def _record(self, method: str, context: grpc.ServicerContext, error: Exception | None) -> None:
        principal = current_principal.get()
        if error is None:
            decision, reason, detail = "allow", "", {"method": method}
        elif isinstance(error, DsbrokerError):
            decision, reason, detail = "deny", error.reason, {"method": method, **error.metadata}
        else:
            decision, reason, detail = "error", "INTERNAL", {"method": method}
        self.access_log.append(AccessRecord(
            event="audit.read" if method.startswith(AUDIT_SERVICE_PREFIX) else "call", decision=decision,
            reason=reason, subject=principal.subject if principal else "",
            department=principal.department if principal else "", token_id=principal.token_id if principal else "",
            client=context.peer(), request_id=current_request_id.get(), detail=detail))

    def _record_quietly(self, method: str, context: grpc.ServicerContext, error: Exception) -> None:
        """On the way out of a failed call: the caller hears of the original failure, not of the log's."""
        try:
            self._record(method, context, error)
        except DsbrokerError:
            log.error("could not record the failed call %s in the access log", method)
