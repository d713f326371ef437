"""Who is calling: the Principal, the ContextVar that holds it, and the interceptor that sets it.

Authentication is a seam: an ``Authenticator`` turns the bearer token into a
Principal. This version ships the development authenticator only, which reads
unsigned tokens and is therefore refused on non-loopback addresses; the JWT
authenticator plugs in at the same place.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Callable, Protocol

import grpc

from broker.errors import AuthenticationError

ROLES = ("requester", "reviewer", "owner", "auditor")
DEV_TOKEN_PREFIX = "dev:"
UNAUTHENTICATED_METHODS = ("/grpc.health.v1.Health/",)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    subject: str
    department: str
    district: str
    roles: frozenset[str]
    token_id: str = ""


current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def require_principal() -> Principal:
    """The caller of the current RPC; raises if the call was not authenticated."""
    principal = current_principal.get()
    if principal is None:
        raise AuthenticationError("this call requires credentials")
    return principal


class Authenticator(Protocol):
    """Turns a bearer token into a Principal or raises AuthenticationError."""

    def authenticate(self, token: str) -> Principal: ...


def development_token(*, subject: str, department: str, district: str, roles: tuple[str, ...]) -> str:
    """An unsigned development token: readable, forgeable, for loopback demos and tests only."""
    return f"{DEV_TOKEN_PREFIX}sub={subject},department={department},district={district},roles={'+'.join(roles)}"


class DevelopmentAuthenticator:
    """Accepts the unsigned tokens made by :func:`development_token`."""

    def authenticate(self, token: str) -> Principal:
        if not token.startswith(DEV_TOKEN_PREFIX):
            raise AuthenticationError("the token is not a development token", reason="TOKEN_INVALID")
        fields: dict[str, str] = {}
        for part in token[len(DEV_TOKEN_PREFIX):].split(","):
            key, _, value = part.partition("=")
            fields[key.strip()] = value.strip()
        missing = [k for k in ("sub", "department", "district", "roles") if not fields.get(k)]
        if missing:
            raise AuthenticationError(f"the token lacks {', '.join(missing)}", reason="TOKEN_CLAIMS_MISSING")
        roles = frozenset(fields["roles"].split("+"))
        unknown = roles - set(ROLES)
        if unknown:
            raise AuthenticationError(f"unknown role {sorted(unknown)[0]!r}", reason="TOKEN_CLAIMS_INVALID")
        return Principal(fields["sub"], fields["department"], fields["district"], roles)


class AuthInterceptor(grpc.ServerInterceptor):
    """Authenticates each call and holds the Principal in :data:`current_principal` while it runs.

    Sits inside the error interceptor, so a refusal becomes UNAUTHENTICATED with
    an ErrorInfo; ``on_failure`` records refusals (the access log).
    """

    def __init__(self, authenticator: Authenticator,
                 on_failure: Callable[[str, str, AuthenticationError], None] = lambda *_: None) -> None:
        self.authenticator = authenticator
        self.on_failure = on_failure

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or method.startswith(UNAUTHENTICATED_METHODS):
            return handler
        behavior = handler.unary_unary

        def authenticated(request, context: grpc.ServicerContext):
            try:
                principal = self.authenticator.authenticate(_bearer_token(context))
            except AuthenticationError as error:
                self.on_failure(method, context.peer(), error)
                raise
            reset = current_principal.set(principal)
            try:
                return behavior(request, context)
            finally:
                current_principal.reset(reset)

        return grpc.unary_unary_rpc_method_handler(
            authenticated, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _bearer_token(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata():
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise AuthenticationError("the authorization header must be 'Bearer <token>'", reason="TOKEN_MALFORMED")
    raise AuthenticationError("this call requires a token (authorization: Bearer <token>)", reason="TOKEN_MISSING")
