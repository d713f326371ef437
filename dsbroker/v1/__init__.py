"""Generated gRPC stubs; regenerate with scripts/gen-protos."""
