"""DVLA driving licence numbers (Great Britain), counted only with licence context.

The 16-character driver number is built from the holder's details, e.g.
`MORGA753116SM9IJ35`:

- 5 characters: the first five letters of the surname, padded with 9 (MORGA)
- 1 digit: decade of birth (7)
- 2 digits: month of birth, 01-12, plus 50 for women, 51-62 (53)
- 2 digits: day of birth, 01-31 (11)
- 1 digit: year of birth within the decade (6)
- 2 characters: the initials, padded with 9 (SM)
- 1 digit: arbitrary, usually 9 (9)
- 2 check characters, letters or digits (IJ)
- optionally a 2-digit issue number (35)

It may be written run together or with a space between the groups
(`MORGA 753116 SM9IJ 35`), in any case. The month and day must make a date.
Sixteen-character codes are common (licence keys, hashes), so a valid number counts
only with context: licence, license, DVLA, driving, driver number ... in the same
line, within 60 characters, or as its column name. Never puts the number into a finding.
"""

from __future__ import annotations

import regex

from detectors.base import Finding, Strength, personal_data_findings
from detectors.personal_data.context import ContextWords
from gateway.message import Message

NAME = "uk_driving_licence"
KIND = "driving licence number"

# The surname part is read by a lookbehind so that every match starts at a digit (fast to find).
_PATTERN = regex.compile(
    r"(?<=(?<!\w)(?P<surname>[A-Za-z][A-Za-z9]{4}) ?)"
    r"(?P<birth>[0-9]{6}) ?(?P<rest>[A-Za-z][A-Za-z9][0-9][A-Za-z0-9]{2})(?: ?[0-9]{2})?"
    r"(?!\w)"
)
# Birth digits and what follows them, in every match: one fast scan after the context check
# (which looks for a few pieces of text, and is cheaper on long runs of digits).
_BIRTH_AND_REST = regex.compile(r"[0-9]{6} ?[A-Za-z][A-Za-z9][0-9]")
_NUMBER = regex.compile(r"[A-Z]+9*[0-9]{6}[A-Z][A-Z9][0-9][A-Z0-9]{2}")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_CONTEXT = ContextWords(
    r"licen[cs]es?", r"driving", r"drivers?", r"driver\s*(?:no|number)\.?", r"dvla", r"dvsa",
    r"licen[cs]e\s*(?:no|number)\.?",
)


def is_valid_driving_licence_number(candidate: str) -> bool:
    """True when the first 16 characters (spaces ignored) form a DVLA driver number with a real birth date."""
    value = candidate.replace(" ", "").upper()[:16]
    if len(value) != 16 or not value.isascii() or not _NUMBER.fullmatch(value):
        return False
    month, day = int(value[6:8]), int(value[8:10])
    if month > 50:
        month -= 50
    return 1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]


class DrivingLicenceDetector:
    name = NAME

    def detect(self, message: Message) -> list[Finding]:
        distinct: dict[str, set[str]] = {}
        for segment in message.segments:
            text = segment.text
            if not _CONTEXT.in_text(text) or not _BIRTH_AND_REST.search(text):
                continue
            for m in _PATTERN.finditer(text):
                value = (m.group("surname") + m.group("birth") + m.group("rest")).upper()
                if is_valid_driving_licence_number(value) and _CONTEXT.has_context(text, m.start("surname"), m.end()):
                    distinct.setdefault(segment.location, set()).add(value)
        return personal_data_findings(NAME, KIND, distinct, Strength.STRONG, confidence=0.9)
