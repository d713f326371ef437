"""The department's SDK, in one import: ``from broker.client import BrokerClient, ClientTls, EncryptionKey``.

``EncryptionKey`` loads TenSEAL, so it is imported only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.client.sdk import BrokerClient, QueryResult
from dsbroker.errors import DsbrokerError
from dsbroker.identity.tls import ClientTls

if TYPE_CHECKING:
    from broker.client.encryption_key import EncryptionKey

__all__ = ["BrokerClient", "ClientTls", "DsbrokerError", "EncryptionKey", "QueryResult"]


def __getattr__(name: str) -> Any:
    if name == "EncryptionKey":
        from broker.client.encryption_key import EncryptionKey

        return EncryptionKey
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
