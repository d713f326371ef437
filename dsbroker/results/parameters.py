"""The BFV parameters every party encrypts under, as numbers: readable without loading TenSEAL.

N = 8192 and the 50-bit batching prime 1125899906826241 as plaintext modulus, with SEAL's default
coefficient modulus for N (218 bits, 128-bit security). :mod:`dsbroker.results.bfv` builds and checks
contexts of these parameters; the guard needs only how many groups fit one ciphertext.
"""

from __future__ import annotations

POLY_MODULUS_DEGREE = 8192
PLAIN_MODULUS = 1125899906826241
SLOTS = POLY_MODULUS_DEGREE  # BFV batching: one integer per slot, N slots per ciphertext
# A public context of these parameters is about 0.54 MB; one much larger carries keys the sandbox has no use
# for (Galois keys alone are tens of MB), and is refused before it is loaded.
MAX_PUBLIC_CONTEXT_BYTES = 1024 * 1024
EXACT_LIMIT = (PLAIN_MODULUS - 1) // 2  # the largest magnitude a slot decrypts to exactly
COEFF_MODULUS_BITS = (43, 43, 44, 44, 44)  # SEAL's BFVDefault(8192)
