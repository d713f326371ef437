"""reject_encryption_unsupported: an encrypted result holds group keys and exact COUNT, SUM and AVG cells.

Encrypted cells are BFV integers that the broker may add up across partitions, and that nobody but the
requester reads. So each output is a group key (sent in clear) or one COUNT, SUM or AVG: arithmetic on
aggregates, MIN and MAX (not sums of partitions), HAVING (it would test a partition's partial cell),
ORDER BY and LIMIT (nobody who could sort sees the values) and totals are refused; the requester
filters, sorts and computes after decrypting. The dominance rule is not served in this mode by this
version: it withholds single cells, which an encrypted result cannot mark. Under noise the sandbox
encrypts the noisy cells; an AVG is refused there (its noisy parts are not what the noise plan keeps),
so the requester asks for the SUM and the COUNT and divides.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import AGGREGATE_NAMES, AGGREGATE_TYPES, refuse
from dsbroker.policy.model import Dominance, Noise
from dsbroker.guard.internal_names import TOTALS_META


def reject_encryption_unsupported(expression: exp.Select, dataset: str, encrypted: bool,
                                  dominance: Dominance | None, noise: Noise | None) -> exp.Select:
    """Under encryption refuse HAVING, ORDER BY, LIMIT, ROLLUP, MIN/MAX and arithmetic on aggregates."""
    if not encrypted:
        return expression
    if dominance is not None:
        refuse("reject_encryption_unsupported", "ENCRYPTED_DISCLOSURE_UNSUPPORTED",
               "this grant's dominance rule is not applied to encrypted results by this version; ask for a "
               "plaintext result", table=dataset)
    if expression.meta.get(TOTALS_META):
        refuse("reject_encryption_unsupported", "ENCRYPTED_TOTALS_NOT_ALLOWED", "totals (ROLLUP) are not served "
               "encrypted; add up the decrypted cells", table=dataset)
    for clause, what in (("having", "HAVING"), ("order", "ORDER BY"), ("limit", "LIMIT")):
        if expression.args.get(clause) is not None:
            refuse("reject_encryption_unsupported", "ENCRYPTED_CLAUSE_NOT_ALLOWED",
                   f"{what} is not served encrypted: nobody who could apply it sees the values; filter, sort "
                   "or cut the decrypted rows", table=dataset, clause=what)
    for projection in expression.expressions:
        output = projection.unalias()
        aggregate = output.find(*AGGREGATE_TYPES)
        if aggregate is None:
            continue  # a group key, released in clear
        name = AGGREGATE_NAMES[type(aggregate)]
        if isinstance(aggregate, (exp.Min, exp.Max)):
            refuse("reject_encryption_unsupported", "ENCRYPTED_AGGREGATE_NOT_SUPPORTED",
                   f"{name} is not served encrypted (only COUNT, SUM and AVG add up across partitions)",
                   table=dataset, function=name)
        if noise is not None and isinstance(aggregate, exp.Avg):
            refuse("reject_encryption_unsupported", "ENCRYPTED_AGGREGATE_NOT_SUPPORTED",
                   "under noise an encrypted AVG is not served; ask for the SUM and the COUNT and divide after "
                   "decrypting", table=dataset, function=name)
        if aggregate is not output:
            refuse("reject_encryption_unsupported", "ENCRYPTED_OUTPUT_NOT_SUPPORTED",
                   f"an encrypted output is a group key or one aggregate; compute with {name} after decrypting",
                   table=dataset, function=name)
    return expression
