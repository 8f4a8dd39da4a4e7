"""UK National Insurance numbers, validated against HMRC's allocation rules.

Format: two prefix letters, six digits, a suffix A-D, written with or without
spaces (or hyphens) in any case. HMRC never issues D, F, I, Q, U or V as the
first letter, nor D, F, I, O, Q, U or V as the second, nor the prefixes
BG, GB, KN, NK, NT, TN and ZZ. Temporary and example numbers (QQ 12 34 56 C)
therefore fail validation.
"""

from __future__ import annotations

import regex

from detectors.base import Category, Finding, Strength
from gateway.message import Message

NAME = "uk_nino"
KIND = "National Insurance number"

_PATTERN = regex.compile(
    r"(?<![\p{L}\p{N}])"
    r"([A-Z]{2})[ \-]?(\d{2})[ \-]?(\d{2})[ \-]?(\d{2})[ \-]?([A-D])"
    r"(?![\p{L}\p{N}])",
    regex.IGNORECASE,
)
_BAD_FIRST = set("DFIQUV")
_BAD_SECOND = set("DFIOQUV")
_NEVER_ISSUED = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


def is_valid_nino(candidate: str) -> bool:
    """True when `candidate` (any spacing or case) is a NINO HMRC could have issued."""
    compact = regex.sub(r"[\s\-]", "", candidate).upper()
    if not regex.fullmatch(r"[A-Z]{2}\d{6}[A-D]", compact):
        return False
    prefix = compact[:2]
    return prefix[0] not in _BAD_FIRST and prefix[1] not in _BAD_SECOND and prefix not in _NEVER_ISSUED


class NinoDetector:
    name = NAME

    def detect(self, message: Message) -> list[Finding]:
        distinct: dict[str, set[str]] = {}
        for segment in message.segments:
            for m in _PATTERN.finditer(segment.text):
                value = "".join(m.groups()).upper()
                if is_valid_nino(value):
                    distinct.setdefault(segment.location, set()).add(value)
        return [
            Finding(
                detector=NAME,
                category=Category.PERSONAL_DATA,
                kind=KIND,
                location=location,
                count=len(values),
                strength=Strength.STRONG,
            )
            for location, values in distinct.items()
        ]
