"""Who is calling: the Principal, the ContextVar that holds it, and the interceptor that sets it.

Authentication is a seam: an ``Authenticator`` turns the bearer token (and the client certificate,
when the call came over mutual TLS) into a Principal. :class:`dsbroker.identity.tokens.JwtAuthenticator` is the
one this version ships. What a principal may do is decided on the broker by :mod:`broker.permissions`.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import grpc

from dsbroker.errors import AuthenticationError
from dsbroker.observability.call_facts import note_call
from dsbroker.rpc.handlers import with_unary_behavior
from dsbroker.identity.tls import PeerCertificate, peer_certificate

ROLES = ("requester", "reviewer", "owner", "auditor")
# Health and reflection answer without a token; they reveal no data and no grant.
UNAUTHENTICATED_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                           "/grpc.reflection.v1.ServerReflection/")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    subject: str
    department: str
    district: str
    roles: frozenset[str]
    token_id: str = ""
    # The thumbprint of the client certificate the token is bound to (RFC 8705 cnf x5t#S256); empty when
    # the token is not bound to one.
    certificate_thumbprint: str = ""


current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)
# The bearer token the current call was authenticated with; the pipeline forwards it to the sandbox,
# which verifies it itself rather than taking the broker's word for who is asking.
current_token: contextvars.ContextVar[str] = contextvars.ContextVar("token", default="")


def require_principal() -> Principal:
    """The caller of the current RPC; raises if the call was not authenticated."""
    principal = current_principal.get()
    if principal is None:
        raise AuthenticationError("this call requires credentials")
    return principal


class Authenticator(Protocol):
    """Turns a bearer token (and the client certificate, if any) into a Principal or raises AuthenticationError."""

    def authenticate(self, token: str, *, certificate: PeerCertificate | None) -> Principal: ...


class AuthInterceptor(grpc.ServerInterceptor):
    """Authenticates each call and holds the Principal in :data:`current_principal` while it runs.

    Sits inside the error interceptor, so a refusal becomes UNAUTHENTICATED with an ErrorInfo;
    ``on_failure(method, peer, error)`` records refusals (the access log). Methods that stream
    requests are refused outright (UNIMPLEMENTED) until one is added with authentication.
    """

    def __init__(self, authenticator: Authenticator,
                 on_failure: Callable[[str, str, AuthenticationError], None] = lambda *_: None) -> None:
        self.authenticator = authenticator
        self.on_failure = on_failure

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                         handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(UNAUTHENTICATED_METHODS):
            return handler
        if handler.unary_unary is None:
            return None  # fail closed: no unauthenticated streaming method
        behavior = handler.unary_unary

        def authenticated(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                token = _bearer_token(context)
                principal = self.authenticator.authenticate(token, certificate=peer_certificate(context))
            except AuthenticationError as error:
                self.on_failure(method, context.peer(), error)
                raise
            note_call(caller=principal.subject, department=principal.department)
            reset, reset_token = current_principal.set(principal), current_token.set(token)
            try:
                return behavior(request, context)
            finally:
                current_principal.reset(reset)
                current_token.reset(reset_token)

        return with_unary_behavior(handler, authenticated)


def _bearer_token(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata():
        if key == "authorization":
            assert isinstance(value, str)  # gRPC gives text headers (all but -bin ones) as str
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise AuthenticationError("the authorization header must be 'Bearer <token>'", reason="TOKEN_MALFORMED")
    raise AuthenticationError("this call requires a token (authorization: Bearer <token>)", reason="TOKEN_MISSING")
