"""The dsbroker error tree.

Every failure a caller can see is a :class:`DsbrokerError`. Each carries the
gRPC status code to answer with, a stable ``reason`` (UPPER_SNAKE_CASE, the
``google.rpc.ErrorInfo.reason``) and metadata that names the rule, table and
column involved. Messages never contain data values. :mod:`dsbroker.rpc.status`
is the one place that turns these into gRPC statuses and back.
"""

from __future__ import annotations

from typing import Sequence

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2

ERROR_DOMAIN = "dsbroker"
# What a reply may carry of a caller's own input. gRPC sends the message twice (grpc-message,
# percent-encoded, and inside grpc-status-details-bin with the details) in trailers that receivers
# cap at 8 KiB by default, so a message is cut at 1 KiB of UTF-8 and each metadata value at 256 bytes:
# no reply grows too large to deliver, whatever a caller sends.
ECHO_CHARS = 64
MAX_MESSAGE_BYTES = 1024
MAX_METADATA_BYTES = 256


def clipped(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8 (on a character boundary), marked with "…" when cut."""
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes - 3].decode("utf-8", "ignore") + "…"


def shown(value: object, chars: int = ECHO_CHARS) -> str:
    """A caller's value as a message quotes it: its repr, cut to ``chars`` characters. Use it for every
    name, id or text that came from the caller, so a message never echoes a huge input."""
    text = str(value)
    return repr(text if len(text) <= chars else text[:chars] + "…")


class DsbrokerError(Exception):
    """Base of every error dsbroker reports to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        code: grpc.StatusCode | None = None,
        details: Sequence[Message] = (),
        **metadata: str | int | None,
    ) -> None:
        message = clipped(message, MAX_MESSAGE_BYTES)  # the last line of defence; callers use shown()
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        if code is not None:
            self.code = code
        self.metadata = {k: clipped(str(v), MAX_METADATA_BYTES) for k, v in metadata.items() if v is not None}
        self.details = tuple(details)

    def rich_details(self) -> tuple[Message, ...]:
        """The google.rpc detail messages sent after the ErrorInfo (BadRequest, QuotaFailure, ...)."""
        return self.details

    def __str__(self) -> str:
        return self.message


class GuardError(DsbrokerError):
    """Raised by a guard rule when a query is refused.

    ``rule`` names the guard rule; ``table`` and ``column`` what it objected to.
    """

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "QUERY_REFUSED"

    def rich_details(self) -> tuple[Message, ...]:
        violation = error_details_pb2.BadRequest.FieldViolation(field="sql", description=self.message)
        return (error_details_pb2.BadRequest(field_violations=[violation]), *self.details)


class GuardPermissionError(GuardError):
    """Raised when a query reaches for a column or table the grant does not cover."""

    code = grpc.StatusCode.PERMISSION_DENIED


class GrantError(DsbrokerError):
    """Raised when the caller has no usable grant: unknown, not theirs, or not active."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "GRANT_NOT_FOUND"


class RoleError(DsbrokerError):
    """Raised when an authenticated caller lacks the role a method requires."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "ROLE_REQUIRED"


class AuthenticationError(DsbrokerError):
    """Raised when a call carries no credentials or credentials that do not verify."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PolicyFileError(DsbrokerError):
    """Raised when a policy file does not parse or validate; names the file and line."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "POLICY_INVALID"

    def __init__(self, message: str, *, path: str, line: int | None = None, **metadata) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}", path=path, line=line, **metadata)
        self.path = path
        self.line = line


class QuotaError(DsbrokerError):
    """Raised when a caller is over a limit; carries a google.rpc.QuotaFailure naming what ran out."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "QUOTA_EXCEEDED"

    def __init__(self, message: str, *, subject: str, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.subject = subject

    def rich_details(self) -> tuple[Message, ...]:
        violation = error_details_pb2.QuotaFailure.Violation(subject=self.subject, description=self.message)
        return (error_details_pb2.QuotaFailure(violations=[violation]), *self.details)


class ConfigError(DsbrokerError):
    """Raised when a configuration file or flag is invalid."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "CONFIG_INVALID"


class SandboxError(DsbrokerError):
    """Raised when the sandbox cannot be reached, refuses a plan, or fails to run it."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "SANDBOX_UNAVAILABLE"


class ExecutionError(DsbrokerError):
    """Raised inside the sandbox when the engine fails; the message is generic on purpose."""

    code = grpc.StatusCode.INTERNAL
    reason = "EXECUTION_FAILED"


class AccessLogError(DsbrokerError):
    """Raised when the access log cannot record an access; the access is then refused."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "ACCESS_LOG_UNAVAILABLE"


class AccessLogTampered(AccessLogError):
    """Raised when the log holds a record no trusted broker sealed, or lost records a broker wrote: the
    broker refuses to extend (or checkpoint) a chain it cannot vouch for, and every access with it."""

    reason = "ACCESS_LOG_TAMPERED"
