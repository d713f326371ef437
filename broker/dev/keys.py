"""Development key material: two certificate authorities, server and client certificates, and an
identity provider's signing key with its JWKS.

The layout mirrors who trusts whom in production:

- the **platform CA** (the exchange platform that runs the broker) issues the broker's server
  certificate and the client certificates of departments, reviewers, owners and auditors;
- the **owner CA** (the data owner) issues the sandbox's server certificate and the one client
  certificate the broker uses to reach the sandbox, so a department's certificate opens nothing
  at the sandbox;
- the **identity provider key** (Ed25519) signs callers' JWTs; its public half is ``jwks.json``;
- the **signers' keys** (Ed25519) of the district reviewer and the city owner sign policies; the
  sandbox trusts their public halves through ``trust.yaml``.

Everything here uses ``cryptography``; every file (keys, certificates, the JWKS and the trust file)
is written with mode 0600, whatever the umask: the directory is the owner's, not the world's.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dsbroker.errors import ConfigError
from dsbroker.private_files import load_private_key, write_private, write_private_key
from dsbroker.policy.signing import sign_policy, trust_document

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
CERT_DAYS = 365
CA_DAYS = 3650
IDP_KEY_ID = "dev-idp-1"
DEV_ISSUER = "dsbroker-dev-idp"
DEV_AUDIENCE = "dsbroker"
# Who signs policies in development: the district tax bureau reviews, the city tax bureau owns.
DEV_SIGNERS = (("xuanwu-tax", "reviewer"), ("city-tax", "owner"))


@dataclass(frozen=True)
class KeyLayout:
    """Where each file lives under a keys directory."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def platform_ca(self) -> Path:
        return self.root / "platform-ca.pem"

    @property
    def owner_ca(self) -> Path:
        return self.root / "owner-ca.pem"

    @property
    def broker_cert(self) -> Path:
        return self.root / "broker.pem"

    @property
    def broker_key(self) -> Path:
        return self.root / "broker.key"

    @property
    def sandbox_cert(self) -> Path:
        return self.root / "sandbox.pem"

    @property
    def sandbox_key(self) -> Path:
        return self.root / "sandbox.key"

    @property
    def broker_to_sandbox_cert(self) -> Path:
        return self.root / "broker-to-sandbox.pem"

    @property
    def broker_to_sandbox_key(self) -> Path:
        return self.root / "broker-to-sandbox.key"

    @property
    def idp_key(self) -> Path:
        return self.root / "idp" / "signing.key"

    @property
    def jwks(self) -> Path:
        return self.root / "idp" / "jwks.json"

    @property
    def trust(self) -> Path:
        return self.root / "trust.yaml"

    def signer_key(self, name: str) -> Path:
        return self.root / "signing" / f"{name}.key"

    def client_cert(self, name: str) -> Path:
        return self.root / "clients" / f"{name}.pem"

    def client_key(self, name: str) -> Path:
        return self.root / "clients" / f"{name}.key"

    def ca_key(self, ca_cert: Path) -> Path:
        return ca_cert.with_suffix(".key")


def init_keys(root: str | Path, *, hosts: tuple[str, ...] = DEFAULT_HOSTS, clients: tuple[str, ...] = (),
              force: bool = False, now: dt.datetime | None = None) -> KeyLayout:
    """Create development CAs, server and client certificates and an identity provider key under ``root``.

    Refuses to overwrite an existing layout unless ``force``.
    """
    layout = KeyLayout(Path(root))
    if layout.platform_ca.exists() and not force:
        raise ConfigError(f"{layout.root} already holds keys; pass --force to replace them "
                          "(tokens and certificates issued from the old keys stop working)")
    now = now or dt.datetime.now(dt.timezone.utc)
    hosts = tuple(dict.fromkeys((*DEFAULT_HOSTS, *hosts)))
    (layout.root / "clients").mkdir(parents=True, exist_ok=True)
    (layout.root / "idp").mkdir(parents=True, exist_ok=True)

    platform = _make_ca("dsbroker development platform CA", layout.platform_ca, now)
    owner = _make_ca("dsbroker development data owner CA", layout.owner_ca, now)
    _issue(platform, "broker", layout.broker_cert, layout.broker_key, now, hosts=hosts, server=True)
    _issue(owner, "sandbox", layout.sandbox_cert, layout.sandbox_key, now, hosts=hosts, server=True)
    _issue(owner, "broker", layout.broker_to_sandbox_cert, layout.broker_to_sandbox_key, now)
    for name in clients:
        issue_client_certificate(layout, name, now=now)

    idp_key = ed25519.Ed25519PrivateKey.generate()
    write_private_key(layout.idp_key, idp_key)
    write_private(layout.jwks, json.dumps(public_jwks(idp_key.public_key(), IDP_KEY_ID), indent=2) + "\n")

    trusted = []
    for name, role in DEV_SIGNERS:
        signer = ed25519.Ed25519PrivateKey.generate()
        write_private_key(layout.signer_key(name), signer)
        trusted.append((signer_key_id(name), role, name, signer.public_key()))
    write_private(layout.trust, trust_document(trusted))
    return layout


