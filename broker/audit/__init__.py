"""The access log's parts: records and their hashes, the Merkle tree, signed checkpoints, the
store (SQLite or PostgreSQL), verification, reconciliation with a sandbox's ledger, and the
interceptor that records every call. :mod:`broker.access_log.log` puts them together."""
