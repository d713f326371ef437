"""Transport security: server and channel credentials, and who is on the other end of a call.

A server either serves TLS (mutual when a client CA is configured) or, when configured to, plaintext
on a loopback address. Clients do the same. Nothing here decides *whether* a caller may do
something; it only says which certificate they presented.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import ipaddress
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from dsbroker.errors import ConfigError

# A client certificate is one or two KB; a forwarded one larger than this is refused before it is read.
MAX_FORWARDED_CERTIFICATE_BYTES = 16 * 1024
VERIFIED_CERTIFICATES = 1024  # validated certificate paths kept, the least recently used dropped first


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate and key, and the CA whose client certificates it requires (if any)."""

    cert: str
    key: str
    client_ca: str = ""

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials; client certificates are required when ``client_ca`` is set."""
        return grpc.ssl_server_credentials(
            [(_read(self.key, "TLS key"), _read(self.cert, "TLS certificate"))],
            root_certificates=_read(self.client_ca, "client CA") if self.client_ca else None,
            require_client_auth=bool(self.client_ca))


@dataclass(frozen=True)
class ClientTls:
    """The CA a client trusts for the server, and its own certificate and key for mutual TLS."""

    ca: str
    cert: str = ""
    key: str = ""
    server_name: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ConfigError("a client certificate needs its key, and a key its certificate")

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials (with the client certificate when one is set)."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "CA certificate"),
            private_key=_read(self.key, "client key") if self.key else None,
            certificate_chain=_read(self.cert, "client certificate") if self.cert else None)


def open_channel(target: str, *, tls: ClientTls | None, options: list[tuple[str, object]]) -> grpc.Channel:
    """A channel to ``target``: TLS when ``tls`` is given, otherwise plaintext, allowed to loopback only."""
    if tls is None:
        require_loopback(target, "a plaintext channel")
        return grpc.insecure_channel(target, options=options)
    if tls.server_name:
        options = [*options, ("grpc.ssl_target_name_override", tls.server_name)]
    return grpc.secure_channel(target, tls.credentials(), options=options)


def is_loopback(address: str) -> bool:
    """Whether HOST:PORT names the loopback interface."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback(address: str, what: str) -> None:
    """Refuse plaintext to or from an address that is not on the loopback interface."""
    if not is_loopback(address):
        raise ConfigError(f"{what} is plaintext gRPC, which is allowed on loopback addresses only, not "
                          f"{address!r}; configure TLS")


@dataclass(frozen=True)
class PeerCertificate:
    """The client certificate of the current call: its common name, RFC 8705 thumbprint and DER bytes."""

    common_name: str
    thumbprint: str
    der: bytes = field(default=b"", repr=False, compare=False)


def peer_certificate(context: grpc.ServicerContext) -> PeerCertificate | None:
    """The verified client certificate of this call, or None over plaintext or server-only TLS."""
    pem = (context.auth_context().get("x509_pem_cert") or [b""])[0]
    return _peer_from_pem(pem) if pem else None


@functools.lru_cache(maxsize=1024)
def _peer_from_pem(pem: bytes) -> PeerCertificate:
    return _peer(x509.load_pem_x509_certificate(pem))


def certificate_from_der(der: bytes) -> PeerCertificate:
    """A certificate another party forwarded (DER); ValueError when it is not one or is larger than
    :data:`MAX_FORWARDED_CERTIFICATE_BYTES`. Not cached: what another party sends is kept only once it
    verifies (:meth:`CertificateAuthorities.certifies` keeps the digests of the paths it validated)."""
    if len(der) > MAX_FORWARDED_CERTIFICATE_BYTES:
        raise ValueError("the certificate is larger than any client certificate")
    return _peer(x509.load_der_x509_certificate(der))


def _peer(certificate: x509.Certificate) -> PeerCertificate:
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return PeerCertificate(common_name=str(names[0].value) if names else "", thumbprint=thumbprint(certificate),
                           der=certificate.public_bytes(Encoding.DER))


class CertificateAuthorities:
    """The CAs whose client certificates a party accepts when a certificate reaches it second hand.

    A TLS server checks its peer's chain in the handshake; the sandbox sees the requester's
    certificate only as bytes the broker forwards, so it checks the chain itself (RFC 5280 path
    validation for a TLS client certificate: issuer, validity, extended key usage clientAuth).
    """

    def __init__(self, path: str | Path) -> None:
        try:
            self.certificates = x509.load_pem_x509_certificates(Path(path).read_bytes())
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read the CA certificates {str(path)!r} ({error.__class__.__name__})") from None
        self._store = Store(self.certificates)
        # Certificates whose path validated, by DER digest, with the window in which the whole path is
        # valid: the same requester sends many plans, and a path valid once stays valid inside it.
        self._verified: OrderedDict[bytes, tuple[dt.datetime, dt.datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def certifies(self, certificate: PeerCertificate, now: dt.datetime | None = None) -> bool:
        """Whether ``certificate`` is a client certificate issued under these CAs and valid at ``now``."""
        now = now or dt.datetime.now(dt.timezone.utc)
        digest = hashlib.sha256(certificate.der).digest()
        with self._lock:
            window = self._verified.get(digest)
            if window is not None:
                self._verified.move_to_end(digest)
        if window is not None and window[0] <= now <= window[1]:
            return True
        verifier = PolicyBuilder().store(self._store).time(now).build_client_verifier()
        try:
            verified = verifier.verify(x509.load_der_x509_certificate(certificate.der), [])
        except (VerificationError, ValueError):
            return False
        window = (max(c.not_valid_before_utc for c in verified.chain),
                  min(c.not_valid_after_utc for c in verified.chain))
        with self._lock:
            self._verified[digest] = window
            while len(self._verified) > VERIFIED_CERTIFICATES:
                self._verified.popitem(last=False)
        return True


def thumbprint(certificate: x509.Certificate) -> str:
    """The base64url SHA-256 of the certificate's DER form (RFC 8705 ``x5t#S256``)."""
    digest = hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read the {what} {path!r} ({error.strerror})") from None

