"""UK National Insurance numbers, validated against HMRC's allocation rules.

Format: two prefix letters, six digits, a suffix A-D, written with or without
spaces (or hyphens) in any case. HMRC never issues D, F, I, Q, U or V as the
first letter, nor D, F, I, O, Q, U or V as the second, nor the prefixes
BG, GB, KN, NK, NT, TN and ZZ. Temporary and example numbers (QQ 12 34 56 C)
therefore fail validation.
"""

from __future__ import annotations

import re

from detectors.base import Category, Finding, Strength
from gateway.message import Message

NAME = "uk_nino"
KIND = "National Insurance number"

# The prefix letters are restricted in the pattern itself (HMRC never issues D F I Q U V
# first, nor D F I O Q U V second), which keeps the scan fast; the full rules are in is_valid_nino.
_PATTERN = re.compile(
    r"(?<![^\W_])([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z])[ -]?(\d\d)[ -]?(\d\d)[ -]?(\d\d)[ -]?([A-D])(?![^\W_])",
    re.IGNORECASE,
)
_BAD_FIRST = set("DFIQUV")
_BAD_SECOND = set("DFIOQUV")
_NEVER_ISSUED = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


def is_valid_nino(candidate: str) -> bool:
    """True when `candidate` (any spacing or case) is a NINO HMRC could have issued."""
    compact = re.sub(r"[\s-]", "", candidate).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{6}[A-D]", compact):
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
