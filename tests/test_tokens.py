"""Caller tokens: every forged, stale or misdirected JWT is refused with the reason that names what failed."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.server
import json
import threading

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from dsbroker.errors import AuthenticationError, ConfigError
from broker.dev.keys import DEV_AUDIENCE, DEV_ISSUER, IDP_KEY_ID, load_private_key
from dsbroker.identity.tls import PeerCertificate
from dsbroker.identity.tokens import JwksKeys, JwtAuthenticator, issue_token, parse_duration
from tests.conftest import dev_keys

# A fixed moment: tokens are built against it and every authenticator's clock reads it, so no test
# depends on when (or how slowly) the suite reaches it.
NOW = dt.datetime(2026, 11, 21, 2, 0, tzinfo=dt.timezone.utc)
CERT = PeerCertificate(common_name="analyst", thumbprint="thumb-of-analyst")


class Clock:
    """Seconds since the epoch, as the test sets them."""

    def __init__(self, moment: dt.datetime = NOW) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now


def claims(**changes) -> dict:
    base = {"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "analyst", "department": "xuanwu-fgw",
            "district": "320102", "roles": ["requester"], "iat": NOW, "nbf": NOW, "exp": NOW + dt.timedelta(hours=1)}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict, key=None, *, algorithm: str = "EdDSA", kid: str | None = IDP_KEY_ID) -> str:
    key = key or load_private_key(dev_keys().idp_key)
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def authenticator(jwks: str | None = None, *, algorithms=("EdDSA", "ES256", "RS256"), binding: str = "none",
                  leeway: float = 30.0, clock=None) -> JwtAuthenticator:
    return JwtAuthenticator(JwksKeys(jwks or str(dev_keys().jwks), algorithms=tuple(algorithms)), issuer=DEV_ISSUER,
                            audience=DEV_AUDIENCE, leeway_seconds=leeway, binding=binding, clock=clock or Clock())


def refused(token: str, *, certificate=None, **kwargs) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as caught:
        authenticator(**kwargs).authenticate(token, certificate=certificate)
    return caught.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_valid_token_becomes_the_principal():
    principal = authenticator().authenticate(signed(claims(jti="t-1")), certificate=None)
    assert (principal.subject, principal.department, principal.district) == ("analyst", "xuanwu-fgw", "320102")
    assert principal.roles == {"requester"} and principal.token_id == "t-1"


def test_issued_development_tokens_verify():
    token = issue_token(load_private_key(dev_keys().idp_key), key_id=IDP_KEY_ID, issuer=DEV_ISSUER,
                        audience=DEV_AUDIENCE, subject="li", department="xuanwu-fgw", district="320102",
                        roles=["requester", "auditor"], ttl=dt.timedelta(minutes=5), now=NOW)
    assert authenticator().authenticate(token, certificate=None).roles == {"requester", "auditor"}


def test_alg_none_is_refused():
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": IDP_KEY_ID}).encode())
    body = b64(json.dumps(claims(iat=None, nbf=None, exp=int(NOW.timestamp()) + 3600)).encode())
    for token in (f"{header}.{body}.", f"{header}.{body}"):
        assert refused(token).reason in ("TOKEN_ALGORITHM_NOT_ALLOWED", "TOKEN_MALFORMED")


def test_hs256_signed_with_the_public_key_is_refused():
    # Algorithm confusion: an attacker "signs" with HMAC, using the published public key as the secret.
    public_pem = load_private_key(dev_keys().idp_key).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk_x = json.loads(dev_keys().jwks.read_text())["keys"][0]["x"].encode()
    body = b64(json.dumps(claims(iat=None, nbf=None, exp=int(NOW.timestamp()) + 3600)).encode())
    for secret in (public_pem, jwk_x):
        header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": IDP_KEY_ID}).encode())
        signature = b64(hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest())
        assert refused(f"{header}.{body}.{signature}").reason == "TOKEN_ALGORITHM_NOT_ALLOWED"


def test_a_token_signed_with_another_key_is_refused():
    assert refused(signed(claims(), ed25519.Ed25519PrivateKey.generate())).reason == "TOKEN_INVALID"


def test_an_unknown_key_id_is_refused():
    assert refused(signed(claims(), kid="someone-elses-key")).reason == "TOKEN_KEY_UNKNOWN"


def test_a_token_whose_alg_does_not_match_its_key_is_refused():
    # ES256 is allowed, but the key named by kid is an Ed25519 key.
    token = signed(claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    assert refused(token).reason == "TOKEN_ALGORITHM_NOT_ALLOWED"


@pytest.mark.parametrize("changes, reason", [
    ({"exp": NOW - dt.timedelta(minutes=5)}, "TOKEN_EXPIRED"),
    ({"nbf": NOW + dt.timedelta(minutes=30)}, "TOKEN_NOT_YET_VALID"),
    ({"aud": "another-service"}, "TOKEN_AUDIENCE_INVALID"),
    ({"iss": "https://evil.example"}, "TOKEN_ISSUER_INVALID"),
    ({"roles": ["requester", "superuser"]}, "TOKEN_CLAIMS_INVALID"),
    ({"roles": "requester"}, None),  # a space-separated string is accepted, as some identity providers send
    ({"district": 320102}, "TOKEN_CLAIMS_INVALID"),
])
def test_stale_misdirected_or_malformed_claims_are_refused(changes, reason):
    token = signed(claims(**changes))
    if reason is None:
        assert authenticator().authenticate(token, certificate=None).roles == {"requester"}
    else:
        assert refused(token).reason == reason


@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "exp", "iat", "department", "district", "roles"])
def test_each_missing_claim_is_named(claim):
    error = refused(signed({k: v for k, v in claims().items() if k != claim}))
    assert error.reason == "TOKEN_CLAIMS_MISSING" and error.metadata["claim"] == claim


def test_clock_skew_within_the_leeway_is_tolerated():
    token = signed(claims(exp=NOW - dt.timedelta(seconds=10)))
    assert authenticator(leeway=30).authenticate(token, certificate=None).subject == "analyst"
    assert refused(token, leeway=0).reason == "TOKEN_EXPIRED"
    early = signed(claims(nbf=NOW + dt.timedelta(seconds=10), iat=NOW + dt.timedelta(seconds=10)))
    assert authenticator(leeway=30).authenticate(early, certificate=None).subject == "analyst"
    assert refused(early, leeway=0).reason == "TOKEN_NOT_YET_VALID"


def test_every_lifetime_check_reads_the_injected_clock():
    # The same token, judged by three clocks: before its nbf, within its life, after its exp.
    token = signed(claims(iat=NOW, nbf=NOW, exp=NOW + dt.timedelta(hours=1)))
    assert refused(token, leeway=0, clock=Clock(NOW - dt.timedelta(minutes=1))).reason == "TOKEN_NOT_YET_VALID"
    assert authenticator(leeway=0).authenticate(token, certificate=None).subject == "analyst"
    assert refused(token, leeway=0, clock=Clock(NOW + dt.timedelta(hours=2))).reason == "TOKEN_EXPIRED"


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [str(int(NOW.timestamp()) + 3600), "soon", True, [1], {"t": 1}])
def test_a_lifetime_claim_that_is_not_a_number_is_refused_on_first_use_and_on_reuse(claim, value):
    verifier = authenticator()
    token = signed({**claims(), claim: value})
    for _ in range(2):  # the second call would find a kept token, if the first had kept it
        with pytest.raises(AuthenticationError) as caught:
            verifier.authenticate(token, certificate=None)
        assert (caught.value.reason, caught.value.metadata["claim"]) == ("TOKEN_CLAIMS_INVALID", claim)


def test_es256_and_rs256_identity_providers_are_accepted_and_the_allowlist_holds(tmp_path):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = {"keys": [
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec-1", "alg": "ES256"},
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa-1", "alg": "RS256"}]}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    assert authenticator(str(path)).authenticate(signed(claims(), ec_key, algorithm="ES256", kid="ec-1"),
                                                 certificate=None).subject == "analyst"
    assert authenticator(str(path)).authenticate(signed(claims(), rsa_key, algorithm="RS256", kid="rsa-1"),
                                                 certificate=None).subject == "analyst"
    rs256 = signed(claims(), rsa_key, algorithm="RS256", kid="rsa-1")
    assert refused(rs256, jwks=str(path), algorithms=("EdDSA", "ES256")).reason == "TOKEN_ALGORITHM_NOT_ALLOWED"


def test_a_symmetric_key_in_the_jwks_is_never_used(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "oct", "k": b64(b"s" * 32), "kid": "hmac", "alg": "HS256"}]}))
    with pytest.raises(ConfigError, match="no key for an allowed algorithm"):
        authenticator(str(path))


def test_jwks_from_a_url():
    body = dev_keys().jwks.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server interface
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/jwks.json"
        assert authenticator(url).authenticate(signed(claims()), certificate=None).subject == "analyst"
        assert refused(signed(claims(), kid="nope"), jwks=url).reason == "TOKEN_KEY_UNKNOWN"
    finally:
        server.shutdown()


def test_jwks_over_plain_http_is_refused_off_loopback():
    with pytest.raises(ConfigError, match="https://"):
        authenticator("http://idp.example.com/jwks.json")


def test_a_certificate_bound_token_works_only_with_its_certificate():
    token = signed(claims(cnf={"x5t#S256": CERT.thumbprint}))
    assert authenticator().authenticate(token, certificate=CERT).subject == "analyst"
    other = PeerCertificate(common_name="analyst", thumbprint="another-thumbprint")
    assert refused(token, certificate=other).reason == "TOKEN_CERTIFICATE_MISMATCH"
    assert refused(token, certificate=None).reason == "TOKEN_CERTIFICATE_MISMATCH"


def test_binding_settings_make_binding_required():
    unbound = signed(claims())
    assert refused(unbound, certificate=CERT, binding="thumbprint").reason == "TOKEN_CERTIFICATE_MISMATCH"
    assert authenticator(binding="subject").authenticate(unbound, certificate=CERT).subject == "analyst"
    stranger = PeerCertificate(common_name="someone-else", thumbprint="x")
    assert refused(unbound, certificate=stranger, binding="subject").reason == "TOKEN_CERTIFICATE_MISMATCH"
    assert refused(unbound, certificate=None, binding="subject").reason == "TOKEN_CERTIFICATE_MISMATCH"


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("8h", 28800), ("7d", 604800)])
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "8", "h", "-1h", "0m", "1.5h", "1w"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_a_kept_token_is_still_refused_once_it_expires():
    clock = Clock()
    verifier = authenticator(leeway=0, clock=clock)
    token = signed(claims(exp=NOW + dt.timedelta(seconds=60)))
    assert verifier.authenticate(token, certificate=None).subject == "analyst"
    clock.now += 61
    with pytest.raises(AuthenticationError) as caught:
        verifier.authenticate(token, certificate=None)
    assert caught.value.reason == "TOKEN_EXPIRED"


def test_a_kept_token_is_still_held_to_its_certificate():
    verifier = authenticator()
    token = signed(claims(cnf={"x5t#S256": CERT.thumbprint}))
    assert verifier.authenticate(token, certificate=CERT).subject == "analyst"
    with pytest.raises(AuthenticationError):
        verifier.authenticate(token, certificate=PeerCertificate("analyst", "stolen-elsewhere"))


# -- hostile input: every token PyJWT (or cryptography) refuses is a refusal with a reason -------------------

def made_up(header: bytes | dict, payload: bytes | dict | None = None, signature: bytes = bytes(64)) -> str:
    """A token an unauthenticated caller makes up: any header and payload bytes, a signature of zeros."""
    def encoded(part) -> str:
        return b64(part if isinstance(part, bytes) else json.dumps(part).encode())
    return f"{encoded(header)}.{encoded(payload if payload is not None else {'sub': 'x'})}.{b64(signature)}"


def raw_signed(payload: dict) -> str:
    """A token the identity provider's key really signed over ``payload`` as given (PyJWT's encode refuses
    some of these claims; an identity provider, or a stolen key, need not)."""
    key = load_private_key(dev_keys().idp_key)
    head = b64(json.dumps({"alg": "EdDSA", "kid": IDP_KEY_ID}).encode())
    body = b64(json.dumps({k: int(v.timestamp()) if isinstance(v, dt.datetime) else v
                           for k, v in payload.items()}).encode())
    return f"{head}.{body}.{b64(key.sign(f'{head}.{body}'.encode()))}"


MALFORMED_TOKENS = {
    "crit names an unsupported extension": made_up({"alg": "EdDSA", "kid": IDP_KEY_ID, "crit": ["x-attack"]}),
    "crit is not a list": made_up({"alg": "EdDSA", "kid": IDP_KEY_ID, "crit": "exp"}),
    "crit names one the header lacks": made_up({"alg": "EdDSA", "kid": IDP_KEY_ID, "crit": ["b64"]}),
    "kid is a number": made_up({"alg": "EdDSA", "kid": 7}),
    "kid is a list": made_up({"alg": "EdDSA", "kid": [IDP_KEY_ID]}),
    "kid is an object": made_up({"alg": "EdDSA", "kid": {"id": IDP_KEY_ID}}),
    "header nested past the recursion limit": made_up(b"[" * 50_000 + b"]" * 50_000),
    "header with a number past the digit limit": made_up(b'{"alg":"EdDSA","n":' + b"9" * 5000 + b"}"),
    "header not UTF-8": made_up(b'\xff\xfe{"alg":"EdDSA"}'),
    "header not an object": made_up(b'"EdDSA"'),
    "not base64": "@@@.@@@.@@@",
    "two segments": "e30.e30",
    "longer than any JWT": made_up({"alg": "EdDSA", "kid": IDP_KEY_ID, "pad": "x" * 20_000}),
}


@pytest.mark.parametrize("token", MALFORMED_TOKENS.values(), ids=MALFORMED_TOKENS.keys())
def test_a_token_pyjwt_refuses_to_read_is_malformed_never_an_exception(token):
    assert refused(token).reason == "TOKEN_MALFORMED"


def test_a_token_with_a_detached_payload_is_refused_as_unverifiable():
    # The header reads (b64 false, declared critical); no payload comes with it, so no signature verifies.
    token = made_up({"alg": "EdDSA", "kid": IDP_KEY_ID, "crit": ["b64"], "b64": False}, b"")
    assert refused(token).reason == "TOKEN_INVALID"


@pytest.mark.parametrize("claim, value, reason", [
    ("exp", 10 ** 400, None),  # an integer past a float's range is still a number of seconds (far away)
    ("nbf", 10 ** 400, "TOKEN_NOT_YET_VALID"),
    ("iat", 10 ** 400, "TOKEN_NOT_YET_VALID"),
    ("exp", -10 ** 400, "TOKEN_EXPIRED"),
])
def test_lifetimes_past_a_floats_range_are_compared_not_overflowed(claim, value, reason):
    token = raw_signed(claims(**{claim: value}))
    if reason is None:
        assert authenticator().authenticate(token, certificate=None).subject == "analyst"
    else:
        assert refused(token).reason == reason


UNCHECKABLE_CONFIRMATIONS = {
    "a DPoP key thumbprint": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
    "a JWK": {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}},
    "a null thumbprint": {"x5t#S256": None},
    "an empty thumbprint": {"x5t#S256": ""},
    "a thumbprint that is a list": {"x5t#S256": [CERT.thumbprint]},
    "a thumbprint and a DPoP key": {"x5t#S256": CERT.thumbprint, "jkt": "0ZcOCORZNYy"},
    "an empty object": {},
    "text": "bound",
    "a list": [CERT.thumbprint],
    "null": None,
}


@pytest.mark.parametrize("cnf", UNCHECKABLE_CONFIRMATIONS.values(), ids=UNCHECKABLE_CONFIRMATIONS.keys())
def test_a_token_bound_by_a_confirmation_the_server_cannot_check_is_refused(cnf):
    # Held to what it carries: neither ignored (a bearer token) nor matched loosely, with or without a certificate.
    token = raw_signed({**claims(), "cnf": cnf})
    assert refused(token, certificate=CERT).reason == "TOKEN_BINDING_UNSUPPORTED"
    assert refused(token, certificate=None).reason == "TOKEN_BINDING_UNSUPPORTED"
