"""Caller tokens: JWTs verified with PyJWT against the identity provider's public keys.

A token's claims carry who is calling (``sub``), their ``department``, its ``district`` and their
``roles``. Verification uses an explicit algorithm allowlist and binds each key to its own
algorithm, so ``alg: none`` and algorithm confusion (HS256 "signed" with a public key) fail.
Optionally (RFC 8705) a token carries ``cnf: {"x5t#S256": ...}``, the thumbprint of the client
certificate it may be used with; a token that carries any other ``cnf`` is refused, since it is bound to
something this server cannot hold it to.

Tokens come from anyone who can open a connection, so every way PyJWT (and cryptography under it) can
refuse one is a refusal here, UNAUTHENTICATED with a reason: never an exception that escapes as INTERNAL,
which would leave no ``auth.failure`` record and slip past the per-client refusal cap.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Callable, Iterable, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from dsbroker.identity.auth import ROLES, Principal
from dsbroker.errors import AuthenticationError, ConfigError
from dsbroker.identity.tls import PeerCertificate, is_loopback

# Asymmetric only: a symmetric (HS*) algorithm would let anyone holding the key mint tokens.
ALLOWED_ALGORITHMS = ("EdDSA", "ES256", "RS256")
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat")
# NumericDate claims (RFC 7519 4.1.4): checked here against the authenticator's own clock, not by PyJWT,
# which reads the wall clock itself and takes any text that int() accepts.
LIFETIME_CLAIMS = ("exp", "nbf", "iat")
CALLER_CLAIMS = ("department", "district", "roles")
JWKS_URL_CACHE_SECONDS = 300
BINDINGS = ("none", "subject", "thumbprint")
VERIFIED_TOKENS_KEPT = 4096
# The one confirmation method this server checks (RFC 8705 section 3.1).
CERTIFICATE_THUMBPRINT = "x5t#S256"
# A JWT is a few hundred bytes to a few KiB; gRPC caps metadata near 8 KiB, but a plan carries its token in
# the message body, so the sandbox bounds it here before anything decodes it.
MAX_TOKEN_CHARS = 16 * 1024
# What PyJWT's JSON and base64 decoding can raise beyond its own errors on input no issuer wrote (deep
# nesting, numbers past the digit limit, bytes that are not UTF-8): refusals, like its own.
_HOSTILE_INPUT_ERRORS = (jwt.PyJWTError, ValueError, TypeError, RecursionError, OverflowError)


def issue_token(private_key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey, *, key_id: str, issuer: str,
                audience: str, subject: str, department: str, district: str, roles: Iterable[str],
                ttl: dt.timedelta, now: dt.datetime | None = None, certificate_thumbprint: str | None = None) -> str:
    """Sign a caller token with the identity provider's private key (Ed25519: EdDSA; EC P-256: ES256)."""
    roles = list(roles)
    unknown = set(roles) - set(ROLES)
    if not roles or unknown:
        raise ConfigError(f"roles must be among {', '.join(ROLES)}")
    if ttl <= dt.timedelta(0):
        raise ConfigError("the token's lifetime must be positive")
    now = now or dt.datetime.now(dt.timezone.utc)
    claims = {"iss": issuer, "aud": audience, "sub": subject, "department": department, "district": district,
              "roles": roles, "iat": now, "nbf": now, "exp": now + ttl, "jti": str(uuid.uuid4())}
    if certificate_thumbprint:
        claims["cnf"] = {"x5t#S256": certificate_thumbprint}
    algorithm = "EdDSA" if private_key.__class__.__name__.startswith("Ed25519") else "ES256"
    return jwt.encode(claims, private_key, algorithm=algorithm, headers={"kid": key_id})


