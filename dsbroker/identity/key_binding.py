"""The requester's signature that binds its encryption key to its query, made by the SDK and checked by the sandbox.

In encrypted mode the query carries the requester's public BFV context; without a binding a broker
could put its own context in the plan and read the cells. So the requester signs, with the private
key of its mutual-TLS client certificate (which only it holds), the key id together with what the
query is: the grant, the SHA-256 of its SQL and the SHA-256 of its bearer token. The sandbox checks
the signature with the certificate the plan carries, and that this certificate is the caller's (the
token's ``cnf`` thumbprint, or its subject under a certificate from the requester CA).

A signature rather than a token claim: identity providers know nothing of BFV keys (a claim would
need the provider to issue a token per key), while every requester already holds its certificate's
key, and the platform CA already vouches for whose it is. Binding the token's hash ties the key to
one caller's session; binding the SQL stops the signature being reused for another query.
"""

from __future__ import annotations

import hashlib
import json

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

BINDING_CONTEXT = b"dsbroker-encryption-key-binding-v1\n"


def binding_message(*, key_id: str, grant: str, sql: str, token: str) -> bytes:
    """The bytes the requester signs for one encrypted query."""
    body = {"grant": grant, "key_id": key_id, "sql_sha256": _sha256(sql), "token_sha256": _sha256(token)}
    return BINDING_CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_key_binding(private_key: PrivateKeyTypes, *, key_id: str, grant: str, sql: str, token: str) -> bytes:
    """Sign the binding with a client certificate's private key (EC: ECDSA SHA-256; RSA: PKCS#1 v1.5; Ed25519)."""
    message = binding_message(key_id=key_id, grant=grant, sql=sql, token=token)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(message, ec.ECDSA(hashes.SHA256()))
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(message)
    raise TypeError(f"cannot sign with a {type(private_key).__name__}")


def verify_key_binding(certificate_der: bytes, signature: bytes, *, key_id: str, grant: str, sql: str,
                       token: str) -> bool:
    """Whether ``signature`` is the binding signed by the key of the certificate ``certificate_der``."""
    message = binding_message(key_id=key_id, grant=grant, sql=sql, token=token)
    try:
        public_key = x509.load_der_x509_certificate(certificate_der).public_key()
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, message)
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
