"""The auditor's checks of the access log: verification, and reconciliation with the sandboxes' ledgers."""