def parse_duration(text: str) -> dt.timedelta:
    """``90s``, ``15m``, ``8h`` or ``7d`` as a timedelta."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) <= 0:
        raise ConfigError(f"duration {text!r} must be a positive number with s, m, h or d, e.g. 8h")
    return dt.timedelta(seconds=int(number) * units[unit])


class JwksKeys:
    """The identity provider's public keys, from a JWKS file or an https URL (cached)."""

    def __init__(self, source: str, *, algorithms: tuple[str, ...]) -> None:
        self.source = source
        self.algorithms = algorithms
        self._client = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._lock = threading.Lock()
        if source.startswith("http://") and not is_loopback(urllib.parse.urlsplit(source).netloc):
            raise ConfigError(f"jwks {source!r}: fetch the identity provider's keys over https:// (plain http is "
                              "allowed for loopback only), or point to a file")
        if source.startswith(("https://", "http://")):
            self._client = jwt.PyJWKClient(source, cache_keys=True, lifespan=JWKS_URL_CACHE_SECONDS, timeout=5)
        else:
            self._keys = self._read_file(Path(source))

    def _read_file(self, path: Path) -> dict[str, jwt.PyJWK]:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            key_set = jwt.PyJWKSet.from_dict(document)
        except (OSError, ValueError, jwt.PyJWKSetError) as error:
            raise ConfigError(f"{path}: cannot read the identity provider's keys ({error})") from None
        usable = {key.key_id or "": key for key in key_set.keys if key.algorithm_name in self.algorithms}
        if not usable:
            raise ConfigError(f"{path}: no key for an allowed algorithm ({', '.join(self.algorithms)})")
        return usable

    def key_for(self, key_id: str | None) -> jwt.PyJWK:
        """The public key named by the token's ``kid`` (or the only key when the token names none)."""
        if self._client is not None:
            try:
                with self._lock:
                    key = self._client.get_signing_key(key_id) if key_id else None
            except jwt.PyJWTError:  # unreachable, or a key set that does not read: the key is not known
                key = None
            if key is None:
                raise AuthenticationError("the token's signing key is not known to the broker",
                                          reason="TOKEN_KEY_UNKNOWN")
        elif key_id is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        elif key_id in self._keys:
            key = self._keys[key_id]
        else:
            raise AuthenticationError("the token's signing key is not known to the broker", reason="TOKEN_KEY_UNKNOWN")
        if key.algorithm_name not in self.algorithms:
            raise AuthenticationError("the token's signing key uses an algorithm that is not allowed",
                                      reason="TOKEN_ALGORITHM_NOT_ALLOWED")
        return key


