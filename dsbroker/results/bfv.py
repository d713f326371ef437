"""The BFV parameters of encrypted results, the key id, and checks on the public contexts requesters send.

Every party uses the same parameters: N = 8192 and the 50-bit batching prime 1125899906826241 as
plaintext modulus, with SEAL's default coefficient modulus for N (218 bits, 128-bit security).
BFV slots hold integers modulo that prime and decrypt into (-(t-1)/2, (t-1)/2]; a sum beyond that
wraps around silently, so the sandbox refuses cells that could (:data:`EXACT_LIMIT`). The numbers
live in :mod:`dsbroker.results.parameters`, which the guard reads without loading TenSEAL.

A requester's context travels with its public key only. Its key id is the SHA-256 of those bytes,
so the id names exactly the key the cells were encrypted under.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from typing import NamedTuple

import tenseal as ts
import tenseal.sealapi  # noqa: F401  (registers SEAL's own types, e.g. Modulus, which the parameter check reads)

from dsbroker.errors import EncryptionKeyError
from dsbroker.results.parameters import COEFF_MODULUS_BITS, MAX_PUBLIC_CONTEXT_BYTES, PLAIN_MODULUS, POLY_MODULUS_DEGREE



def key_id(public_context: bytes) -> str:
    """The id of a public context: ``sha256:`` and the hex digest of its serialised bytes."""
    return "sha256:" + hashlib.sha256(public_context).hexdigest()


def new_secret_context() -> ts.Context:
    """A fresh BFV context with a secret key (the requester's; it never leaves the requester)."""
    return ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=POLY_MODULUS_DEGREE, plain_modulus=PLAIN_MODULUS)


def public_bytes(context: ts.Context) -> bytes:
    """``context`` serialised with its public key only: no secret, Galois or relinearisation keys."""
    serialised: bytes = context.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False,
                                          save_relin_keys=False)
    return serialised


def check_public_context(data: bytes) -> ts.Context:
    """Load a requester's public context; EncryptionKeyError unless it is a public BFV context with our parameters.

    A context holding a secret key is refused, so that no secret key is ever used on this side.
    """
    if not data:
        raise EncryptionKeyError("an encrypted query needs the requester's public context")
    if len(data) > MAX_PUBLIC_CONTEXT_BYTES:
        raise EncryptionKeyError(f"the public context is larger than {MAX_PUBLIC_CONTEXT_BYTES:,} bytes: send the "
                                 "public key alone, without Galois or relinearisation keys")
    try:
        context = ts.context_from(data)
    except (ValueError, RuntimeError, TypeError):
        raise EncryptionKeyError("the public context does not load as a TenSEAL context") from None
    if context.has_secret_key():
        raise EncryptionKeyError("the context holds a secret key; send it with its public key only",
                                 reason="ENCRYPTION_KEY_PRIVATE")
    if not context.has_public_key():
        raise EncryptionKeyError("the context holds no public key to encrypt under")
    if context.has_galois_keys() or context.has_relin_keys():
        raise EncryptionKeyError("the context holds Galois or relinearisation keys; the sandbox only encrypts, "
                                 "so send the public key alone")
    parameters = context.seal_context().data.key_context_data().parms()
    coefficients = tuple(modulus.bit_count() for modulus in parameters.coeff_modulus())
    if (parameters.scheme().name != "BFV" or parameters.poly_modulus_degree() != POLY_MODULUS_DEGREE
            or parameters.plain_modulus().value() != PLAIN_MODULUS or coefficients != COEFF_MODULUS_BITS):
        raise EncryptionKeyError(f"the context is not BFV with N={POLY_MODULUS_DEGREE}, plain modulus "
                                 f"{PLAIN_MODULUS} and the default coefficient modulus")
    return context


class RequesterKey(NamedTuple):
    """A requester's public context, loaded, and its key id."""

    key_id: str
    context: ts.Context


class PublicContexts:
    """Loaded public contexts by key id: loading one costs about 20 ms, a query should pay it once per key."""

    def __init__(self, capacity: int = 32) -> None:
        self.capacity = capacity
        self._contexts: OrderedDict[str, ts.Context] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, data: bytes) -> RequesterKey:
        """The key id and loaded context of ``data`` (checked as :func:`check_public_context` does)."""
        identity = key_id(data)
        with self._lock:
            context = self._contexts.get(identity)
            if context is not None:
                self._contexts.move_to_end(identity)
                return RequesterKey(identity, context)
        context = check_public_context(data)
        with self._lock:
            self._contexts[identity] = context
            while len(self._contexts) > self.capacity:
                self._contexts.popitem(last=False)
        return RequesterKey(identity, context)


@functools.cache
def parameters_context() -> ts.Context:
    """A context with our parameters and no secret key, to load and add ciphertexts of any requester's key.

    Adding needs the parameters only, not the requester's key, so the broker adds with this one.
    """
    context = new_secret_context()
    context.make_context_public()
    return context


class SerialisedSum:
    """A running sum of serialised BFV vectors of one length (any requester's key, our parameters), added as
    each arrives: a secure sum adds a partition's ciphertexts while the others are still encrypting theirs."""

    def __init__(self) -> None:
        self._total: ts.BFVVector | None = None

    def add(self, ciphertext: bytes) -> None:
        """Add one serialised vector; ValueError (or TenSEAL's own) when it does not load or is of another length."""
        vector = ts.bfv_vector_from(parameters_context(), ciphertext)
        if self._total is None:
            self._total = vector
        else:
            self._total += vector

    def serialise(self) -> bytes:
        """The sum so far, serialised; ValueError before anything was added."""
        if self._total is None:
            raise ValueError("nothing was added")
        serialised: bytes = self._total.serialize()
        return serialised


def add_serialised(ciphertexts: list[bytes]) -> bytes:
    """The serialised sum of serialised BFV vectors of one length (any requester's key, our parameters)."""
    total = SerialisedSum()
    for ciphertext in ciphertexts:
        total.add(ciphertext)
    return total.serialise()
