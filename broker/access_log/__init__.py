"""The access log the broker writes: records, seals, checkpoints and their witnesses, the call-audit interceptor."""
