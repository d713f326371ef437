"""The sandbox's own records: executions, the owner's policy statements, privacy budgets, witnessed checkpoints."""
