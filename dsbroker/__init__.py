"""The core both sides run: errors, the guard, policies, identity, RPC conventions, records, results.

It imports neither ``broker`` nor ``sandbox`` (tests/test_layout.py)."""
