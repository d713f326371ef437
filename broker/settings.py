"""Settings for both servers, declared in one place each and loaded from TOML plus flags.

Each setting is a dataclass field whose ``metadata["help"]`` documents it; the
README's configuration tables are checked against these by a test.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from broker.errors import ConfigError

MiB = 1024 * 1024
T = TypeVar("T")


def setting(default: Any, help: str) -> Any:
    """Declare one setting with its default and its documentation."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class SandboxSettings:
    """Settings of ``dsbroker sandbox serve`` (the owner side)."""

    listen: str = setting("127.0.0.1:50061", "address to serve gRPC on (plaintext: loopback only)")
    data: str = setting("", "path of the DuckDB data file, opened read-only")
    datasets: tuple[str, ...] = setting((), "tables served, as schema.table; empty serves every table in the file")
    memory_limit: str = setting("2GB", "DuckDB memory limit")
    threads: int = setting(2, "DuckDB worker threads")
    pool_size: int = setting(4, "pooled engine connections (concurrent queries)")
    max_execution_seconds: float = setting(120.0, "hard ceiling on one query's run time, whatever the deadline")
    max_rows: int = setting(10_000, "most rows one plan may return")
    max_message_bytes: int = setting(64 * MiB, "largest gRPC message sent or received")
    max_workers: int = setting(8, "gRPC worker threads")
    grace_seconds: float = setting(5.0, "time running calls get to finish on SIGTERM")


@dataclass(frozen=True)
class BrokerSettings:
    """Settings of ``dsbroker serve`` (the broker)."""

    listen: str = setting("127.0.0.1:50051", "address to serve gRPC on (plaintext: loopback only)")
    policies: str = setting("policies", "directory of policy (grant) YAML files")
    sandbox: str = setting("127.0.0.1:50061", "address of the owner's sandbox")
    access_log: str = setting("state/access-log.sqlite", "SQLite file of the access log")
    auth: str = setting("development", "how callers authenticate; 'development' accepts unsigned dev tokens "
                                        "and is refused on non-loopback addresses")
    default_deadline_seconds: float = setting(30.0, "query time limit when the caller sets no deadline")
    max_message_bytes: int = setting(64 * MiB, "largest gRPC message sent or received")
    max_workers: int = setting(16, "gRPC worker threads")
    max_concurrent_rpcs: int = setting(64, "calls in flight before new ones get RESOURCE_EXHAUSTED")
    grace_seconds: float = setting(5.0, "time running calls get to finish on SIGTERM")


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


def require_loopback(listen: str, what: str) -> None:
    """Refuse a plaintext listen address that is not on the loopback interface."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"{what} serves plaintext gRPC, which is allowed on loopback addresses only, "
                          f"not {listen!r}")
