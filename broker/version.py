"""The versions ``dsbroker --version`` prints: the installed package's, and the public API's."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# The public gRPC API's package (protos/broker/v1): a client of v1 talks to any broker serving v1.
API_VERSION = "broker.v1"


def package_version() -> str:
    """The installed dsbroker's version (from its metadata), or "unknown" when it runs from a plain checkout."""
    try:
        return version("dsbroker")
    except PackageNotFoundError:
        return "unknown"
