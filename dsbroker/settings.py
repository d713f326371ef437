"""How both servers declare and load their settings: a dataclass per server, read from TOML plus flags.

Each setting is a dataclass field whose ``metadata["help"]`` documents it; the
README's configuration tables are checked against these by a test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
import zoneinfo
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dsbroker.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

MiB = 1024 * 1024
T = TypeVar("T", bound="DataclassInstance")


def setting(default: Any, help: str) -> Any:
    """Declare one setting with its default and its documentation."""
    return field(default=default, metadata={"help": help})


TRANSPORT_HELP = {
    "plaintext": "serve plaintext gRPC instead of TLS; allowed on loopback addresses only, for development",
    "tls_cert": "PEM certificate the server presents",
    "tls_key": "PEM private key of tls_cert",
}


# The operator's side of both servers (dsbroker.observability).
OPERATIONS_HELP = {
    "metrics_listen": "HOST:PORT to serve Prometheus metrics on over HTTP (bounded labels only, never data); "
                      "empty: none",
    "health_listen": "loopback HOST:PORT to serve grpc.health.v1 on in plaintext, for probes without a client "
                     "certificate; empty: none (health stays on the TLS port)",
    "request_log": "write one JSON line per call (request id, method, caller, grant, decision, reason, code, "
                   "duration) to stderr",
}


JWT_HELP = {
    "jwks": "the identity provider's public keys: a JWKS file or an https:// URL (required)",
    "jwt_issuer": "the identity provider's issuer (the tokens' iss; required)",
    "jwt_audience": "the audience tokens must name (aud)",
    "jwt_algorithms": "signature algorithms accepted; a subset of EdDSA, ES256, RS256",
    "jwt_leeway_seconds": "clock skew tolerated on exp and nbf",
}


def load_settings(cls: type[T], path: str | Path | None = None, **overrides: Any) -> T:
    """Build ``cls`` from a TOML file (optional) and flag overrides (None means not given). A TOML table given
    for a setting that is a tuple becomes its (key, value) pairs."""
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
        elif isinstance(default, tuple) and isinstance(value, dict):
            values[key] = tuple(value.items())
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
