"""UK National Insurance numbers, validated against HMRC's allocation rules.

Format: two prefix letters, six digits, a suffix A-D, written with or without
spaces (or hyphens, up to two between any digits: "AB 123 456 C", "AB  12 34  56 C") in any case. HMRC never issues D, F, I, Q, U or V as the
first letter, nor D, F, I, O, Q, U or V as the second, nor the prefixes
BG, GB, KN, NK, NT, TN and ZZ. Temporary and example numbers (QQ 12 34 56 C)
therefore fail validation.
"""

from __future__ import annotations

import re

import regex

from detectors.base import Finding, Strength, personal_data_findings
from gateway.message import Message

NAME = "uk_nino"
KIND = "National Insurance number"

# The prefix letters are restricted in the pattern itself (HMRC never issues D F I Q U V
# first, nor D F I O Q U V second), which keeps the scan fast; the full rules are in is_valid_nino.
_PATTERN = re.compile(
    r"(?<![^\W_])([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z])[ -]{0,2}((?:\d[ -]{0,2}){5}\d)[ -]{0,2}([A-D])(?![^\W_])",
    re.IGNORECASE,
)
# The digits and suffix of every match, without the prefix letters that make _PATTERN try every
# letter of the text: one scan rules out most text. It runs on the `regex` engine, which skips to
# a digit several times faster than `re`; its \d holds every digit that `re`'s does, and its
# lookahead refuses less than _PATTERN's, so it finds something wherever _PATTERN does.
# On long text that is mostly digits the check costs more than _PATTERN's own scan, so it is made
# only on texts up to _CHECKED_CHARS long (a message body, not a large extracted spreadsheet).
_DIGITS_AND_SUFFIX = regex.compile(r"(?:\d[ -]{0,2}){5}\d[ -]{0,2}[A-D](?![0-9A-Za-z])", regex.IGNORECASE)
_CHECKED_CHARS = 100_000
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
            if len(segment.text) <= _CHECKED_CHARS and not _DIGITS_AND_SUFFIX.search(segment.text):
                continue
            for m in _PATTERN.finditer(segment.text):
                value = (m.group(1) + re.sub(r"[ -]", "", m.group(2)) + m.group(3)).upper()
                if is_valid_nino(value):
                    distinct.setdefault(segment.location, set()).add(value)
        return personal_data_findings(NAME, KIND, distinct, Strength.STRONG)
