"""NHS numbers (England, Wales, Isle of Man), validated by their modulus-11 check digit.

Format: ten digits, written run together or grouped 3-3-4 with one kind of
separator (`943 476 5919`, `943-476-5919`, `9434765919`). The tenth digit is the
check digit: weight the first nine digits 10 down to 2, take 11 minus the sum
modulo 11; 11 means 0 and 10 means the number is never issued. Numbers of one
repeated digit are not issued either.

One random ten-digit reference in eleven passes that check, so a valid number
is a finding only in context: a health word (NHS, patient, hospital, GP, DOB ...)
in the same line or within 60 characters, or an "NHS" column header when the text
is a table. Never puts the number into a finding.
"""

from __future__ import annotations

import regex

from detectors.base import Finding, Strength, personal_data_findings
from detectors.personal_data.context import ContextWords
from gateway.message import Message

NAME = "uk_nhs_number"
KIND = "NHS number"

# Digit first, boundary checks after it: the engine skips non-digits without trying the lookbehinds.
_PATTERN = regex.compile(
    r"([0-9](?<!\w[0-9])(?<![0-9][.\-][0-9])[0-9]{2})[ \-]{0,2}([0-9]{3})[ \-]{0,2}([0-9]{4})(?!\w)(?![.\-][0-9])"
)
# Ten digits as every match has them: one fast scan rules most text out before the context search
# (a pattern that starts with a digit class lets the engine skip to the next digit).
_DIGITS = regex.compile(r"[0-9]{3}[ \-]{0,2}[0-9]{3}[ \-]{0,2}[0-9]{4}")
_CONTEXT = ContextWords(
    r"nhs", r"nhs\s*(?:no|num|number|nos|numbers)\.?", r"patients?", r"health", r"healthcare",
    r"hospitals?", r"gps?", r"clinics?", r"clinical", r"surgery", r"medical", r"date\s+of\s+birth",
    r"d\.?\s?o\.?\s?b\.?", r"chi", r"chi\s*(?:no|number)", r"a&e", r"nursing", r"nurses?",
)
_WEIGHTS = range(10, 1, -1)


def nhs_check_digit(first_nine: str) -> int | None:
    """The check digit for nine digits, or None when no NHS number can start with them."""
    remainder = sum(int(d) * w for d, w in zip(first_nine, _WEIGHTS)) % 11
    check = 11 - remainder
    if check == 11:
        return 0
    return None if check == 10 else check


def is_valid_nhs_number(candidate: str) -> bool:
    """True when `candidate` (spaces or hyphens allowed) is a ten-digit number with a valid check digit."""
    digits = candidate.replace(" ", "").replace("-", "")
    if len(digits) != 10 or not digits.isdigit() or not digits.isascii() or len(set(digits)) == 1:
        return False
    return nhs_check_digit(digits[:9]) == int(digits[9])


class NhsNumberDetector:
    name = NAME

    def detect(self, message: Message) -> list[Finding]:
        distinct: dict[str, set[str]] = {}
        for segment in message.segments:
            text = segment.text
            if not _DIGITS.search(text) or not _CONTEXT.in_text(text):
                continue
            for m in _PATTERN.finditer(text):
                value = m.group(1) + m.group(2) + m.group(3)
                if is_valid_nhs_number(value) and _CONTEXT.has_context(text, m.start(), m.end()):
                    distinct.setdefault(segment.location, set()).add(value)
        return personal_data_findings(NAME, KIND, distinct, Strength.STRONG, confidence=0.95)
