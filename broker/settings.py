"""Settings of ``dsbroker serve`` (the broker): each a field with its help, loaded by dsbroker.settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dsbroker.identity.tokens import ALLOWED_ALGORITHMS
from dsbroker.settings import JWT_HELP, OPERATIONS_HELP, MiB, TRANSPORT_HELP, setting


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
    metrics_listen: str = setting("", OPERATIONS_HELP["metrics_listen"])
    health_listen: str = setting("", OPERATIONS_HELP["health_listen"])
    request_log: bool = setting(True, OPERATIONS_HELP["request_log"])


def access_log_key_path(settings: BrokerSettings) -> Path:
    """Where the broker's checkpoint key is: as configured, or beside a SQLite log, or under state/."""
    if settings.access_log_key:
        return Path(settings.access_log_key)
    if "://" in settings.access_log:
        return Path("state/access-log.key")
    return Path(settings.access_log).with_suffix(".key")