def signer_key_id(name: str) -> str:
    """The key id of a development signer's key."""
    return f"{name}-1"


def approve_for_development(layout: KeyLayout, text: str) -> str:
    """``text`` signed by each development signer in turn: the district reviewer, then the city owner."""
    for name, _role in DEV_SIGNERS:
        text = sign_as(layout, text, name)
    return text


def sign_as(layout: KeyLayout, text: str, name: str) -> str:
    """``text`` with one more approval, signed by development signer ``name`` (see DEV_SIGNERS)."""
    role = dict(DEV_SIGNERS)[name]
    return sign_policy(text, load_private_key(layout.signer_key(name)), key_id=signer_key_id(name), role=role,
                       by=name)


def issue_client_certificate(layout: KeyLayout, name: str, *, now: dt.datetime | None = None) -> tuple[Path, Path]:
    """Issue a client certificate (CN = ``name``) from the platform CA; returns (certificate, key) paths."""
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ConfigError(f"client name {name!r} must be a plain name such as analyst-li")
    if not layout.platform_ca.exists():
        raise ConfigError(f"{layout.root} holds no platform CA; run 'dsbroker keys init' first")
    ca = _load_ca(layout.platform_ca, layout.ca_key(layout.platform_ca))
    (layout.root / "clients").mkdir(parents=True, exist_ok=True)
    _issue(ca, name, layout.client_cert(name), layout.client_key(name), now or dt.datetime.now(dt.timezone.utc))
    return layout.client_cert(name), layout.client_key(name)


def public_jwks(public_key: ed25519.Ed25519PublicKey, key_id: str) -> dict:
    """A JWKS holding one Ed25519 public key (RFC 8037)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": key_id, "alg": "EdDSA", "use": "sig"}]}


def broker_settings(layout: KeyLayout, *, token_binding: str = "none") -> dict[str, str]:
    """The broker settings that use this layout: mutual TLS both ways, and the development identity provider."""
    return {"tls_cert": str(layout.broker_cert), "tls_key": str(layout.broker_key),
            "tls_client_ca": str(layout.platform_ca), "jwks": str(layout.jwks), "jwt_issuer": DEV_ISSUER,
            "jwt_audience": DEV_AUDIENCE, "token_binding": token_binding,
            "sandbox_ca": str(layout.owner_ca), "sandbox_cert": str(layout.broker_to_sandbox_cert),
            "sandbox_key": str(layout.broker_to_sandbox_key), "trust": str(layout.trust)}


def sandbox_settings(layout: KeyLayout) -> dict[str, str]:
    """The sandbox settings that use this layout: its certificate, only the broker's certificate as a client, and
    the platform CA as the CA of the requesters' certificates the broker forwards in plans."""
    return {"tls_cert": str(layout.sandbox_cert), "tls_key": str(layout.sandbox_key),
            "tls_client_ca": str(layout.owner_ca), "trust": str(layout.trust), "jwks": str(layout.jwks),
            "jwt_issuer": DEV_ISSUER, "jwt_audience": DEV_AUDIENCE, "requester_ca": str(layout.platform_ca)}


def to_toml(settings: dict[str, object]) -> str:
    """Render flat settings (text, numbers, booleans, lists of text, tables of text as inline tables) as TOML."""
    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(item) for item in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(str(k))} = {value(item)}" for k, item in v.items()) + " }"
        return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a valid TOML basic string
    return "".join(f"{key} = {value(v)}\n" for key, v in settings.items())


@dataclass(frozen=True)
class _Authority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _make_ca(common_name: str, cert_path: Path, now: dt.datetime) -> _Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dsbroker development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256()))
    write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    write_private_key(cert_path.with_suffix(".key"), key)
    return _Authority(certificate, key)


def _load_ca(cert_path: Path, key_path: Path) -> _Authority:
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{cert_path}: cannot read the CA certificate ({error.__class__.__name__})") from None
    return _Authority(certificate, load_private_key(key_path))


def _issue(ca: _Authority, common_name: str, cert_path: Path, key_path: Path, now: dt.datetime, *,
           hosts: tuple[str, ...] = (), server: bool = False) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dsbroker development"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False))
    names: list[x509.GeneralName] = [_general_name(host) for host in hosts] or [x509.DNSName(common_name)]
    builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    certificate = builder.sign(ca.key, hashes.SHA256())
    write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    write_private_key(key_path, key)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
