"""The released-cell auditor: what has been released before, and whether an answer adds to it a total of too
few taxpayers (:mod:`sandbox.audit.auditor`)."""