class JwtAuthenticator:
    """Verifies a bearer JWT and turns its claims into a :class:`Principal`."""

    def __init__(self, keys: JwksKeys, *, issuer: str, audience: str, leeway_seconds: float = 30.0,
                 binding: str = "none", clock: Callable[[], float] = time.time) -> None:
        """``clock`` gives the current time in seconds since the epoch (tests pass one they move); every
        lifetime check (``exp``, ``nbf``, ``iat``), on first use and on reuse, reads it and nothing else."""
        if not issuer or not audience:
            raise ConfigError("JWT verification needs jwt_issuer and jwt_audience")
        if binding not in BINDINGS:
            raise ConfigError(f"token_binding must be one of {', '.join(BINDINGS)}, not {binding!r}")
        self.keys = keys
        self.binding = binding
        self._verified: dict[str, tuple[dict, Principal]] = {}
        self._lock = threading.Lock()
        self.issuer = issuer
        self.audience = audience
        self.leeway = dt.timedelta(seconds=leeway_seconds)
        self.clock = clock

    def authenticate(self, token: str, *, certificate: PeerCertificate | None) -> Principal:
        """The caller named by ``token``; raises AuthenticationError with a reason saying what failed.

        ``certificate`` is the client certificate of the call (None without mutual TLS). A token
        that names a certificate (``cnf``) is accepted only with that certificate, whatever the
        binding setting; the setting makes binding required. A token verified once is kept (a
        bounded number of them) so that its signature is not checked again on every call; its
        lifetime is checked on every call all the same.
        """
        cached = self._verified.get(token)
        if cached is None:
            claims = self._verify(token)
            cached = (claims, principal_from_claims(claims))
            with self._lock:
                if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                    self._verified.pop(next(iter(self._verified)))
                self._verified[token] = cached
        else:
            self._check_lifetime(cached[0])
        claims, principal = cached
        self._check_binding(claims, principal, certificate)
        return principal

    def _check_lifetime(self, claims: dict) -> None:
        """``exp``, ``nbf`` and ``iat`` against the injected clock, with the leeway, as PyJWT would decide
        them; on first use and on every reuse of a kept token alike. Each must be a number."""
        for name in LIFETIME_CLAIMS:
            if name in claims and not _is_seconds(claims[name]):
                raise AuthenticationError(f"the token's {name!r} claim must be a number of seconds since 1970",
                                          reason="TOKEN_CLAIMS_INVALID", claim=name)
        now, leeway = self.clock(), self.leeway.total_seconds()
        if claims["exp"] <= now - leeway:
            raise AuthenticationError("the token has expired", reason="TOKEN_EXPIRED")
        if "nbf" in claims and claims["nbf"] > now + leeway:
            raise AuthenticationError("the token is not valid yet", reason="TOKEN_NOT_YET_VALID")
        if claims["iat"] > now + leeway:
            raise AuthenticationError("the token was issued in the future", reason="TOKEN_NOT_YET_VALID")

    def _verify(self, token: str) -> dict:
        header = _header(token)
        algorithm = header.get("alg")
        if algorithm not in self.keys.algorithms:
            raise AuthenticationError(f"the token's algorithm {str(algorithm)[:16]!r} is not allowed "
                                      f"(allowed: {', '.join(self.keys.algorithms)})",
                                      reason="TOKEN_ALGORITHM_NOT_ALLOWED")
        key = self.keys.key_for(header.get("kid"))  # text or absent: _header refused anything else
        try:
            # Lifetimes are checked by _check_lifetime with the injected clock: one clock for every check.
            claims = jwt.decode(token, key, algorithms=list(self.keys.algorithms), audience=self.audience,
                                issuer=self.issuer,
                                options={"require": list(REQUIRED_CLAIMS), "strict_aud": False,
                                         "verify_exp": False, "verify_nbf": False, "verify_iat": False})
        except jwt.InvalidAudienceError:
            raise AuthenticationError("the token is for another audience", reason="TOKEN_AUDIENCE_INVALID") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError("the token is from an untrusted issuer", reason="TOKEN_ISSUER_INVALID") from None
        except jwt.MissingRequiredClaimError as error:
            raise AuthenticationError(f"the token lacks the {error.claim!r} claim",
                                      reason="TOKEN_CLAIMS_MISSING", claim=error.claim) from None
        except jwt.InvalidAlgorithmError:
            raise AuthenticationError("the token's algorithm does not match its key",
                                      reason="TOKEN_ALGORITHM_NOT_ALLOWED") from None
        except jwt.InvalidTokenError:
            raise AuthenticationError("the token's signature does not verify", reason="TOKEN_INVALID") from None
        except _HOSTILE_INPUT_ERRORS:  # anything else PyJWT or cryptography refuses the token with
            raise AuthenticationError("the token is not a JWT this server can read", reason="TOKEN_MALFORMED") from None
        self._check_lifetime(claims)
        return claims

    def _check_binding(self, claims: dict, principal: Principal, certificate: PeerCertificate | None) -> None:
        bound = principal.certificate_thumbprint  # principal_from_claims refused every cnf but this one
        if bound and (certificate is None or bound != certificate.thumbprint):
            raise AuthenticationError("the token is bound to another client certificate",
                                      reason="TOKEN_CERTIFICATE_MISMATCH")
        if self.binding == "thumbprint" and not bound:
            raise AuthenticationError("tokens must be bound to the client certificate (cnf x5t#S256)",
                                      reason="TOKEN_CERTIFICATE_MISMATCH")
        if self.binding == "subject" and (certificate is None or certificate.common_name != principal.subject):
            raise AuthenticationError("the token's subject is not the client certificate's name",
                                      reason="TOKEN_CERTIFICATE_MISMATCH")


def principal_from_claims(claims: dict) -> Principal:
    """Check the caller claims (department, district, roles) and build the Principal."""
    missing = [name for name in CALLER_CLAIMS if not claims.get(name)]
    if missing:
        raise AuthenticationError(f"the token lacks the {missing[0]!r} claim", reason="TOKEN_CLAIMS_MISSING",
                                  claim=missing[0])
    roles = claims["roles"]
    if isinstance(roles, str):
        roles = roles.split()
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise AuthenticationError("the token's roles claim must be a list of names", reason="TOKEN_CLAIMS_INVALID",
                                  claim="roles")
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise AuthenticationError(f"the token names an unknown role {unknown[0][:32]!r}",
                                  reason="TOKEN_CLAIMS_INVALID", claim="roles")
    for name in ("sub", "department", "district"):
        if not isinstance(claims[name], str):
            raise AuthenticationError(f"the token's {name!r} claim must be text", reason="TOKEN_CLAIMS_INVALID",
                                      claim=name)
    return Principal(subject=claims["sub"], department=claims["department"], district=claims["district"],
                     roles=frozenset(roles), token_id=str(claims.get("jti", "")),
                     certificate_thumbprint=bound_thumbprint(claims))


