"""Settings for both servers, declared in one place each and loaded from TOML plus flags.

Each setting is a dataclass field whose ``metadata["help"]`` documents it; the
README's configuration tables are checked against these by a test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from broker.errors import ConfigError
from broker.tokens import ALLOWED_ALGORITHMS

MiB = 1024 * 1024
T = TypeVar("T")


def setting(default: Any, help: str) -> Any:
    """Declare one setting with its default and its documentation."""
    return field(default=default, metadata={"help": help})


TRANSPORT_HELP = {
    "plaintext": "serve plaintext gRPC instead of TLS; allowed on loopback addresses only, for development",
    "tls_cert": "PEM certificate the server presents",
    "tls_key": "PEM private key of tls_cert",
}


JWT_HELP = {
    "jwks": "the identity provider's public keys: a JWKS file or an https:// URL (required)",
    "jwt_issuer": "the identity provider's issuer (the tokens' iss; required)",
    "jwt_audience": "the audience tokens must name (aud)",
    "jwt_algorithms": "signature algorithms accepted; a subset of EdDSA, ES256, RS256",
    "jwt_leeway_seconds": "clock skew tolerated on exp and nbf",
}


@dataclass(frozen=True)
class SandboxSettings:
    """Settings of ``dsbroker sandbox serve`` (the owner side)."""

    listen: str = setting("127.0.0.1:50061", "address to serve gRPC on")
    plaintext: bool = setting(False, TRANSPORT_HELP["plaintext"])
    tls_cert: str = setting("", TRANSPORT_HELP["tls_cert"])
    tls_key: str = setting("", TRANSPORT_HELP["tls_key"])
    tls_client_ca: str = setting("", "PEM CA whose client certificates may call the sandbox (the broker's); "
                                     "required with TLS")
    reflection: bool = setting(False, "serve gRPC reflection (for grpcurl in development)")
    trust: str = setting("", "the owner's trust file: keys whose signatures on a policy the sandbox accepts, "
                             "and the roles every policy needs (required)")
    owner_timezone: str = setting("Asia/Shanghai", "time zone of the owner's day, for policies' validity dates")
    jwks: str = setting("", JWT_HELP["jwks"] + "; the sandbox verifies the caller's token each plan carries")
    jwt_issuer: str = setting("", JWT_HELP["jwt_issuer"])
    jwt_audience: str = setting("dsbroker", JWT_HELP["jwt_audience"])
    jwt_algorithms: tuple[str, ...] = setting(ALLOWED_ALGORITHMS, JWT_HELP["jwt_algorithms"])
    jwt_leeway_seconds: float = setting(30.0, JWT_HELP["jwt_leeway_seconds"])
    token_binding: str = setting("none", "hold each plan's token to the requester's certificate the broker "
                                         "forwards: 'none', 'subject' (sub equals its CN) or 'thumbprint' (cnf "
                                         "x5t#S256 required); a token that carries cnf is always held to it")
    requester_ca: str = setting("", "PEM CA(s) of requesters' client certificates (the platform CA): a plan's "
                                    "forwarded certificate must be a valid client certificate under them; needed "
                                    "for encrypted queries with tokens that are not certificate-bound")
    policy_ledger: str = setting("", "SQLite file where the sandbox keeps the owner's revocations and the newest "
                                     "version of each policy it has seen; empty: beside the data file, "
                                     "<data>.policies.sqlite")
    statements: str = setting("", "a directory of the owner's own: revocation files (*.json, one statement a "
                                  "line) and signed policy documents (*.yaml), read at start and when they change")
    data: str = setting("", "path of the DuckDB data file, opened read-only")
    datasets: tuple[str, ...] = setting((), "tables served and listed, as schema.table (required: the sandbox "
                                            "serves no table it is not told to)")
    catalog: str = setting("", "the owner's catalog YAML describing the datasets (metadata only); empty uses "
                               "<data name>.catalog.yaml beside the data file when it exists")
    privacy_ledger: str = setting("", "SQLite file where the sandbox keeps what noise policies spent and their "
                                     "answers; empty: beside the data file, <data>.privacy.sqlite")
    execution_ledger: str = setting("", "SQLite file where the sandbox records every plan before running it, for "
                                        "auditors to reconcile with the broker's log; empty: beside the data "
                                        "file, <data>.executions.sqlite")
    sandbox_id: str = setting("", "this sandbox's name in the execution ledger and the broker's log; empty: "
                                  "<host name>:<data file name>")
    broker_log_keys: tuple[str, ...] = setting((), "the broker's access-log public keys (PEM, access-log.pub; one "
                                                   "per broker writing the log) whose checkpoints this sandbox "
                                                   "witnesses in its execution ledger; empty: it witnesses none")
    witness_key: str = setting("", "Ed25519 private key (PEM) with which the sandbox countersigns the checkpoints it "
                                   "witnesses; created (mode 0600) on first start with its public half (.pub) "
                                   "beside it; empty: beside the execution ledger, <ledger>.witness.key")
    memory_limit: str = setting("2GB", "DuckDB memory limit")
    threads: int = setting(2, "DuckDB worker threads")
    pool_size: int = setting(4, "pooled engine connections (concurrent queries)")
    max_execution_seconds: float = setting(120.0, "hard ceiling on one query's run time, whatever the deadline")
    max_rows: int = setting(10_000, "most rows one plan may return")
    max_message_bytes: int = setting(64 * MiB, "largest gRPC message sent or received")
    max_workers: int = setting(8, "gRPC worker threads")
    max_concurrent_rpcs: int = setting(32, "calls in flight before new ones get RESOURCE_EXHAUSTED")
    grace_seconds: float = setting(5.0, "time running calls get to finish on SIGTERM")


@dataclass(frozen=True)
class BrokerSettings:
    """Settings of ``dsbroker serve`` (the broker)."""

    listen: str = setting("127.0.0.1:50051", "address to serve gRPC on")
    plaintext: bool = setting(False, TRANSPORT_HELP["plaintext"])
    tls_cert: str = setting("", TRANSPORT_HELP["tls_cert"])
    tls_key: str = setting("", TRANSPORT_HELP["tls_key"])
    tls_client_ca: str = setting("", "PEM CA of client certificates; when set, every client must present one")
    jwks: str = setting("", JWT_HELP["jwks"])
    jwt_issuer: str = setting("", JWT_HELP["jwt_issuer"])
    jwt_audience: str = setting("dsbroker", JWT_HELP["jwt_audience"])
    jwt_algorithms: tuple[str, ...] = setting(ALLOWED_ALGORITHMS, JWT_HELP["jwt_algorithms"])
    jwt_leeway_seconds: float = setting(30.0, JWT_HELP["jwt_leeway_seconds"])
    token_binding: str = setting("none", "bind tokens to client certificates: 'none', 'subject' (sub equals the "
                                         "certificate's CN) or 'thumbprint' (RFC 8705 cnf x5t#S256 required)")
    policies: str = setting("policies", "directory of policy (grant) YAML files")
    owner_timezone: str = setting("Asia/Shanghai", "time zone of the owner's day: validity dates and daily quotas")
    access_log: str = setting("state/access-log.sqlite", "where the access log lives: a SQLite file, or a "
                                                         "postgresql:// DSN")
    access_log_key: str = setting("", "Ed25519 private key (PEM) that signs the access log's checkpoints; created "
                                      "if missing, with its public half (.pub) beside it for auditors to pin; "
                                      "empty: beside a SQLite log as <log>.key, else state/access-log.key")
    access_log_peer_keys: tuple[str, ...] = setting((), "public keys (PEM) of the other brokers that write the same "
                                                         "access log; the broker extends a chain whose last record "
                                                         "is sealed by its own key or one of these, and refuses "
                                                         "(ACCESS_LOG_TAMPERED) otherwise")
    access_log_sql_bytes: int = setting(16 * 1024, "most bytes of each SQL text (original and rewritten) an access "
                                                   "record stores; longer text is cut and marked, and its SHA-256 "
                                                   "and length are of the whole")
    checkpoint_every: int = setting(1000, "sign a checkpoint of the access log after this many records")
    checkpoint_seconds: float = setting(60.0, "sign a checkpoint at least this often while records arrive")
    store: str = setting("state/broker-state.sqlite", "where requests, policies and their states live: a SQLite "
                                                      "file, or a postgresql:// DSN for several broker replicas")
    trust: str = setting("", "the owner's trust file (public keys only), to check approvals as they arrive; "
                             "without it approvals are refused")
    sandbox: str = setting("127.0.0.1:50061", "address of the owner's sandbox")
    sandbox_plaintext: bool = setting(False, "reach the sandbox over plaintext (loopback only, development)")
    sandbox_ca: str = setting("", "PEM CA that issued the sandbox's certificate")
    sandbox_cert: str = setting("", "PEM client certificate the broker presents to the sandbox")
    sandbox_key: str = setting("", "PEM private key of sandbox_cert")
    sandbox_server_name: str = setting("", "expected name in the sandbox's certificate, when not its host")
    partitions: tuple[str, ...] = setting((), "sandboxes holding partitions of a dataset, as SANDBOX_ID=HOST:PORT "
                                              "(the id each sandbox is configured with); reached like the sandbox, "
                                              "with the same certificates, for policies that name partitions")
    reflection: bool = setting(False, "serve gRPC reflection (for grpcurl in development)")
    max_message_bytes: int = setting(64 * MiB, "largest gRPC message sent or received (encrypted results: about "
                                                "0.5 MiB per measure, and the requester's 0.5 MiB public key)")
    max_workers: int = setting(16, "gRPC worker threads")
    max_concurrent_rpcs: int = setting(64, "calls in flight before new ones get RESOURCE_EXHAUSTED")
    max_calls_per_caller: int = setting(8, "calls one caller (token subject) may have in flight")
    max_refusals_per_client: int = setting(10, "refused calls a second recorded one by one per client "
                                               "certificate (or address without mutual TLS); past it, "
                                               "RESOURCE_EXHAUSTED and one record a second counting them")
    grace_seconds: float = setting(5.0, "time running calls get to finish on SIGTERM")


def access_log_key_path(settings: "BrokerSettings") -> Path:
    """Where the broker's checkpoint key is: as configured, or beside a SQLite log, or under state/."""
    if settings.access_log_key:
        return Path(settings.access_log_key)
    if "://" in settings.access_log:
        return Path("state/access-log.key")
    return Path(settings.access_log).with_suffix(".key")


def load_settings(cls: type[T], path: str | Path | None = None, **overrides: Any) -> T:
    """Build ``cls`` from a TOML file (optional) and flag overrides (None means not given)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"{path}: cannot read configuration ({error})") from None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            raise ConfigError(f"{path}: unknown setting {key!r} (known: {', '.join(sorted(fields))})")
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key, value in list(values.items()):
        default = fields[key].default
        if isinstance(default, tuple) and isinstance(value, (list, tuple)):
            values[key] = tuple(value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        elif type(value) is not type(default):
            raise ConfigError(f"setting {key!r} must be {type(default).__name__}, not {type(value).__name__}")
    return cls(**values)


def owner_timezone(name: str) -> dt.tzinfo:
    """The owner's time zone by IANA name (e.g. Asia/Shanghai); ConfigError when unknown."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"owner_timezone {name!r} is not a known time zone") from None
