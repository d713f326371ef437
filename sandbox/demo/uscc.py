"""Unified social credit codes (统一社会信用代码, GB 32100-2015), with both check characters.

Layout (18 characters): registration authority (1), entity category (1),
administrative division code (6), organisation code (9, its own check character
per GB 11714), check character (1).
"""

from __future__ import annotations

import random

CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 characters: no I, O, S, V, Z
_USCC_WEIGHTS = [pow(3, i, 31) for i in range(17)]
_ORG_WEIGHTS = [3, 7, 9, 10, 5, 8, 4, 2]


def organisation_check(body: str) -> str:
    """The GB 11714 check character of an 8-character organisation code body."""
    total = sum(_org_value(c) * w for c, w in zip(body, _ORG_WEIGHTS, strict=True))
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


def uscc_check(first17: str) -> str:
    """The GB 32100 check character of the first 17 characters."""
    total = sum(CHARSET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return CHARSET[(31 - total % 31) % 31]


def is_valid_uscc(code: str) -> bool:
    """Whether ``code`` is 18 characters from the charset with both check characters right."""
    return (len(code) == 18 and all(c in CHARSET for c in code)
            and organisation_check(code[8:16]) == code[16] and uscc_check(code[:17]) == code[17])


def make_uscc(rng: random.Random, division: str, *, authority: str = "9", category: str = "1") -> str:
    """A random valid code registered in ``division`` (a 6-digit administrative code)."""
    body = "".join(rng.choice(CHARSET[:10] if i < 2 else CHARSET) for i in range(8))
    first17 = authority + category + division + body + organisation_check(body)
    return first17 + uscc_check(first17)


def _org_value(char: str) -> int:
    return int(char) if char.isdigit() else ord(char) - ord("A") + 10