def bound_thumbprint(claims: dict) -> str:
    """The certificate thumbprint the token is bound to (``cnf`` ``x5t#S256``), or "" for an unbound token.

    A token that carries ``cnf`` is held to it. The only confirmation this server can check is a
    certificate thumbprint, so any other (a DPoP key's ``jkt``, a ``jwk``, a thumbprint that is not
    text, a ``cnf`` that is not an object) is refused rather than ignored: ignoring it would make a
    token bound to a key its holder must prove into a bearer token anyone who holds it can use."""
    if "cnf" not in claims:
        return ""
    confirmation = claims["cnf"]
    if (not isinstance(confirmation, dict) or set(confirmation) != {CERTIFICATE_THUMBPRINT}
            or not isinstance(confirmation[CERTIFICATE_THUMBPRINT], str) or not confirmation[CERTIFICATE_THUMBPRINT]):
        raise AuthenticationError("the token is bound (cnf) by a confirmation this server cannot check; only a "
                                  "client certificate thumbprint (x5t#S256) is supported",
                                  reason="TOKEN_BINDING_UNSUPPORTED", claim="cnf")
    thumbprint: str = confirmation[CERTIFICATE_THUMBPRINT]
    return thumbprint


def _header(token: str) -> dict:
    """The token's JOSE header as PyJWT reads it; TOKEN_MALFORMED for anything it refuses to read (not
    three segments, bad base64 or JSON, a ``kid`` that is not text, a ``crit`` it does not support...)."""
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthenticationError(f"the token is longer than {MAX_TOKEN_CHARS} characters", reason="TOKEN_MALFORMED")
    try:
        return jwt.get_unverified_header(token)
    except _HOSTILE_INPUT_ERRORS:
        # PyJWT's message may quote the header (an extension's name): the caller's input is not echoed.
        raise AuthenticationError("the token is not a JWT whose header this server can read",
                                  reason="TOKEN_MALFORMED") from None


def _is_seconds(value: object) -> bool:
    """Whether a lifetime claim is a NumericDate: a number, not a boolean, finite (an integer of any size
    is; ``math.isfinite`` would overflow on one past a float's range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


class JwtSettings(Protocol):
    """The token settings both servers have (``dsbroker.settings.JWT_HELP``)."""

    @property
    def jwks(self) -> str: ...
    @property
    def jwt_issuer(self) -> str: ...
    @property
    def jwt_audience(self) -> str: ...
    @property
    def jwt_algorithms(self) -> tuple[str, ...]: ...
    @property
    def jwt_leeway_seconds(self) -> float: ...


def authenticator_from_settings(settings: JwtSettings, *, binding: str,
                                clock: Callable[[], float] = time.time) -> JwtAuthenticator:
    """The JwtAuthenticator that a server's jwks / jwt_* settings describe; ConfigError when incomplete.

    ``clock`` (seconds since the epoch) is what token lifetimes are checked against."""
    if not settings.jwks:
        raise ConfigError("set jwks to the identity provider's keys (a JWKS file or https:// URL); "
                          "'dsbroker keys init' makes a development one")
    unknown = [name for name in settings.jwt_algorithms if name not in ALLOWED_ALGORITHMS]
    if unknown or not settings.jwt_algorithms:
        raise ConfigError(f"jwt_algorithms must be a non-empty subset of {', '.join(ALLOWED_ALGORITHMS)}")
    return JwtAuthenticator(JwksKeys(settings.jwks, algorithms=tuple(settings.jwt_algorithms)),
                            issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                            leeway_seconds=settings.jwt_leeway_seconds, binding=binding, clock=clock)
