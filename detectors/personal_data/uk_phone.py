"""UK telephone numbers, recognised and validated by libphonenumber (`phonenumbers`).

Numbers are read as a person in Great Britain writes them (region "GB": national
0 prefix, +44 or 0044 international) and must be valid numbers for their range,
so Ofcom's drama numbers (07700 900xxx, 01632 960xxx) and arbitrary digit runs do
not count. Only +44 numbers count (Great Britain, Northern Ireland, the Channel
Islands, the Isle of Man); the count is of distinct E.164 forms, so 020 7946 0000
and +44 20 7946 0000 are one number. A weak signal: personal data only in bulk.

PhoneNumberMatcher is slow on long text, so a cheap compiled pattern first finds
stretches of digits and phone punctuation that could hold a UK number, and the
matcher reads only those stretches. Never puts the number into a finding.
"""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
import re
import regex

from detectors.base import Finding, Strength, personal_data_findings
from gateway.message import Message

NAME = "uk_phone"
KIND = "phone number"
REGION = "GB"                   # libphonenumber's code for the United Kingdom ("UK" is not one)
UK_COUNTRY_CODE = 44
# libphonenumber costs 150-370 us a stretch: a text stops being read for phone numbers after
# this many distinct stretches (far past policy.bulk_threshold), so a 5 MB contact list costs
# under a second instead of ten. The count is then "at least" this many, never fewer than found.
MAX_READINGS = 2000
MIN_DIGITS = 8                  # 0800 1111 is the shortest UK number in use

# Runs of digits and phone punctuation, starting and ending with a digit, that hold at least
# MIN_DIGITS digits (shorter runs hold no number); a leading + or ( is taken in afterwards
# (a pattern that starts with a digit class is several times faster to scan, and the `regex`
# engine skips to a digit faster than `re`). Digits and punctuation are disjoint classes, so
# the scan never backtracks.
_STRETCH = regex.compile(rf"[0-9](?:[ \-().]*[0-9]){{{MIN_DIGITS - 1}}}(?:[0-9 \-().]*[0-9])?")
_LATIN_LETTERS = re.compile(r"[A-Za-z]")
# A UK number, in any way it is written, starts a group with 0, + or 44.
_UK_START = re.compile(r"(?<![0-9])(?:0|44)|\+")
_PAD = 2                        # characters either side the matcher sees, to judge what borders a number


def phone_numbers(text: str) -> set[str]:
    """The distinct valid +44 numbers written in `text`, as E.164 strings."""
    found: set[str] = set()
    seen: set[str] = set()          # a number repeated (in every signature) is read once
    for stretch in _STRETCH.finditer(text):
        start = stretch.start()
        if start and text[start - 1] in "+(":
            start -= 1
        written = text[start : stretch.end()]
        if not _UK_START.search(written):
            continue
        snippet = text[max(0, start - _PAD) : stretch.end() + _PAD]
        # The matcher only asks whether a neighbour is a Latin letter, so "on 0117 ..." and
        # "at 0117 ..." read the same: read each such shape once.
        shape = _LATIN_LETTERS.sub("a", snippet)
        if shape in seen:
            continue
        if len(seen) >= MAX_READINGS:
            break  # a phone list this long is bulk already; the rest would only cost time
        seen.add(shape)
        found.update(_uk_numbers_in(shape))
    return found


@lru_cache(maxsize=2048)
def _uk_numbers_in(shape: str) -> frozenset[str]:
    """libphonenumber's reading of one stretch; cached because signatures repeat in every message."""
    return frozenset(
        phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
        for match in phonenumbers.PhoneNumberMatcher(shape, REGION, leniency=phonenumbers.Leniency.VALID)
        if match.number.country_code == UK_COUNTRY_CODE
    )


class PhoneDetector:
    name = NAME

    def detect(self, message: Message) -> list[Finding]:
        distinct: dict[str, set[str]] = {}
        for segment in message.segments:
            numbers = phone_numbers(segment.text)
            if numbers:
                distinct.setdefault(segment.location, set()).update(numbers)
        return personal_data_findings(NAME, KIND, distinct, Strength.WEAK, confidence=0.8)
