"""reject_ungranted_result_mode: a query asks for its result in a mode the grant lists.

A grant says how its results may leave: ``aggregate`` (plaintext cells) and ``encrypted`` (cells only
the requester can decrypt). An owner who lists only ``encrypted`` keeps every cell of the grant from
the broker's operator, so a plaintext query under it is refused, and the other way round.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import refuse


def reject_ungranted_result_mode(expression: exp.Select, dataset: str, results: tuple[str, ...],
                                 encrypted: bool) -> exp.Select:
    """Refuse an encrypted query unless the grant lists ``encrypted``, a plaintext one unless ``aggregate``."""
    mode = "encrypted" if encrypted else "aggregate"
    if mode not in results:
        hint = "ask for a plaintext result" if encrypted else "ask for an encrypted result (dsbroker query --encrypted)"
        refuse("reject_ungranted_result_mode", "RESULT_MODE_NOT_GRANTED",
               f"this grant does not release {mode} results (it allows: {', '.join(results)}); {hint}",
               table=dataset, mode=mode)
    return expression
