"""UK passport numbers, counted only where the text says they are passport numbers.

HM Passport Office numbers are nine characters: nine digits (older books), or one
letter and eight digits, or two letters and seven digits. Nine characters like that
are everywhere (phone fragments, order numbers, vehicle and case references), and
there is no check digit outside the machine-readable zone, so a candidate counts
only with context: passport, passport no/number, HMPO, travel document ... in the
same line, within 60 characters, or as its column name in a table.
Never puts the number into a finding.
"""

from __future__ import annotations

import regex

from detectors.base import Finding, Strength, personal_data_findings
from detectors.personal_data.context import ContextWords
from gateway.message import Message

NAME = "uk_passport"
KIND = "passport number"

# The letters are read by a lookbehind so that every match starts at a digit (fast to find);
# letters + digits must make nine characters.
_PATTERN = regex.compile(
    r"(?<=(?<!\w)(?<![0-9][\-./])(?P<letters>[A-Za-z]{0,2}))(?P<digits>[0-9]{7,9})(?!\w)(?![\-./][0-9])"
)
_DIGITS = regex.compile(r"[0-9]{7}")     # in every match: one fast scan before the context search
# Every match is a whole run of digits, so _PATTERN (which starts with a lookbehind and would be
# tried at every character) is tried only where a run of seven to nine digits starts.
_DIGIT_RUN = regex.compile(r"[0-9]+")
_SHAPE = regex.compile(r"[0-9]{9}|[A-Z][0-9]{8}|[A-Z]{2}[0-9]{7}")
_CONTEXT = ContextWords(
    r"passports?", r"passport\s*(?:no|num|number|numbers|nos)\.?", r"hmpo", r"hm\s+passport\s+office",
    r"travel\s+documents?", r"passeport", r"reisepass",
)


def is_plausible_passport_number(candidate: str) -> bool:
    """True when `candidate` has the shape of a UK passport number and is not one digit repeated."""
    value = candidate.strip().upper()
    if not value.isascii() or not _SHAPE.fullmatch(value):
        return False
    digits = value.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return len(set(digits)) > 1


class PassportDetector:
    name = NAME

    def detect(self, message: Message) -> list[Finding]:
        distinct: dict[str, set[str]] = {}
        for segment in message.segments:
            text = segment.text
            if not _DIGITS.search(text) or not _CONTEXT.in_text(text):
                continue
            for run in _DIGIT_RUN.finditer(text):
                if not 7 <= len(run.group()) <= 9:
                    continue
                m = _PATTERN.match(text, run.start())
                if m is None:
                    continue
                value = (m.group("letters") + m.group("digits")).upper()
                if len(value) != 9 or not is_plausible_passport_number(value):
                    continue
                if _CONTEXT.has_context(text, m.start("letters"), m.end()):
                    distinct.setdefault(segment.location, set()).add(value)
        return personal_data_findings(NAME, KIND, distinct, Strength.STRONG, confidence=0.85)
