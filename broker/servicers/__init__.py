"""gRPC servicers: each converts proto to model and back, and calls one pipeline."""
