"""Hash-chained records both sides write and an auditor reads: access records, checkpoints, Merkle proofs,
ledger entries."""
